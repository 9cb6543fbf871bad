"""The samplers `scoresde bench` compares: an explicit table, one row per sampler.

Every fixed-step sampler gets an NFE budget and takes as many steps as fit in it (one
evaluation is kept for the final Tweedie denoising step); the reported NFE is the exact count
the sampler returns. The cost of a step (and of the start, for first-same-as-last methods) is the
library's own, `scoresde._nfe.evaluation_cost`, the count the samplers report. Adaptive ODE
solvers get tolerances instead and report the NFE they used.

Tuned rows (`(tuned grid)`) run UniPC-3 and DPM-Solver++ 2M on the grid `scoresde.tune_grid`
learns for each problem and budget from a pilot drawn with another key.

Grids: diffrax's Runge-Kutta and SDE solvers step uniformly in the half log-SNR
(`grid="log_snr"`); the exponential integrators use `grid="clipped_log_snr"`, the grid they were
tuned on (`benchmarks/fast_solvers.py`).
"""

import dataclasses
from collections.abc import Callable

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr

from .. import _solver as _solvers
from .._nfe import evaluation_cost
from .._sampling import predictor_corrector as _pc
from .._sampling.sample import sample_ode, sample_sde
from .._sde import VPSDE
from .._terms import probability_flow_term, reverse_terms
from .._tuning.tune_grid import tune_grid


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """One sampler of the table.

    - `family`: `"ode"` (diffrax Runge-Kutta), `"ode-adaptive"`, `"exponential"` (this package's
      exponential integrators), `"sde"` (reverse-time SDE) or `"pc"` (predictor-corrector).
    - `deterministic`: a PF-ODE sampler (its error against the reference ODE solution from the
      same noise is meaningful); stochastic samplers are judged by distances only.
    - `evals_per_step`: score evaluations per step (to turn an NFE budget into steps).
    - `run(problem, key, x_T, budget)`: draws the samples; `budget` is an NFE budget, or a
      tolerance for adaptive solvers.
    """

    name: str
    family: str
    deterministic: bool
    evals_per_step: int
    run: Callable
    adaptive: bool = False
    evals_at_init: int = 0

    def steps_for(self, nfe: int) -> int:
        """Steps that fit in an NFE budget, one evaluation kept for the denoising step."""
        return (nfe - 1 - self.evals_at_init) // self.evals_per_step

    def setting(self, budget) -> str:
        if self.adaptive:
            return f"rtol=atol={budget:g}"
        return f"{self.steps_for(budget)} steps"


def _runner(sample_fn, settings):
    """`run(problem, key, x_T, budget)`: `sample_fn` from `x_T` with `settings(budget)`."""

    def run(problem, key, x_T, budget):
        return sample_fn(
            problem.sde, problem.score, key=key, shape=x_T.shape, x_T=x_T, **settings(budget)
        )

    return run


def _ode(solver, grid="log_snr"):
    return _runner(
        sample_ode,
        lambda nfe: dict(solver=solver, steps=_steps(solver, nfe, False), grid=grid, denoise=True),
    )


TUNING_PILOT = 128
"""Pilot latents of a tuned row's `tune_grid` (drawn from another key than the test latents)."""


def _tuned(solver):
    """`run` of a tuned row: `tune_grid` for this problem, solver and budget on a pilot of
    `TUNING_PILOT` latents from `fold_in(key, 1)`, then `sample_ode` on the tuned grid from the
    test latents (the tuner never sees them)."""

    def run(problem, key, x_T, budget):
        steps = _steps(solver, budget, False)
        grid = tune_grid(
            problem.sde, problem.score, solver=solver, steps=steps, key=jr.fold_in(key, 1),
            shape=(TUNING_PILOT, *x_T.shape[1:]), max_iterations=50,
        )  # fmt: skip
        return sample_ode(problem.sde, problem.score, key=key, shape=x_T.shape, x_T=x_T,
                          solver=solver, grid=grid, denoise=True)  # fmt: skip

    return run


def _adaptive(solver):
    return _runner(sample_ode, lambda tol: dict(solver=solver, rtol=tol, atol=tol, denoise=True))


def _sde(solver):
    return _runner(
        sample_sde,
        lambda nfe: dict(solver=solver, steps=_steps(solver, nfe, True), grid="log_snr"),
    )


def _pc_sampler(predictor, corrector):
    per_step = 1 + (corrector.n_steps if corrector is not None else 0)
    return _runner(
        _pc.sample_pc,
        lambda nfe: dict(
            predictor=predictor, corrector=corrector, steps=(nfe - 1) // per_step, grid="log_snr"
        ),
    )


def _cost(solver, stochastic: bool):
    """The library's score-evaluation cost of `solver` (`scoresde._nfe.evaluation_cost`) on the
    terms the samplers build: the PF-ODE term, or the reverse-SDE drift and diffusion terms."""
    sde = VPSDE()
    score = lambda t, x: -x
    y0 = jnp.zeros(2)
    terms: dfx.AbstractTerm
    if stochastic:
        levy = getattr(solver, "minimal_levy_area", dfx.BrownianIncrement)
        path = dfx.VirtualBrownianTree(-sde.T, 0.0, 1e-2, (2,), jr.key(0), levy_area=levy)
        terms = reverse_terms(sde, score, path, origin=0.0)
    else:
        terms = probability_flow_term(sde, score, origin=0.0)
    cost = evaluation_cost(solver, terms, jnp.asarray(-sde.T), y0)
    if cost is None:
        raise ValueError(f"{type(solver).__name__} has no known score-evaluation cost.")
    return cost


def _steps(solver, nfe: int, stochastic: bool) -> int:
    cost = _cost(solver, stochastic)
    return (nfe - 1 - cost.init) // cost.per_step


def _fixed(name, family, solver, deterministic=True, grid="log_snr"):
    run = _ode(solver, grid) if deterministic else _sde(solver)
    cost = _cost(solver, stochastic=not deterministic)
    return SamplerSpec(name, family, deterministic, cost.per_step, run, evals_at_init=cost.init)


EXP_GRID = "clipped_log_snr"

SAMPLERS: tuple[SamplerSpec, ...] = (
    # probability-flow ODE, diffrax Runge-Kutta on a fixed grid
    _fixed("Euler", "ode", dfx.Euler()),
    _fixed("Heun", "ode", dfx.Heun()),
    _fixed("Midpoint", "ode", dfx.Midpoint()),
    _fixed("Bosh3", "ode", dfx.Bosh3()),
    # probability-flow ODE, adaptive steps (budget = tolerance)
    SamplerSpec("Tsit5 (adaptive)", "ode-adaptive", True, 0, _adaptive(dfx.Tsit5()), True),
    SamplerSpec("Dopri5 (adaptive)", "ode-adaptive", True, 0, _adaptive(dfx.Dopri5()), True),
    # exponential integrators (this package), in the half log-SNR
    _fixed("DPM-Solver-1", "exponential", _solvers.DPMSolver1(), grid=EXP_GRID),
    _fixed("DPM-Solver-2", "exponential", _solvers.DPMSolver2(), grid=EXP_GRID),
    _fixed("DPM-Solver-3", "exponential", _solvers.DPMSolver3(), grid=EXP_GRID),
    _fixed("DPM-Solver++ 2M", "exponential", _solvers.DPMSolverPP2M(), grid=EXP_GRID),
    _fixed("DPM-Solver++ 3M", "exponential", _solvers.DPMSolverPP3M(), grid=EXP_GRID),
    _fixed("UniPC-3", "exponential", _solvers.UniPC(3), grid=EXP_GRID),
    _fixed("EDM Heun", "exponential", _solvers.EDMHeun(), grid=EXP_GRID),
    # the same, on grids tuned for the problem and budget (`scoresde.tune_grid`; tuning not timed
    # apart: the row's time includes it)
    SamplerSpec("UniPC-3 (tuned grid)", "exponential-tuned", True, 1, _tuned(_solvers.UniPC(3))),
    SamplerSpec(
        "DPM-Solver++ 2M (tuned grid)",
        "exponential-tuned",
        True,
        1,
        _tuned(_solvers.DPMSolverPP2M()),
    ),  # fmt: skip
    # reverse-time SDE
    _fixed("Euler-Maruyama", "sde", dfx.Euler(), deterministic=False),
    _fixed("Reversible Heun (SDE)", "sde", dfx.ReversibleHeun(), deterministic=False),
    _fixed("SRA1", "sde", dfx.SRA1(), deterministic=False),
    _fixed("ShARK", "sde", dfx.ShARK(), deterministic=False),
    # predictor-corrector
    SamplerSpec(
        "PC: reverse diffusion + Langevin",
        "pc",
        False,
        2,
        _pc_sampler(_pc.ReverseDiffusion(), _pc.LangevinCorrector(snr=0.01)),
    ),
    SamplerSpec("PC: ancestral", "pc", False, 1, _pc_sampler(_pc.Ancestral(), None)),
)
QUICK_SAMPLERS = (
    "Euler",
    "Tsit5 (adaptive)",
    "UniPC-3",
    "Euler-Maruyama",
    "PC: reverse diffusion + Langevin",
)
NFES = (10, 20, 50, 100, 200)
QUICK_NFES = (10, 20)
TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)
QUICK_TOLERANCES = (1e-3,)


def get_samplers(names) -> list[SamplerSpec]:
    """The table's rows named `names`, in the given order; unknown names raise."""
    by_name = {s.name: s for s in SAMPLERS}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown sampler(s) {unknown}; choose from: {', '.join(by_name)}.")
    return [by_name[n] for n in names]
