r"""[`scoresde.tune_sampler`][]: the best fixed-step probability-flow solver and tuned grid for a
budget of network evaluations.

Each candidate solver gets the most steps the budget affords (its score evaluations: `evals_at_init
+ steps * evals_per_step <= nfe`), its grid tuned by [`scoresde.tune_grid`][] on the same pilot
(one reference solve shared by all), and the winner is the smallest RMS error on the held-out
latents. Predictor-corrector and reverse-SDE samplers are not candidates: their error against a
paired reference is not what they minimise.
"""

import math
import sys
import time

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp

from .._checks import check_key, check_shape, check_t_eps
from .._keys import draw_latents
from .._nfe import AbstractCountedSolver
from .._sampling.ode import sample_ode
from .._sde import check_sde_and_score
from .._solver import DDIM, DPMSolver2, DPMSolverPP2M, DPMSolverPP3M, EDMHeun, UniPC
from .time_grid import TimeGrid
from .tune_grid import MAX_ITERATIONS, NAMED_GRIDS, solver_name, tune_grid


def default_candidates() -> tuple:
    """The solvers compared by default: DDIM, DPM-Solver++(2M)/(3M), UniPC (orders 2 and 3),
    DPM-Solver-2 and EDM's Heun."""
    return (DDIM(), DPMSolverPP2M(), DPMSolverPP3M(), UniPC(2), UniPC(3), DPMSolver2(), EDMHeun())


def steps_for_budget(solver, nfe: int) -> int:
    """The most fixed steps of `solver` within `nfe` score evaluations (0 if none fits)."""
    if not isinstance(solver, AbstractCountedSolver):
        raise TypeError(
            f"tune_sampler: {type(solver).__name__} does not declare its cost per step; use "
            "this package's probability-flow solvers (ss.UniPC(), ss.DPMSolverPP2M(), ...)."
        )
    init, per_step = int(solver.evals_at_init), int(solver.evals_per_step)
    return max(0, (nfe - init) // per_step)


class TunedSampler(eqx.Module):
    """The result of [`scoresde.tune_sampler`][]: `solver` and its tuned `grid` (use them as
    `sample_ode(sde, score, solver=result.solver, grid=result.grid, ...)`), the budget `nfe`,
    and `table`, one row per candidate (solver, steps, NFE used, the held-out RMS error of its
    tuned grid and of its best named grid, the seconds spent), best first."""

    solver: object
    grid: TimeGrid
    nfe: int = eqx.field(static=True)
    table: tuple[dict, ...]


def tune_sampler(
    sde,
    score,
    *,
    nfe: int,
    key,
    shape: tuple[int, ...],
    candidates=None,
    t_eps: float | None = None,
    held_out: float = 0.25,
    fit_size: int | None = None,
    network_times: bool = False,
    network_scales: bool = False,
    max_iterations: int = MAX_ITERATIONS,
    reference_solver: dfx.AbstractSolver = dfx.Tsit5(),
    reference_tol: float = 1e-5,
    progress: bool = False,
) -> TunedSampler:
    """The solver and tuned grid with the smallest held-out end-point error at `nfe` network
    evaluations.

    **Arguments:** `nfe` (the budget, >= 1), `candidates` (solvers; default
    `default_candidates()`), the rest as [`scoresde.tune_grid`][] (the reference is computed
    once and shared).

    **Returns:** a `TunedSampler` with the winner and the table of every candidate.
    """
    check_sde_and_score(sde, score)
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be an int >= 1; got nfe={nfe!r}.")
    key, shape = check_key(key), check_shape(shape)
    candidates = default_candidates() if candidates is None else tuple(candidates)
    if not candidates:
        raise ValueError("tune_sampler needs at least one candidate solver.")
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    plan = [(s, steps_for_budget(s, nfe)) for s in candidates]
    if all(steps < 1 for _, steps in plan):
        raise ValueError(f"no candidate solver takes a step within nfe={nfe}.")
    dtype = jnp.result_type(float)
    x_T = draw_latents(sde=sde, key=key, shape=shape, dtype=dtype)
    started = time.perf_counter()
    reference = sample_ode(
        sde, score, key=key, shape=shape, solver=reference_solver, t_eps=t_eps, x_T=x_T,
        rtol=reference_tol, atol=reference_tol, max_steps=100_000,
    ).x  # fmt: skip
    reference_seconds = time.perf_counter() - started
    rows, grids = [], {}
    for solver, steps in plan:
        name = solver_name(solver)
        if steps < 1:
            rows.append({"solver": name, "steps": 0, "nfe": 0, "tuned": math.inf,
                         "best_named": math.inf, "best_named_grid": None, "seconds": 0.0})  # fmt: skip
            continue
        if progress:
            print(f"tune_sampler: {name}, {steps} steps ...", file=sys.stderr, flush=True)
        grid = tune_grid(
            sde, score, solver=solver, steps=steps, key=key, shape=shape, t_eps=t_eps,
            held_out=held_out, fit_size=fit_size, network_times=network_times,
            network_scales=network_scales,
            max_iterations=max_iterations,
            reference=reference,
        )  # fmt: skip
        rms = grid.info["rms"]
        named = {k: rms[k] for k in NAMED_GRIDS}  # the tuner's other rows are its own stages
        best_named = min(named, key=lambda k: named[k]["held_out"])
        chosen = grid.info["chosen"]
        rows.append({
            "solver": name,
            "steps": steps,
            "nfe": int(solver.evals_at_init) + steps * int(solver.evals_per_step),
            "tuned": rms[chosen]["held_out"],
            "tuned_pilot": rms[chosen]["pilot"],
            "best_named": named[best_named]["held_out"],
            "best_named_grid": best_named,
            "seconds": grid.info["seconds"],
        })  # fmt: skip
        grids[len(rows) - 1] = (solver, grid)
    order = sorted(range(len(rows)), key=lambda i: float(rows[i]["tuned"]))  # type: ignore[arg-type]
    solver, grid = grids[order[0]]
    table = tuple(
        {**rows[i], "reference_seconds": reference_seconds if i == order[0] else None}
        for i in order
    )
    return TunedSampler(solver, grid, nfe, table)
