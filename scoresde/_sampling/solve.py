r"""The solve shared by [`scoresde.sample_ode`][] and [`scoresde.sample_sde`][]: checks, then one
solve per batch (fixed steps: a `lax.scan` of an explicit solver's own steps, else `diffeqsolve`)
or one `diffeqsolve` per sample (adaptive steps), then denoising and the report of failures.

One program compiles per first call: the jitted solve also returns the per-sample flags (solved,
finite) that the checks after it read, on the host.

It runs in the reversed time $s = -t$ (terms with origin 0) from $s = -T$ to $-t_\varepsilon$, so
every solver steps forward. Sample `i` draws its prior latent and its noise from
`jax.random.fold_in(key, i)`.
"""

import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp

from .. import _nfe as _nfe
from .._checks import (
    check_bool,
    check_key,
    check_latents,
    check_ode_solver,
    check_shape,
    check_solver,
    finite_rows,
    is_concrete,
    on_host,
    raise_if_failed,
    raise_if_not_finite,
)
from .._keys import draw_latents, latents_and_noise_keys
from .._network_times import on_network_times
from .._progress import progress_meter
from .._score_calls import bind, check_cond, diagnose_score, tweedie_batch
from .._sde import check_sde_and_score
from .._sharding import map_batch
from .._solver.base import AbstractPFSolver
from .._terms import BatchedScore, probability_flow_term, reverse_terms
from .brownian import BatchBrownianPath
from .result import SampleResult
from .step_modes import Adaptive, FixedGrid, brownian_tolerance, decide_step_mode

# diffrax's solvers that declare the Lévy area they need from the Brownian path.
_LEVY_AREA_SOLVERS = (dfx.AbstractSRK, dfx.AbstractFosterLangevinSRK)


def _levy_area(solver):
    """The Lévy area the solver needs from the Brownian path (space-time if it can use it)."""
    if not isinstance(solver, _LEVY_AREA_SOLVERS):
        return dfx.BrownianIncrement
    levy = solver.minimal_levy_area
    return dfx.SpaceTimeLevyArea if issubclass(dfx.SpaceTimeLevyArea, levy) else levy


def _SCAN_FIXED(solver) -> bool:
    """Whether fixed steps of `solver` run as a `lax.scan` of its steps (explicit solvers)."""
    return not isinstance(solver, dfx.AbstractImplicitSolver)


def _fixed_step_scan(solver, terms, s_grid, x):
    r"""The fixed steps $s_0 < \dots < s_n$ of `s_grid` as a `lax.scan` of the solver's own
    `init` and `step` (e.g. Euler-Maruyama: $x_{k+1} = x_k + F(s_k, x_k)\,\Delta s_k +
    G(s_k)\,\Delta W_k$): the arithmetic of `diffeqsolve` under `StepTo(s_grid)`, without its
    while-loop machinery, which XLA takes several times longer to compile. Returns `x`, the
    score evaluations and whether every step succeeded."""
    cost = _nfe.evaluation_cost(solver, terms, s_grid[0], x)
    state = _nfe.initial_solver_state(cost, terms, s_grid[0], x)
    if state is None:
        state = solver.init(terms, s_grid[0], s_grid[1], x, None)

    def body(carry, interval):
        x, state, result = carry  # `result`: the first failure, if any
        x, _, _, state, step_result = solver.step(
            terms, interval[0], interval[1], x, None, state, False
        )
        ok = result == dfx.RESULTS.successful  # traced: no eager op on a constant result
        return (x, state, dfx.RESULTS.where(ok, step_result, result)), None

    start = (x, state, dfx.RESULTS.successful)
    (x, _, result), _ = jax.lax.scan(body, start, (s_grid[:-1], s_grid[1:]))
    ok = result == dfx.RESULTS.successful
    steps = s_grid.shape[0] - 1  # counted in Python: no array op outside the traced program
    nfe = -1 if cost is None else cost.init + cost.per_step * steps
    return x, jnp.asarray(nfe, jnp.int32), ok


@eqx.filter_jit
def _sample(
    *,
    sde,
    score,
    key,
    t_eps,
    x_T,
    mode,
    shape,
    solver,
    denoise,
    stochastic,
    brownian_tol,
    progress,
    cond,
    throw,
    rows=None,
):
    """The solve of the batch's (or this device's or chunk's) rows: `x`, `nfe`, `num_steps`,
    `ok` (the solve succeeded; with `throw=False` also: `x` is finite, else NaN) and `finite`
    (per sample, so the checks after the call compile nothing)."""
    if rows is not None:  # this device's (or chunk's) rows of the batch
        shape = (rows.num, *shape[1:])
    num, data_shape = shape[0], shape[1:]
    dtype = jnp.result_type(float)
    x_T, noise_keys = latents_and_noise_keys(sde, key, shape, x_T, dtype, rows)
    # Reversed time s = -t (terms with origin 0): every solver steps forward, and s keeps
    # full floating-point resolution near t_eps even when T is large (EDM: T = 80).
    s0, s_end = -jnp.asarray(sde.T, dtype), -t_eps
    levy = _levy_area(solver)

    if isinstance(mode, FixedGrid):  # the whole batch in one solve
        s_grid = -mode.times(sde, t_eps, dtype)
        batched = BatchedScore(score, cond)
        if stochastic:
            path = BatchBrownianPath(noise_keys, shape, dtype, levy)
            terms = reverse_terms(sde, batched, path, origin=0.0)
        else:
            terms = probability_flow_term(sde, batched, origin=0.0)
        if _SCAN_FIXED(solver) and not progress:
            x, nfe, ok = _fixed_step_scan(solver, terms, s_grid, x_T)
            nfe, ok = jnp.broadcast_to(nfe, (num,)), jnp.broadcast_to(ok, (num,))
            num_steps = jnp.full((num,), mode.steps, jnp.int32)
        else:
            sol, nfe = _nfe.counted_diffeqsolve(
                terms,
                solver,
                s_grid[0],
                s_grid[-1],
                None,
                x_T,
                stepsize_controller=dfx.StepTo(ts=s_grid),
                max_steps=mode.steps,
                progress_meter=progress_meter(progress),
            )
            x = sol.ys[0]
            nfe = jnp.broadcast_to(nfe, (num,))
            num_steps = jnp.broadcast_to(sol.stats["num_steps"], (num,))
            ok = jnp.broadcast_to(sol.result == dfx.RESULTS.successful, (num,))
    else:

        def make_terms(noise_key, score_i):
            if not stochastic:
                return probability_flow_term(sde, score_i, origin=0.0)
            path = dfx.VirtualBrownianTree(
                s0, s_end, brownian_tol, data_shape, noise_key, levy_area=levy
            )
            return reverse_terms(sde, score_i, path, origin=0.0)

        def one(x0, noise_key, cond_i):
            sol, nfe = _nfe.counted_diffeqsolve(
                make_terms(noise_key, bind(score, cond_i)),
                solver,
                s0,
                s_end,
                mode.dt0,
                x0,
                stepsize_controller=mode.controller,
                max_steps=mode.max_steps,
                progress_meter=progress_meter(progress),
            )
            ok = sol.result == dfx.RESULTS.successful
            return sol.ys[0], nfe, sol.stats["num_steps"], ok

        x, nfe, num_steps, ok = jax.vmap(one)(x_T, noise_keys, cond)

    if denoise:
        x = tweedie_batch(sde, score, t_eps, x, cond)
        nfe = jnp.where(nfe >= 0, nfe + 1, nfe)
    nfe = _nfe.network_nfe(score, nfe)  # score calls -> network evaluations
    finite = finite_rows(x)
    if not throw:  # failed or non-finite samples are NaN; `ok` says which
        ok = ok & finite
        x = jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.nan)
    return x, nfe, num_steps.astype(jnp.int32), ok, finite


def _min_on_host(a) -> int:
    """The least entry of a concrete integer array, on the host (no compile)."""
    v = on_host(a)
    return int(jnp.min(a)) if v is None else int(v.min())


def run_sampler(
    name,
    *,
    sde,
    score,
    key,
    shape,
    solver,
    steps,
    controller,
    t_eps,
    denoise,
    grid,
    x_T,
    stochastic,
    dt0,
    max_steps,
    brownian_tol=None,
    throw,
    progress,
    cond=None,
    sharding=None,
    chunk_size=None,
) -> SampleResult:
    """`sample_ode` (`stochastic=False`) or `sample_sde` (`stochastic=True`): check the
    arguments, decide the step mode, solve the batch (split over `sharding` / `chunk_size`)
    and report failures (`throw`) or mark them NaN."""
    check_sde_and_score(sde, score)
    score = on_network_times(grid, sde, score)  # a grid tuned with them
    check_solver(solver, controller)
    if not stochastic:
        check_ode_solver(name, solver)
    if stochastic and isinstance(solver, AbstractPFSolver):
        raise TypeError(
            f"{type(solver).__name__} integrates the probability-flow ODE only: use "
            "scoresde.sample_ode with it, not sample_sde."
        )
    key = check_key(key)
    shape = check_shape(shape)
    denoise, throw = check_bool("denoise", denoise), check_bool("throw", throw)
    dtype = jnp.result_type(float)
    mode, t_eps = decide_step_mode(
        name,
        sde=sde,
        steps=steps,
        controller=controller,
        t_eps=t_eps,
        grid=grid,
        dt0=dt0,
        max_steps=max_steps,
        dtype=dtype,
        solver=solver,
    )
    if isinstance(mode, FixedGrid) and isinstance(solver, AbstractPFSolver):
        solver = solver.on_fixed_steps(mode.steps)  # e.g. DPM-Solver-3 lowers its last step
    if stochastic and isinstance(mode, Adaptive):
        mode, brownian_tol = brownian_tolerance(mode, sde, brownian_tol)
    if x_T is None and isinstance(mode, Adaptive):  # see `draw_latents`: no rounding by width
        x_T = map_batch(
            draw_latents,
            shape[0],
            {},
            sharding=sharding,
            chunk_size=chunk_size,
            sde=sde,
            key=key,
            shape=shape,
            dtype=dtype,
        )
    else:
        x_T = check_latents(x_T, shape, dtype)
    x, nfe, num_steps, ok, finite = map_batch(
        _sample,
        shape[0],
        {"x_T": x_T, "cond": check_cond(cond, shape[0])},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        key=key,
        t_eps=jnp.asarray(t_eps, dtype),
        mode=mode,
        shape=shape,
        solver=solver,
        denoise=denoise,
        stochastic=stochastic,
        brownian_tol=brownian_tol,
        progress=check_bool("progress", progress),
        throw=throw,
    )
    if throw:
        diagnose = diagnose_score(
            score, sde.T, lambda: latents_and_noise_keys(sde, key, shape, x_T, dtype)[0], cond
        )
        detail = f"{type(solver).__name__}; max_steps={max_steps}"
        x = raise_if_failed(name, ok, x, detail=detail, diagnose=diagnose)
        raise_if_not_finite(
            name,
            x,
            hint="the score or the step size is unstable. Use more steps or an adaptive "
            "controller.",
            finite=finite,
            diagnose=diagnose,
        )
    if is_concrete(nfe) and _min_on_host(nfe) < 0:
        warnings.warn(
            f"{name}: the number of score evaluations of {type(solver).__name__} is not "
            "known; nfe is -1.",
            stacklevel=3,
        )
    return SampleResult(x=x, nfe=nfe, num_steps=num_steps, successful=ok)
