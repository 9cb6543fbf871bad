r"""Sampling by integrating the probability-flow ODE or the reverse-time SDE with diffrax, and
EDM's stochastic sampler.

This module gathers the entry points; each lives in a module of its own (`ode`, `reverse_sde`,
`edm`), with their result (`result`), the step-mode decision (`step_modes`) and the shared solve
(`solve`).

The entry points run in the reversed time $s = T - t$ from $s = 0$ ($t = T$) to
$s = T - t_\varepsilon$. Sample `i` draws its prior latent and its noise from
`jax.random.fold_in(key, i)`, so its random draws are the same whatever the batch size.

The step mode is decided once, as a value the solve dispatches on:

- `FixedGrid` (`steps` given, no controller): one `diffeqsolve`
  over the whole batch on the times of a grid value ([`scoresde.AbstractTimeGrid`][]), with a per-sample Brownian path
  drawn step by step (one normal draw per step; no Brownian tree). A sample then takes the same
  steps and NFE whatever the batch it was drawn in, and its value differs at most by the
  rounding of the batched score;
- `Adaptive` (a `stepsize_controller`): one `diffeqsolve` per sample
  under `jax.vmap`, so each sample takes its own steps; SDEs use a `diffrax.VirtualBrownianTree`
  whose tolerance is below the controller's smallest step. A sample's random draws do not depend
  on its batch; its value does up to floating-point rounding (batched arithmetic can round
  differently, which can change an adaptive step).
"""

from .._score_calls import tweedie_batch as tweedie_batch
from .edm import sample_edm as sample_edm
from .ode import sample_ode as sample_ode
from .result import EDMResult as EDMResult, SampleResult as SampleResult
from .reverse_sde import sample_sde as sample_sde
