"""Exact counts of score evaluations for diffrax solvers, and their conversion to network
evaluations.

JAX has no side effects to count calls at run time, so the count comes from each solver's
structure: `init_evals + num_steps * evals_per_step`, where `num_steps` is diffrax's count of
attempted steps (accepted and rejected). First-same-as-last Runge-Kutta methods reuse their last
stage; we hand diffeqsolve an initial solver state holding that first evaluation, so every step,
the first and every rejected one included, costs exactly `stages - 1`.

Any other solver states its cost by subclassing [`scoresde.AbstractCountedSolver`][] (this
package's exponential integrators do).

A sampler counts its calls of the score; [`network_nfe`][scoresde._nfe.network_nfe] turns them
into network evaluations, the `nfe` every entry point reports: a plain network or callable costs
1 per call, an [`AbstractCostedScore`][scoresde._nfe.AbstractCostedScore] (every guided score)
its declared `nfe_per_call`, a VJP through a network counting as 2.
"""

import abc
import dataclasses
from typing import Any, ClassVar

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp

from . import _diffrax_private
from ._score_calls import Conditioned


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
    sol = _diffrax_private.diffeqsolve(
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


class AbstractCostedScore(eqx.Module):
    """A score, `score(t, x)` or `score(t, x, cond)`, that declares what one call costs in
    network evaluations, `nfe_per_call` (a VJP through a network counting as 2: its forward
    pass is the evaluation that gives the value, its backward pass costs about two more).
    Every guided score is one; any other callable costs 1 per call."""

    @property
    @abc.abstractmethod
    def nfe_per_call(self) -> int:
        """Network evaluations per call."""


def network_evals(score) -> int:
    """Network evaluations of one call of `score`: its declared `nfe_per_call` (an
    [`AbstractCostedScore`][scoresde._nfe.AbstractCostedScore]), that of the score a
    [`Conditioned`][scoresde._score_calls.Conditioned] binds, else 1 (a network or any
    other callable)."""
    if isinstance(score, Conditioned):
        return network_evals(score.score)
    if isinstance(score, AbstractCostedScore):
        return int(score.nfe_per_call)
    return 1


def network_nfe(score, calls):
    """`calls` calls of `score` (an int or an integer array; `-1` where unknown) as network
    evaluations, the `nfe` that every sampler reports: `calls * network_evals(score)`, `-1`
    kept. Calls that are VJPs through the score count 2 each in `calls`."""
    cost = network_evals(score)
    if isinstance(calls, int):
        return calls * cost if calls >= 0 else -1
    calls = jnp.asarray(calls)
    return jnp.where(calls >= 0, calls * cost, calls).astype(calls.dtype)
