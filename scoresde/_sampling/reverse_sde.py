r"""[`scoresde.sample_sde`][]: samples by integrating the reverse-time SDE."""

import diffrax as dfx

from .._custom_types import ScoreFn
from .._grid import AbstractExplicitGrid
from .._sde import AbstractSDE
from .result import SampleResult
from .solve import run_sampler
from .step_modes import solver_grid


def sample_sde(
    sde: AbstractSDE,
    score: ScoreFn,
    *,
    key,
    shape: tuple[int, ...],
    solver: dfx.AbstractSolver = dfx.Euler(),
    steps: int | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    t_eps: float | None = None,
    denoise: bool = True,
    grid=None,
    x_T=None,
    dt0: float | None = None,
    max_steps: int = 16384,
    brownian_tol: float | None = None,
    throw: bool = True,
    progress: bool = False,
    cond=None,
    sharding=None,
    chunk_size: int | None = None,
) -> SampleResult:
    r"""Draw samples by integrating the reverse-time SDE from $T$ down to `t_eps`.

    $dx = [-f(t)x + g(t)^2\,\mathrm{score}(t, x)]\,ds + g(t)\,dW_s$ in $s = T - t$.

    **Arguments:** as [`scoresde.sample_ode`][], plus:

    - `solver`: any diffrax SDE solver for additive noise: `Euler` (Euler-Maruyama), `Heun`,
      `ReversibleHeun`, `SRA1`, `ShARK`, `SEA`, ...
    - `steps`: fixed steps (default 1000, or as many as a grid of given times has) with a cheap per-sample Brownian path. With a
      `stepsize_controller` (e.g. `diffrax.PIDController`, needing a solver with an error
      estimate) steps are adaptive over a `diffrax.VirtualBrownianTree` of tolerance
      `brownian_tol` (default $10^{-6} T$); a `PIDController` without `dtmin` gets
      `dtmin = 10 * brownian_tol`.
    - `grid`: as in [`scoresde.sample_ode`][]; `None` (default) is uniform in $t$ (diffrax's
      solvers keep that grid).
    - `denoise`: finish with one Tweedie step (default on; +1 NFE).

    **Returns:** a [`scoresde.SampleResult`][].
    """
    if (
        steps is None
        and stepsize_controller is None
        and not isinstance(solver_grid(grid, solver), AbstractExplicitGrid)
    ):
        steps = 1000
    return run_sampler(
        "sample_sde",
        sde=sde,
        score=score,
        key=key,
        shape=shape,
        solver=solver,
        steps=steps,
        controller=stepsize_controller,
        t_eps=t_eps,
        denoise=denoise,
        grid=grid,
        x_T=x_T,
        stochastic=True,
        dt0=dt0,
        max_steps=max_steps,
        brownian_tol=brownian_tol,
        throw=throw,
        progress=progress,
        cond=cond,
        sharding=sharding,
        chunk_size=chunk_size,
    )
