r"""Encoding and decoding along the probability-flow ODE: `encode` (x -> z) and `decode` (z -> x).

The PF-ODE `vector_fields.Flow` is integrated in an integration variable $u$
(`integration_variable.py`) between $u(t_\varepsilon)$ and $u(T)$, one `diffeqsolve` per
sample; decoding runs the same flow backwards, in $v = -u$, so that every solver steps forward.
With `diffrax.ReversibleHeun` and fixed steps, decoding from the encoder's final solver state
retraces its steps exactly.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .. import _nfe as _nfe
from .._checks import (
    check_batch,
    check_steps,
    finite_rows,
    raise_if_failed,
    raise_if_not_finite,
)
from .._custom_types import ScoreFn
from .._diffrax_private import diffeqsolve
from .._sampling.sample import SampleResult
from .._score_calls import diagnose_score
from .._sde import AbstractSDE
from .._sharding import map_batch
from .integration_variable import AbstractIntegrationVariable
from .log_likelihood import (
    ATOL,
    MAX_STEPS,
    RTOL,
    SOLVER,
    T_EPS,
    VARIABLE,
    check_common,
    warn_precision,
)
from .step_size_control import pid_controller
from .vector_fields import Flow


class EncodeResult(eqx.Module):
    """Latents from [`scoresde.encode`][]: `z`, `nfe`, `num_steps`, and `solver_state` (the final
    state of `diffrax.ReversibleHeun`, which [`scoresde.decode`][] uses to invert exactly;
    `None` for other solvers)."""

    z: Float[Array, "batch *data"]
    nfe: Int[Array, " batch"]
    num_steps: Int[Array, " batch"]
    solver_state: object = None


@eqx.filter_jit
def _flow(
    *,
    sde,
    score,
    x,
    t_eps,
    rtol,
    atol,
    solver_state,
    solver,
    stepsize_controller,
    steps,
    variable,
    max_steps,
    direction,
    rows=None,
):
    """Integrate the PF-ODE between `t_eps` and `T` (`direction=+1`: encode, `-1`: decode)."""
    dtype = x.dtype
    u_eps = variable.u_of_t(sde, t_eps).astype(dtype)
    u_T = variable.u_of_t(sde, jnp.asarray(sde.T, dtype)).astype(dtype)
    if steps is not None:
        grid = jnp.linspace(u_eps, u_T, steps + 1, dtype=dtype)
        # Decoding runs in v = -u over the same grid, negated (exactly) and reversed.
        grid = grid if direction == 1 else -grid[::-1]
        controller, dt0, max_steps = dfx.StepTo(ts=grid), None, steps
        v0, v1 = grid[0], grid[-1]
    else:
        controller = pid_controller(stepsize_controller, rtol, atol)
        v0, v1 = (u_eps, u_T) if direction == 1 else (-u_T, -u_eps)
        dt0 = (v1 - v0) / 64
    term = dfx.ODETerm(Flow(sde, score, variable, direction))
    reversible = isinstance(solver, dfx.ReversibleHeun)

    def one(xi, state):
        cost = _nfe.evaluation_cost(solver, term, v0, xi)
        if state is None:
            state = _nfe.initial_solver_state(cost, term, v0, xi)
            init = 0
        else:  # ReversibleHeun's (yhat, vf): the vector field flips sign with the direction
            state = (state[0], -state[1])
            init = cost.init
        sol = diffeqsolve(
            term,
            solver,
            v0,
            v1,
            dt0,
            xi,
            stepsize_controller=controller,
            solver_state=state,
            max_steps=max_steps,
            saveat=dfx.SaveAt(t1=True, solver_state=reversible),
            throw=False,
        )
        steps_taken = sol.stats["num_steps"]
        nfe = _nfe.count(cost, steps_taken) - init
        out_state = sol.solver_state if reversible else None
        return sol.ys[0], nfe, steps_taken, sol.result == dfx.RESULTS.successful, out_state

    if solver_state is None:
        out, nfe, steps_taken, ok, state = jax.vmap(lambda xi: one(xi, None))(x)
    else:
        out, nfe, steps_taken, ok, state = jax.vmap(one)(x, solver_state)
    # Per-sample finiteness, read after the call: no host copy of the output for the check.
    return out, nfe, steps_taken, ok, state, finite_rows(out)


def _run_flow(
    name,
    *,
    sde,
    score,
    x,
    solver_state=None,
    solver,
    steps,
    rtol,
    atol,
    t_eps,
    stepsize_controller,
    variable,
    max_steps,
    direction,
    sharding=None,
    chunk_size=None,
):
    variable, max_steps = check_common(
        name,
        sde=sde,
        score=score,
        solver=solver,
        stepsize_controller=stepsize_controller,
        variable=variable,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        max_steps=max_steps,
    )
    x = check_batch("x" if direction == 1 else "z", x)
    if steps is not None:
        steps = check_steps(steps)
    if solver_state is not None and not isinstance(solver, dfx.ReversibleHeun):
        raise ValueError(f"{name}: solver_state is only used with diffrax.ReversibleHeun().")
    warn_precision(x.dtype, t_eps, name)
    dtype = x.dtype
    out, nfe, num_steps, ok, state, finite = map_batch(
        _flow,
        x.shape[0],
        {"x": x, "solver_state": solver_state},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        t_eps=jnp.asarray(t_eps, dtype),
        rtol=jnp.asarray(rtol, dtype),
        atol=jnp.asarray(atol, dtype),
        solver=solver,
        stepsize_controller=stepsize_controller,
        steps=steps,
        variable=variable,
        max_steps=max_steps,
        direction=direction,
    )
    diagnose = diagnose_score(score, t_eps if direction == 1 else sde.T, x)
    out = raise_if_failed(name, ok, out, diagnose=diagnose)
    raise_if_not_finite(
        name, out, hint="use more steps or an adaptive solve.", finite=finite, diagnose=diagnose
    )
    return out, nfe, num_steps.astype(jnp.int32), state


def encode(
    sde: AbstractSDE,
    score: ScoreFn,
    x,
    *,
    solver: dfx.AbstractSolver = SOLVER,
    steps: int | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    t_eps: float = T_EPS,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: AbstractIntegrationVariable | str = VARIABLE,
    max_steps: int = MAX_STEPS,
    sharding=None,
    chunk_size: int | None = None,
) -> EncodeResult:
    r"""Map data `x` at `t_eps` to latents $z = x_T$ along the PF-ODE (deterministic).

    `steps` gives a fixed grid uniform in the integration variable (`variable`, as in
    [`scoresde.log_likelihood`][]); otherwise adaptive steps (`rtol`, `atol` or
    `stepsize_controller`). With `solver=diffrax.ReversibleHeun()` and `steps`, the result's
    `solver_state` lets [`scoresde.decode`][] invert the map exactly up to floating-point
    rounding (the method is algebraically reversible). `sharding`, `chunk_size`: as in
    [`scoresde.log_likelihood`][].

    **Returns:** an [`scoresde.EncodeResult`][] (`z`, `nfe`, `num_steps`, `solver_state`).
    """
    z, nfe, num_steps, state = _run_flow(
        "encode",
        sde=sde,
        score=score,
        x=x,
        solver=solver,
        steps=steps,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        stepsize_controller=stepsize_controller,
        variable=variable,
        max_steps=max_steps,
        direction=1,
        sharding=sharding,
        chunk_size=chunk_size,
    )
    return EncodeResult(z=z, nfe=nfe, num_steps=num_steps, solver_state=state)


def decode(
    sde: AbstractSDE,
    score: ScoreFn,
    z,
    *,
    solver: dfx.AbstractSolver = SOLVER,
    steps: int | None = None,
    rtol: float = RTOL,
    atol: float = ATOL,
    t_eps: float = T_EPS,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: AbstractIntegrationVariable | str = VARIABLE,
    max_steps: int = MAX_STEPS,
    solver_state=None,
    sharding=None,
    chunk_size: int | None = None,
) -> SampleResult:
    r"""Map latents `z` at `T` back to data at `t_eps` along the PF-ODE (inverse of `encode`).

    `z` is an array `(batch, *data_shape)` or an [`scoresde.EncodeResult`][]; from the latter,
    with `diffrax.ReversibleHeun()` and the same `steps`, `variable` and `t_eps` as the
    encoding, decoding retraces the encoder's steps exactly (round trip exact to floating point).
    Other arguments as in [`scoresde.encode`][].

    **Returns:** a [`scoresde.SampleResult`][] (`x`, `nfe`, `num_steps`).
    """
    if isinstance(z, EncodeResult):
        if solver_state is None and isinstance(solver, dfx.ReversibleHeun):
            solver_state = z.solver_state
        z = z.z
    x, nfe, num_steps, _ = _run_flow(
        "decode",
        sde=sde,
        score=score,
        x=z,
        solver_state=solver_state,
        solver=solver,
        steps=steps,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        stepsize_controller=stepsize_controller,
        variable=variable,
        max_steps=max_steps,
        direction=-1,
        sharding=sharding,
        chunk_size=chunk_size,
    )
    return SampleResult(x=x, nfe=nfe, num_steps=num_steps)
