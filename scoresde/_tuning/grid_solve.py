r"""The pieces of a grid tuner: the fixed-step probability-flow solve as a differentiable
function of its times, the grid's parametrisation, and the end-point error.

**Parametrisation.** A grid of $N$ steps from $T$ to $t_\varepsilon$ is $N$ increments of the
half log-SNR $\lambda$: $\lambda_i = \lambda(T) + (\lambda(t_\varepsilon) - \lambda(T))
\sum_{j < i} \mathrm{softmax}(\theta)_j$, $t_i = \lambda^{-1}(\lambda_i)$. Every $\theta \in
\mathbb{R}^N$ gives a strictly decreasing grid with both ends exact, the map is smooth, and
$\theta = 0$ is the grid uniform in $\lambda$ (the variable the exponential integrators step in).
"""

import jax
import jax.numpy as jnp

from .._sampling.solve import _fixed_step_scan
from .._solver.base import AbstractPFSolver
from .._terms import BatchedScore, probability_flow_term


def times_from_logits(sde, logits, t_eps):
    """The grid of `logits` ($\\theta$): `len(logits) + 1` times from `sde.T` to `t_eps`."""
    dtype = logits.dtype
    T, t_eps = jnp.asarray(sde.T, dtype), jnp.asarray(t_eps, dtype)
    lam_start, lam_end = sde.log_snr(T), sde.log_snr(t_eps)
    fractions = jnp.cumsum(jax.nn.softmax(logits))[:-1]
    lam = lam_start + (lam_end - lam_start) * fractions
    inner = sde.log_snr_inverse(lam).astype(dtype)
    return jnp.concatenate([T[None], inner, t_eps[None]])


def logits_from_times(sde, times):
    """The logits $\\theta$ of a grid (up to a constant): the log of its $\\lambda$ increments."""
    lam = sde.log_snr(jnp.asarray(times))
    return jnp.log(jnp.diff(lam))


def fixed_steps_solver(solver, steps: int):
    """`solver` as `sample_ode` runs it on `steps` fixed steps."""
    return solver.on_fixed_steps(steps) if isinstance(solver, AbstractPFSolver) else solver


def solve_on_times(sde, score, solver, times, x_T):
    r"""The batch `x_T` (`(num, *data)`) carried by `solver` over the fixed `times` ($T$ down to
    $t_\varepsilon$) of the probability-flow ODE: the solve of `sample_ode(..., grid=times)`
    (no denoising step), differentiable in `times` and `x_T`."""
    terms = probability_flow_term(sde, BatchedScore(score), origin=0.0)
    solver = fixed_steps_solver(solver, times.shape[0] - 1)
    x, _, _ = _fixed_step_scan(solver, terms, -times, x_T)
    return x


def mean_squared_error(x, reference):
    """Mean over samples and coordinates of $(x - x_{ref})^2$."""
    return jnp.mean(jnp.square(x - reference))
