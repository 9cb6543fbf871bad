r"""[`scoresde.sample_ode`][]: samples by integrating the probability-flow ODE."""

import diffrax as dfx

from .._checks import check_tolerances
from .._custom_types import ScoreFn
from .._grid import AbstractExplicitGrid
from .._sde import AbstractSDE
from .result import SampleResult
from .solve import run_sampler
from .step_modes import solver_grid


def sample_ode(
    sde: AbstractSDE,
    score: ScoreFn,
    *,
    key,
    shape: tuple[int, ...],
    solver: dfx.AbstractSolver = dfx.Tsit5(),
    steps: int | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    t_eps: float | None = None,
    denoise: bool = False,
    grid=None,
    x_T=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    dt0: float | None = None,
    max_steps: int = 4096,
    throw: bool = True,
    progress: bool = False,
    cond=None,
    sharding=None,
    chunk_size: int | None = None,
) -> SampleResult:
    r"""Draw samples by integrating the probability-flow ODE from $T$ down to `t_eps`.

    $dx/ds = -F(T - s, x)$ with $F(t, x) = f(t)x - \tfrac12 g(t)^2\,\mathrm{score}(t, x)$, from
    $x_T$ drawn from the prior.

    **Arguments:**

    - `sde`, `score`: the SDE and the score `score(t, x)` on one sample.
    - `key`: sample `i` uses `fold_in(key, i)`; `shape = (num, *data_shape)`.
    - `solver`: any diffrax ODE solver (or this package's exponential integrators).
    - `steps`: a fixed grid of that many steps, with the times of `grid`: a grid value
      ([`scoresde.UniformGrid`][], [`scoresde.LogSNRGrid`][], [`scoresde.KarrasGrid`][],
      [`scoresde.ClippedLogSNRGrid`][]) or its name (`"uniform"`, `"log_snr"`, `"karras"`,
      `"clipped_log_snr"`); `None` (default): the solver's own, the grid that measures best
      for it (`solver.default_grid()` for this package's solvers, see
      [`scoresde.AbstractPFSolver`][]; uniform in $t$ for diffrax's). `grid` may also give the
      times themselves (an [`scoresde.AbstractExplicitGrid`][], or an array decreasing from
      `sde.T` to `t_eps`): then `steps` and `t_eps` are implied. On fixed steps DPM-Solver-2/3
      and EDM's Heun spend their last step and any long one on lower orders (their
      `fixed_steps`, see [`scoresde.DPMSolver3`][]).
      Without `steps`, adaptive steps under `stepsize_controller`, by default
      `diffrax.PIDController(rtol, atol)`; with both, `steps` sets the first step size.
    - `t_eps`: the end time; defaults to `sde.default_t_eps` ($10^{-3}$; `sigma_min` for EDM).
    - `denoise`: finish with one Tweedie step $E[x_0 \mid x_{t_\varepsilon}]$ (+1 NFE).
    - `x_T`: given latents of shape `shape` instead of prior draws.
    - `throw`: raise on a failed solve (default); with `False`, failed samples are NaN and
      `successful` says which.
    - `progress`: show diffrax's tqdm progress meter (under adaptive steps, the slowest sample).
    - `cond`: per-sample conditioning (a label, a context array; any pytree whose leaves have a
      leading axis of `num`): the score is then called as `score(t, x, cond_i)`.
    - `sharding`: a `jax.sharding.NamedSharding` splitting the batch axis over a mesh axis:
      each device runs its own solves on its rows (its own adaptive loop), and the result comes
      back with that sharding, equal to the one-device result up to the rounding of the program
      compiled for a device's rows (sample `i` keeps `fold_in(key, i)`; with adaptive steps,
      which amplify a rounding difference to the tolerance, the latents are drawn in a program
      of their own: measured bit for bit on 1 and 4 CPU devices). A batch the device count
      does not divide is padded with copies of the last sample, dropped afterwards. See
      [Run on many devices and hosts](../how-to/devices.md).
    - `chunk_size`: run the batch through in chunks of this many samples (one compile; the same
      results), so a batch larger than memory streams through.

    **Returns:** a [`scoresde.SampleResult`][] with `x`, `nfe`, `num_steps` and `successful`.

    **Raises:** `RuntimeError` if the solve fails, `FloatingPointError` on non-finite samples,
    `ValueError`/`TypeError` on bad arguments.
    """
    grid = solver_grid(grid, solver)
    if stepsize_controller is None and steps is None and not isinstance(grid, AbstractExplicitGrid):
        check_tolerances(rtol, atol)
        stepsize_controller = dfx.PIDController(rtol=rtol, atol=atol)
    return run_sampler(
        "sample_ode",
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
        stochastic=False,
        dt0=dt0,
        max_steps=max_steps,
        throw=throw,
        progress=progress,
        cond=cond,
        sharding=sharding,
        chunk_size=chunk_size,
    )
