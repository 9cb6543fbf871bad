"""The samplers `scoresde bench` compares: an explicit table, one row per sampler.

Every fixed-step sampler gets an NFE budget and takes as many steps as fit in it (one
evaluation is kept for the final Tweedie denoising step); the reported NFE is the exact count
the sampler returns. Adaptive ODE solvers get tolerances instead and report the NFE they used.

Grids: diffrax's Runge-Kutta and SDE solvers step uniformly in the half log-SNR
(`grid="log_snr"`); the exponential integrators use `grid="clipped_log_snr"`, the grid they were
tuned on (`benchmarks/fast_solvers.py`).
"""

import dataclasses
from collections.abc import Callable

import diffrax as dfx

from ... import _pc, _solvers
from ..._sample import sample_ode, sample_sde


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
        lambda nfe: dict(solver=solver, steps=_steps(solver, nfe), grid=grid, denoise=True),
    )


def _adaptive(solver):
    return _runner(sample_ode, lambda tol: dict(solver=solver, rtol=tol, atol=tol, denoise=True))


def _sde(solver):
    return _runner(
        sample_sde, lambda nfe: dict(solver=solver, steps=_steps(solver, nfe), grid="log_snr")
    )


def _pc_sampler(predictor, corrector):
    per_step = 1 + (corrector.n_steps if corrector is not None else 0)
    return _runner(
        _pc.sample_pc,
        lambda nfe: dict(
            predictor=predictor, corrector=corrector, steps=(nfe - 1) // per_step, grid="log_snr"
        ),
    )


_AT_INIT = {dfx.ReversibleHeun: 1}
_PER_STEP = {
    dfx.Euler: 1,
    dfx.Heun: 2,
    dfx.Midpoint: 2,
    dfx.Bosh3: 3,
    dfx.ReversibleHeun: 1,
    dfx.SRA1: 2,
    dfx.ShARK: 2,
}


def _per_step(solver) -> int:
    if hasattr(solver, "score_evals_per_step"):
        return int(solver.score_evals_per_step)
    return _PER_STEP[type(solver)]


def _at_init(solver) -> int:
    if hasattr(solver, "score_evals_per_step"):
        return int(getattr(solver, "score_evals_at_init", 0))
    return _AT_INIT.get(type(solver), 0)


def _steps(solver, nfe: int) -> int:
    return (nfe - 1 - _at_init(solver)) // _per_step(solver)


def _fixed(name, family, solver, deterministic=True, grid="log_snr"):
    run = _ode(solver, grid) if deterministic else _sde(solver)
    return SamplerSpec(
        name, family, deterministic, _per_step(solver), run, evals_at_init=_at_init(solver)
    )


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
