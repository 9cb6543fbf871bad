"""Fixed or adaptive steps, decided once per call of `sample_ode` / `sample_sde` as a value the
solve dispatches on: `FixedGrid` (a grid value and its number of steps) or `Adaptive` (a
step-size controller, a first step and a step cap); and `solver_grid`, the one place that
decides the grid a sampler uses when given none."""

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_int, check_positive, check_steps, check_t_eps
from .._grid import (
    AbstractExplicitGrid,
    AbstractTimeGrid,
    UniformGrid,
    as_time_grid,
    resolve_explicit,
)
from .._solver.base import AbstractPFSolver


def solver_grid(grid, solver=None) -> AbstractTimeGrid:
    """The grid value of a sampler's `grid` argument: `grid` itself (see `as_time_grid`), or,
    for `grid=None`, the solver's default: this package's probability-flow solvers each give
    their own ([`scoresde.AbstractPFSolver`][]`.default_grid`, the grid that measures best for
    them), any other solver (diffrax's, the predictor-corrector samplers') the grid uniform in
    $t$."""
    if grid is not None:
        return as_time_grid(grid)
    if isinstance(solver, AbstractPFSolver):
        return solver.default_grid()
    return UniformGrid()


class FixedGrid(eqx.Module):
    """Fixed steps: `steps` steps on the times of `grid` (from `sde.T` to `t_eps`)."""

    steps: int = eqx.field(static=True)
    grid: AbstractTimeGrid

    def times(self, sde, t_eps, dtype) -> Float[Array, " steps_plus_one"]:
        return self.grid.times_for(sde, self.steps, t_eps, dtype=dtype)


class Adaptive(eqx.Module):
    """Adaptive steps under `controller`, from a first step `dt0`, at most `max_steps`."""

    controller: dfx.AbstractStepSizeController
    dt0: Float[Array, ""]
    max_steps: int = eqx.field(static=True)


def _is_fixed(controller) -> bool:
    return isinstance(controller, (dfx.StepTo, dfx.ConstantStepSize))


def decide_step_mode(
    name, *, sde, steps, controller, t_eps, grid, dt0, max_steps, dtype, solver=None
):
    """Decide fixed or adaptive steps once: `(FixedGrid | Adaptive, t_eps)`. A grid of given
    times ([`scoresde.AbstractExplicitGrid`][]) implies `steps` and `t_eps`; `grid=None` is
    the solver's default (`solver_grid`)."""
    grid = solver_grid(grid, solver)
    if isinstance(grid, AbstractExplicitGrid):
        if controller is not None and not _is_fixed(controller):
            raise ValueError(
                f"{name}: a grid of given times gives fixed steps; do not pass a "
                f"stepsize_controller (got {type(controller).__name__})."
            )
    grid, steps, t_eps = resolve_explicit(grid, sde, steps, t_eps)
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    if steps is not None:
        steps = check_steps(steps)
    if _is_fixed(controller):
        if steps is None:
            raise ValueError(
                f"{name}: a fixed-step controller needs steps=...; or pass steps alone."
            )
        controller = None  # a fixed grid; the grid comes from `steps` and `grid`
    if controller is None:
        if steps is None:
            raise ValueError(f"{name} needs steps=... (fixed grid) or a stepsize_controller.")
        return FixedGrid(steps, grid), t_eps
    max_steps = check_int("max_steps", max_steps)
    if dt0 is None:
        dt0 = (sde.T - t_eps) / (steps if steps is not None else 64)
    check_positive("dt0", dt0)  # adaptive: `steps` only set the first step size
    return Adaptive(controller, jnp.asarray(dt0, dtype), max_steps), t_eps


def brownian_tolerance(mode: Adaptive, sde, brownian_tol):
    """The Brownian tree's tolerance, and a controller whose smallest step it resolves."""
    if brownian_tol is None:
        brownian_tol = 1e-6 * sde.T
    check_positive("brownian_tol", brownian_tol)
    controller = mode.controller
    if isinstance(controller, dfx.PIDController):
        if controller.dtmin is None:
            controller = eqx.tree_at(
                lambda c: c.dtmin, controller, 10 * brownian_tol, is_leaf=lambda x: x is None
            )
        elif controller.dtmin <= brownian_tol:
            raise ValueError(
                f"The controller's dtmin={controller.dtmin} must exceed brownian_tol="
                f"{brownian_tol}: the Brownian tree must resolve the smallest step."
            )
    return eqx.tree_at(lambda m: m.controller, mode, controller), brownian_tol
