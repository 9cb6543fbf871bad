r"""EDM's second-order Heun step (Karras et al. 2022) as a solver of the PF-ODE.

The stochastic sampler with churn that uses the same step is [`scoresde.sample_edm`][].
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from .._grid import KarrasGrid
from .base import LONG_STEP, PFModel, _Budgeted, _check_fixed_steps


class EDMHeun(_Budgeted):
    r"""The second-order Heun sampler of Karras et al. (2022), two evaluations per step.

    It runs in the scaled variables $\tilde x = x/\alpha$, $\tilde\sigma = \sigma/\alpha =
    e^{-\lambda}$, where the PF-ODE reads $d\tilde x/d\tilde\sigma = (\tilde x - \hat x_0)/\tilde\sigma$
    (for [`scoresde.EDMSDE`][] these are $x$ and $t$ themselves): an Euler step to
    $\tilde\sigma_{i+1}$, then the trapezoidal correction. For the stochastic version with
    churn see [`scoresde.sample_edm`][].

    **Arguments:** `fixed_steps`: the number of steps of the fixed grid it runs on (`None`,
    the default, under adaptive steps; [`scoresde.sample_ode`][] sets it from `steps`). A step
    longer than 3 in $\lambda$ is then two Euler steps (in these variables, DDIM steps) over its
    halves in $\lambda$, for the same two evaluations: the trapezoidal correction over a long
    step divides the denoiser's error by the small $\tilde\sigma_{i+1}$ (as
    [`scoresde.DPMSolver3`][]).

    ??? cite "Reference"
        ```bibtex
        @inproceedings{karras2022edm,
          title={Elucidating the Design Space of Diffusion-Based Generative Models},
          author={Karras, Tero and Aittala, Miika and Aila, Timo and Laine, Samuli},
          booktitle={NeurIPS}, year={2022}
        }
        ```
    """

    fixed_steps: int | None = eqx.field(static=True, default=None)
    evals_per_step: ClassVar[int] = 2

    def __check_init__(self):
        _check_fixed_steps(self)

    def order(self, terms):
        return 2

    def default_grid(self):
        r"""[`scoresde.KarrasGrid`][] ($\rho = 7$, EDM's own): no grid suits Heun on both VP and
        EDM in `benchmarks/default_grids.py`; Karras's has the smallest worst-case error there,
        just ahead of the log-SNR grid."""
        return KarrasGrid()

    def _step(self, model, ts, tt, x, last):
        if last is None:
            return heun_step(model, ts, tt, x)
        return _heun_or_two_euler_steps(model, ts, tt, x)


def _heun_or_two_euler_steps(model: PFModel, ts, tt, x):
    r"""`heun_step`, or for a step longer than `LONG_STEP` in $\lambda$ two Euler steps over its
    halves in $\lambda$: two evaluations either way (at `ts` and at `tt` or the midpoint)."""
    a_s, s_s, l_s = model.marginal(ts)
    a_t, s_t, l_t = model.marginal(tt)
    t_m, a_m, s_m = model.at_lambda(0.5 * (l_s + l_t))
    long = l_t - l_s > LONG_STEP
    sig_s, sig_t, sig_m = s_s / a_s, s_t / a_t, s_m / a_m
    xs = x / a_s
    d_s = (xs - model.data(ts, x)) / sig_s
    sig_1 = jnp.where(long, sig_m, sig_t)  # the first step's end
    t_1, a_1 = jnp.where(long, t_m, tt), jnp.where(long, a_m, a_t)
    x_1 = xs + (sig_1 - sig_s) * d_s
    d_1 = (x_1 - model.data(t_1, (a_1 * x_1).astype(x.dtype))) / sig_1
    x_heun = xs + (sig_t - sig_s) * 0.5 * (d_s + d_1)
    x_two = x_1 + (sig_t - sig_m) * d_1  # the second Euler step, from the midpoint
    y1 = a_t * jnp.where(long, x_two, x_heun)
    return y1.astype(x.dtype), (a_t * (x_heun - x_1)).astype(x.dtype)


def heun_step(model: PFModel, ts, tt, x):
    """One Heun step in the scaled variables from `ts` down to `tt`: `(y1, y1 - euler)`."""
    a_s, s_s, _ = model.marginal(ts)
    a_t, s_t, _ = model.marginal(tt)
    sig_s, sig_t = s_s / a_s, s_t / a_t
    xs = x / a_s
    d_s = (xs - model.data(ts, x)) / sig_s
    x_euler = xs + (sig_t - sig_s) * d_s
    d_t = (x_euler - model.data(tt, (a_t * x_euler).astype(x.dtype))) / sig_t
    x_heun = xs + (sig_t - sig_s) * 0.5 * (d_s + d_t)
    return (a_t * x_heun).astype(x.dtype), (a_t * (x_heun - x_euler)).astype(x.dtype)
