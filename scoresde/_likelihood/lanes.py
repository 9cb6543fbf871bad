r"""Many independent adaptive ODE solves on a fixed number of lanes, refilled as samples finish.

`jax.vmap` of an adaptive `diffrax.diffeqsolve` runs one `while_loop` over the whole batch, so
every sample keeps stepping (its result masked) until the SLOWEST one is done: the cost is
$\max_i \mathrm{NFE}_i$ times one batched evaluation. Here a jitted loop drives `L` lanes; each
lane integrates one sample with its own steps, using the solver's `step` and the step-size
controller's `init` / `adapt_step_size` exactly as `diffrax`'s own loop does (so any explicit
diffrax ODE solver and controller works, with the same per-sample arithmetic). When a lane
reaches `t1` (or fails, or runs out of `max_steps`) it writes its result and loads the next
unprocessed sample, so the cost is about $\sum_i \mathrm{NFE}_i / L$ lane-batched evaluations
plus a tail.

New samples are initialised (probes, first step, the first-same-as-last evaluation of FSAL
methods) in a compacted batch of at most `refill` lanes per loop iteration, so a refill costs
one evaluation on `refill` lanes rather than on all `L`.

No gradients: the loop is a plain `lax.while_loop` (use the vmapped `diffeqsolve` and a diffrax
adjoint to differentiate).
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.lax as lax
import jax.numpy as jnp
import jax.tree_util as jtu

from .. import _nfe as _nfe
from .._diffrax_private import (
    MAX_STEPS_CODE,
    SUCCESS_CODE,
    WrapTerm,
    clip_floor as _clip_floor,
    result_code,
)


class _Lane(eqx.Module):
    index: jax.Array  # sample index; `batch` when idle
    params: object  # per-sample parameters of the term (e.g. probes)
    y: object
    tprev: jax.Array
    tnext: jax.Array
    solver_state: object
    controller_state: object
    made_jump: jax.Array
    num_steps: jax.Array
    result: jax.Array  # diffrax RESULTS code (int32)


def lane_diffeqsolve(
    make_term,
    setup,
    inputs,
    solver,
    t0,
    t1,
    dt0,
    *,
    stepsize_controller,
    max_steps: int,
    lanes: int,
    refill: int | None = None,
):
    """Solve `batch` independent ODEs from `t0` to `t1 > t0` on `lanes` refilled lanes.

    **Arguments:**

    - `make_term(params) -> diffrax term` for one sample; `setup(input) -> (params, y0)` for one
      sample, with `inputs` a pytree of arrays with a leading batch axis.
    - `solver`, `stepsize_controller`, `dt0`, `max_steps`: as in `diffrax.diffeqsolve`.
    - `lanes`: samples integrated at once; `refill`: most samples initialised per iteration
      (default `max(lanes // 4, 1)`).

    **Returns:** `(y1, num_steps, nfe, status)` per sample: the state at `t1`, attempted steps,
    exact vector-field evaluations (`-1` if unknown, see `_nfe`) and diffrax's result code
    (`RESULTS.max_steps_reached` where `max_steps` ran out).
    """
    batch = jtu.tree_leaves(inputs)[0].shape[0]
    lanes = int(min(lanes, batch))
    refill = int(min(refill or max(lanes // 4, 1), lanes))
    direction = jnp.where(t0 < t1, 1, -1)  # diffeqsolve's wrapping, for identical arithmetic
    t0, t1, dt0 = t0 * direction, t1 * direction, dt0 * direction
    controller = stepsize_controller.wrap(direction)
    t1_clip_floor = _clip_floor(t1)
    first_input = jtu.tree_map(lambda a: a[0], inputs)
    params0, y00 = setup(first_input)
    cost = _nfe.evaluation_cost(solver, make_term(params0), t0, y00)

    def wrapped(params):
        return WrapTerm(make_term(params), direction)

    def init_lane(index, inp):
        params, y0 = setup(inp)
        terms = wrapped(params)
        error_order = solver.error_order(terms)
        tnext, controller_state = controller.init(
            terms, t0, t1, y0, dt0, None, solver.func, error_order
        )
        tnext = jnp.minimum(tnext, t1)
        if cost is not None and cost.fsal:
            solver_state = (jnp.array(False), terms.vf(t0, y0, None))
        else:
            solver_state = solver.init(terms, t0, tnext, y0, None)
        return _Lane(
            index=jnp.asarray(index, jnp.int32),
            params=params,
            y=y0,
            tprev=jnp.asarray(t0, jnp.result_type(tnext)),
            tnext=tnext,
            solver_state=solver_state,
            controller_state=controller_state,
            made_jump=jnp.array(False),
            num_steps=jnp.array(0, jnp.int32),
            result=jnp.array(SUCCESS_CODE, jnp.int32),
        )

    def step_lane(lane):
        """One attempted step, book-kept as in diffrax's loop."""
        terms = wrapped(lane.params)
        y, y_error, _, solver_state, solver_result = solver.step(
            terms, lane.tprev, lane.tnext, lane.y, None, lane.solver_state, lane.made_jump
        )
        y_error = jtu.tree_map(lambda e: jnp.where(jnp.isnan(e), jnp.inf, e), y_error)
        keep_step, tprev, tnext, made_jump, controller_state, controller_result = (
            controller.adapt_step_size(
                lane.tprev,
                lane.tnext,
                lane.y,
                y,
                None,
                y_error,
                solver.error_order(terms),
                lane.controller_state,
            )
        )
        tprev = jnp.minimum(tprev, t1)
        clip = tnext > t1_clip_floor
        tnext = jnp.where(clip, jnp.where(keep_step, t1, tprev + 0.5 * (t1 - tprev)), tnext)
        keep = lambda a, b: jnp.where(keep_step, a, b)  # noqa: E731
        y = jtu.tree_map(keep, y, lane.y)
        solver_state = jtu.tree_map(keep, solver_state, lane.solver_state)
        made_jump = jnp.where(keep_step, made_jump, lane.made_jump)
        solver_result = dfx.RESULTS.where(keep_step, solver_result, dfx.RESULTS.successful)
        ok = SUCCESS_CODE
        result = jnp.where(lane.result == ok, result_code(solver_result), lane.result)
        result = jnp.where(result == ok, result_code(controller_result), result)
        num_steps = lane.num_steps + 1
        out_of_steps = (num_steps >= max_steps) & (tprev < t1) & (result == ok)
        result = jnp.where(out_of_steps, MAX_STEPS_CODE, result)
        new = _Lane(
            index=lane.index,
            params=lane.params,
            y=y,
            tprev=tprev,
            tnext=tnext,
            solver_state=solver_state,
            controller_state=controller_state,
            made_jump=made_jump,
            num_steps=num_steps,
            result=result.astype(jnp.int32),
        )
        return new, (tprev >= t1) | (result != ok)

    def take(tree, idx):
        return jtu.tree_map(lambda a: a[idx], tree)

    first = jnp.arange(lanes, dtype=jnp.int32)
    state = jax.vmap(init_lane)(first, take(inputs, first))
    y_struct = jtu.tree_map(lambda a: a[0], state.y)
    outputs = (
        jtu.tree_map(lambda a: jnp.zeros((batch, *a.shape), a.dtype), y_struct),
        jnp.zeros((batch,), jnp.int32),
        jnp.zeros((batch,), jnp.int32),
    )

    def cond(carry):
        _, _, _, num_done = carry
        return num_done < batch

    def body(carry):
        state, outputs, next_id, num_done = carry
        active = state.index < batch
        stepped, finished = jax.vmap(step_lane)(state)
        # Idle lanes keep their (finished) state unchanged.
        state = jtu.tree_map(
            lambda new, old: jnp.where(
                active.reshape(active.shape + (1,) * (new.ndim - 1)), new, old
            ),
            stepped,
            state,
        )
        done = active & finished
        write = jnp.where(done, state.index, batch)
        outputs = (
            jtu.tree_map(lambda o, v: o.at[write].set(v, mode="drop"), outputs[0], state.y),
            outputs[1].at[write].set(state.num_steps, mode="drop"),
            outputs[2].at[write].set(state.result, mode="drop"),
        )
        num_done = num_done + jnp.sum(done, dtype=jnp.int32)
        index = jnp.where(done, batch, state.index)
        state = eqx.tree_at(lambda s: s.index, state, index)
        free = index >= batch

        def load(state):
            (slots,) = jnp.nonzero(free, size=refill, fill_value=lanes)
            ids = next_id + jnp.arange(refill, dtype=jnp.int32)
            valid = (slots < lanes) & (ids < batch)
            fresh = jax.vmap(init_lane)(ids, take(inputs, jnp.minimum(ids, batch - 1)))
            target = jnp.where(valid, slots, lanes)
            state = jtu.tree_map(lambda s, f: s.at[target].set(f, mode="drop"), state, fresh)
            return state, jnp.sum(valid, dtype=jnp.int32)

        state, loaded = lax.cond(
            jnp.any(free) & (next_id < batch),
            load,
            lambda s: (s, jnp.array(0, jnp.int32)),
            state,
        )
        return state, outputs, next_id + loaded, num_done

    carry = (state, outputs, jnp.array(lanes, jnp.int32), jnp.array(0, jnp.int32))
    _, (y1, num_steps, status), _, _ = lax.while_loop(cond, body, carry)
    return y1, num_steps, _nfe.count(cost, num_steps), status
