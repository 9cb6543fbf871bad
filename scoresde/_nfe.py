"""Exact counts of score evaluations for diffrax solvers.

JAX has no side effects to count calls at run time, so the count comes from each solver's
structure: `init_evals + num_steps * evals_per_step`, where `num_steps` is diffrax's count of
attempted steps (accepted and rejected). First-same-as-last Runge-Kutta methods reuse their last
stage; we hand diffeqsolve an initial solver state holding that first evaluation, so every step,
the first and every rejected one included, costs exactly `stages - 1`.

Any other solver states its cost by subclassing [`scoresde.AbstractCountedSolver`][] (this
package's exponential integrators do).
"""

import dataclasses
from typing import Any, ClassVar

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp


class AbstractCountedSolver(dfx.AbstractSolver):
    """A diffrax solver that states its exact cost in score evaluations: `evals_at_init` once
    per solve, then `evals_per_step` for every attempted step (rejected ones included)."""

    evals_at_init: ClassVar[int] = 0
    evals_per_step: eqx.AbstractClassVar[int]


@dataclasses.dataclass(frozen=True)
class EvalCost:
    init: int
    per_step: int
    fsal: bool = False


def evaluation_cost(solver, terms, t0, y0) -> EvalCost | None:
    """Score evaluations of `solver` on `terms`: `None` when unknown (implicit solvers)."""
    if isinstance(solver, AbstractCountedSolver):
        return EvalCost(int(solver.evals_at_init), int(solver.evals_per_step))
    if isinstance(solver, (dfx.Euler, dfx.EulerHeun, dfx.ItoMilstein, dfx.StratonovichMilstein)):
        return EvalCost(0, 1)
    if isinstance(solver, dfx.ReversibleHeun):
        return EvalCost(1, 1)
    if isinstance(solver, dfx.AbstractSRK):
        return EvalCost(0, len(solver.tableau.c) + 1)
    if isinstance(solver, dfx.AbstractRungeKutta):
        tableau = solver.tableau
        tableaus: tuple[Any, ...] = (
            tableau.tableaus if isinstance(tableau, dfx.MultiButcherTableau) else (tableau,)
        )
        if isinstance(solver, dfx.AbstractImplicitSolver):
            return None
        stages = tableaus[0].num_stages
        fsal = all(tab.fsal for tab in tableaus) and not terms.is_vf_expensive(t0, t0, y0, None)
        if fsal:
            return EvalCost(1, stages - 1, fsal=True)
        return EvalCost(0, stages)
    return None


def initial_solver_state(cost: EvalCost | None, terms, t0, y0):
    """For FSAL Runge-Kutta methods, the state `(first_step=False, f0)` with `f0` evaluated once."""
    if cost is None or not cost.fsal:
        return None
    return jnp.array(False), terms.vf(t0, y0, None)


def count(cost: EvalCost | None, num_steps):
    """Score evaluations after `num_steps` attempted steps; -1 where the cost is unknown."""
    if cost is None:
        return jnp.full(jnp.shape(num_steps), -1, jnp.int32)
    return (cost.init + cost.per_step * num_steps).astype(jnp.int32)


def counted_diffeqsolve(terms, solver, t0, t1, dt0, y0, **kwargs):
    """`diffrax.diffeqsolve(..., throw=False)` and the exact score evaluations it made (`-1` if
    unknown). FSAL methods start from `initial_solver_state`, so the count holds for every step."""
    cost = evaluation_cost(solver, terms, t0, y0)
    sol = dfx.diffeqsolve(
        terms,
        solver,
        t0,
        t1,
        dt0,
        y0,
        solver_state=initial_solver_state(cost, terms, t0, y0),
        throw=False,
        **kwargs,
    )
    return sol, count(cost, sol.stats["num_steps"])
