r"""The likelihood ODE on a fixed time grid, as a differentiable function of the grid.

$\ln p_{t_\varepsilon}(x) = \ln p_T(x_T) + \int_{t_\varepsilon}^T \nabla\cdot F\,dt$ integrated
forward over the times of a grid (reversed: $t_\varepsilon \to T$) by a fixed-step explicit
diffrax solver, with the same probes as [`scoresde.log_likelihood`][] draws from the same key
(sample $i$ from `fold_in(key, i)`), so the two agree on a grid to rounding.
"""

import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_batch, check_steps, check_t_eps
from .._keys import sample_keys
from .._likelihood.divergence import AbstractDivergence
from .._likelihood.integration_variable import (
    AbstractIntegrationVariable,
    as_integration_variable,
)
from .._likelihood.log_likelihood import DIVERGENCE, T_EPS, VARIABLE, log_likelihood
from .._likelihood.vector_fields import AugmentedFlow
from .._nfe import evaluation_cost
from .._sampling.solve import _fixed_step_scan
from .._score_calls import pf_drift
from .._sde import check_sde_and_score
from .time_grid import TimeGrid
from .tune_grid import (
    MAX_ITERATIONS,
    NAMED_GRIDS,
    check_fraction,
    search_grid,
    solver_name,
    split_pilot,
)


def likelihood_probes(sde, score, divergence, x, key, t_eps):
    """The probes of every row of `x`, drawn as `log_likelihood` draws them."""
    keys = sample_keys(key, x.shape[0]) if key is not None else jnp.zeros((x.shape[0],), jnp.uint32)
    return jax.vmap(
        lambda xi, ki: divergence.init(ki, lambda z: pf_drift(sde, score, t_eps, z), xi)
    )(x, keys)


def log_likelihood_on_times(sde, score, solver, times, x, probes, divergence, variable,
                            prior_log_prob):  # fmt: skip
    r"""`(log_prob, nfe)` of the rows of `x` integrated over the fixed `times` ($T$ down to
    $t_\varepsilon$, integrated in reverse) in the integration `variable`."""
    u_grid = variable.u_of_t(sde, times[::-1]).astype(x.dtype)

    def one(xi, pi):
        term = dfx.ODETerm(AugmentedFlow(sde, score, divergence, variable, pi))
        y0 = (xi, jnp.zeros((divergence.num_estimates,), xi.dtype))
        (z, deltas), _, _ = _fixed_step_scan(solver, term, u_grid, y0)
        return prior_log_prob(z) + jnp.mean(deltas)

    log_prob = jax.vmap(one)(x, probes)
    return log_prob, grid_nfe(sde, score, solver, divergence, variable, times.shape[0] - 1)


def grid_nfe(sde, score, solver, divergence, variable, steps: int) -> int:
    """Score evaluations of a `steps`-step likelihood solve by `solver` (as `log_likelihood`
    counts them: the solver's, plus the probes' first evaluation); -1 if unknown."""
    term = dfx.ODETerm(AugmentedFlow(sde, score, divergence, variable, None))
    cost = evaluation_cost(solver, term, 0.0, None)
    return -1 if cost is None else cost.init + cost.per_step * steps + divergence.evals_at_init


@eqx.filter_jit
def _nats_error(sde, score, solver, times, x, probes, divergence, variable, prior, reference):
    log_prob, _ = log_likelihood_on_times(
        sde, score, solver, times, x, probes, divergence, variable, prior
    )
    return jnp.mean(jnp.square(log_prob - reference))


def tune_likelihood_grid(
    sde,
    score,
    x,
    *,
    steps: int,
    solver: dfx.AbstractSolver = dfx.Tsit5(),
    key=None,
    t_eps: float = T_EPS,
    divergence: AbstractDivergence = DIVERGENCE,
    variable: AbstractIntegrationVariable | str = VARIABLE,
    prior_log_prob=None,
    held_out: float = 0.25,
    max_iterations: int = MAX_ITERATIONS,
    reference_tol: float | None = None,
    progress: bool = False,
) -> TimeGrid:
    r"""The `steps + 1` times of a fixed-step [`scoresde.log_likelihood`][] solve tuned on a
    pilot of data points `x`: they minimise the mean squared error in nats of `log_prob`
    against the tight adaptive solve with the SAME probes (same `key`).

    **Arguments:** `x`, the pilot `(num, *data_shape)` (the last `held_out` fraction is kept
    from the optimiser and decides between the tuned and the named grids); `steps` and
    `solver` (an explicit diffrax solver; its NFE is `init + per_step * steps`); `key`,
    `t_eps`, `divergence`, `variable`, `prior_log_prob` as in `log_likelihood`;
    `reference_tol`: the reference's `rtol = atol` (default 1e-9 in float64, 1e-6 in float32);
    `max_iterations`, `progress` as in [`scoresde.tune_grid`][].

    **Returns:** a [`scoresde.TimeGrid`][] for `log_likelihood(..., solver=solver, grid=...)`;
    `info` holds the RMS errors in nats of the tuned and named grids on the pilot and the
    held-out points, and `nfe`.
    """
    check_sde_and_score(sde, score)
    steps = check_steps(steps)
    if not isinstance(solver, dfx.AbstractSolver) or isinstance(solver, dfx.AbstractImplicitSolver):
        raise TypeError(
            f"tune_likelihood_grid: solver must be an explicit diffrax solver; got {solver!r}."
        )
    check_t_eps(t_eps, sde.T)
    x = check_batch("x", x)
    num = x.shape[0]
    held_out = check_fraction("held_out", held_out)
    num_fit = split_pilot(num, held_out, None, x.shape)
    variable = as_integration_variable(variable)
    prior = sde.prior_log_prob if prior_log_prob is None else prior_log_prob
    if reference_tol is None:
        reference_tol = 1e-9 if x.dtype == jnp.float64 else 1e-6
    started = time.perf_counter()
    reference = log_likelihood(
        sde, score, x, key=key, t_eps=t_eps, divergence=divergence, variable=variable,
        prior_log_prob=prior_log_prob, solver=dfx.Dopri8(), rtol=reference_tol,
        atol=reference_tol, max_steps=100_000,
    )  # fmt: skip
    reference_seconds = time.perf_counter() - started
    probes = likelihood_probes(sde, score, divergence, x, key, t_eps)
    rows = lambda sl: (x[sl], jax.tree.map(lambda p: p[sl], probes), reference.log_prob[sl])
    fit, check = rows(slice(0, num_fit)), rows(slice(num_fit, num))

    def error(times, batch):
        xb, pb, ref = batch
        return _nats_error(sde, score, solver, times, xb, pb, divergence, variable, prior, ref)

    dtype = x.dtype
    candidates = {n: g.times_for(sde, steps, t_eps, dtype=dtype) for n, g in NAMED_GRIDS.items()}
    times, search = search_grid(
        "tune_likelihood_grid", sde, t_eps, error, fit, check, candidates, max_iterations,
        progress,
    )  # fmt: skip
    nfe = grid_nfe(sde, score, solver, divergence, variable, steps)
    provenance = {
        "objective": "mean squared log-likelihood error (nats) against the adaptive solve "
        "with the same probes",
        "sde": repr(sde),
        "steps": steps,
        "t_eps": float(t_eps),
        "nfe": int(nfe),
        "divergence": repr(divergence),
        "variable": repr(variable),
        "pilot": num_fit,
        "held_out": num - num_fit,
        "reference": {
            "solver": "Dopri8",
            "tol": reference_tol,
            "mean_nfe": float(jnp.mean(reference.nfe)),
        },  # fmt: skip
        **search,
        "reference_seconds": reference_seconds,
        "seconds": time.perf_counter() - started,
    }
    return TimeGrid(jnp.asarray(np.asarray(times, np.float64)), solver_name(solver), provenance)
