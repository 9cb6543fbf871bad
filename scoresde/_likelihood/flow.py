r"""Exact log-likelihood, bits per dimension, encoding and decoding through the PF-ODE.

Instantaneous change of variables: along the probability-flow ODE
$dx/dt = F(t, x) = f(t)x - \tfrac12 g(t)^2\,\mathrm{score}(t, x)$,

$$\ln p_{t_\varepsilon}(x) = \ln p_T(x_T) + \int_{t_\varepsilon}^{T} \nabla\cdot F(t, x_t)\,dt .$$

The augmented state $[x, \delta]$ is integrated FORWARD from $t_\varepsilon$ to $T$ (no time
reversal), one `diffeqsolve` per sample under `jax.vmap`, so each sample takes its own adaptive
steps; or, with `schedule=Lanes(L)`, on `L` lanes refilled as samples finish; or, with
`schedule=SharedSteps()`, one `diffeqsolve` over the whole batch. The integration variable is
`t` itself by default; `variable=LogSNRVariable()` integrates in the negated half log-SNR
$u = -\lambda(t)$ and `variable=LogSigmaVariable()` in $u = \ln\sigma(t)$ (the same for EDM),
with $dx/du = F\,dt/du$. The defaults (`t`, `diffrax.Dopri5`, diffrax's I-controller, a first
step of a 64th of the interval) needed the fewest evaluations of everything measured: see
[Why these defaults](../how-to/likelihood.md#why-these-defaults).

The drift is `pf_drift` (`scoresde/_score_calls.py`), the very function sampling integrates.

This module gathers the entry points, which live in `log_likelihood.py`, `bits_per_dim.py` and
`encoding.py`; the CLI calls them through it.
"""

from .bits_per_dim import BitsPerDimResult as BitsPerDimResult, bits_per_dim as bits_per_dim
from .encoding import (
    EncodeResult as EncodeResult,
    decode as decode,
    encode as encode,
)
from .log_likelihood import (
    LikelihoodResult as LikelihoodResult,
    log_likelihood as log_likelihood,
)
from .step_size_control import augmented_rms as _augmented_rms  # noqa: F401 (benchmarks)
