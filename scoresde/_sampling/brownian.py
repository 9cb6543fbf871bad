"""A cheap Brownian path for fixed-step sampling of a whole batch at once.

Each sample `i` of the batch owns a key; the increment over `[t0, t1]` is drawn from
`fold_in(key_i, hash(bits(t0), bits(t1)))`, so a sample's noise depends only on its own key
and on the step, never on the batch it sits in. Like `diffrax.UnsafeBrownianPath`, increments
over different intervals are independent draws: the path is exact for a fixed grid whose
steps are each evaluated once as a whole, and wrong for adaptive steps (use
`diffrax.VirtualBrownianTree` there).
"""

import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr


def _bits(t):
    t = jnp.asarray(t)
    itype = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[t.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(t, itype)
    return (
        bits.astype(jnp.uint32)
        if itype is not jnp.int64
        else (bits ^ (bits >> 32)).astype(jnp.uint32)
    )


class BatchBrownianPath(dfx.AbstractBrownianPath):
    """Independent Brownian increments per batch element, for fixed-step solves.

    **Arguments:**

    - `keys`: one key per sample, shape `(batch,)`.
    - `shape`: the batch's shape `(batch, *data)`; `dtype` its float dtype.
    - `levy_area`: `diffrax.BrownianIncrement` or `diffrax.SpaceTimeLevyArea` (SRA1, ShARK, SEA).
    """

    # mypy reads the base class's abstract `levy_area` as a defaulted field (not so at run time).
    keys: jax.Array  # type: ignore[misc]  # one key per sample, (batch,)
    shape: tuple[int, ...] = eqx.field(static=True)  # type: ignore[misc]
    dtype: jnp.dtype = eqx.field(static=True)  # type: ignore[misc]
    levy_area: type = eqx.field(static=True, default=dfx.BrownianIncrement)

    @property
    def t0(self):
        return -jnp.inf

    @property
    def t1(self):
        return jnp.inf

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        del left
        if t1 is None:
            raise ValueError("BatchBrownianPath only gives increments: pass both t0 and t1.")
        t0 = jax.lax.stop_gradient(jnp.asarray(t0, self.dtype))
        t1 = jax.lax.stop_gradient(jnp.asarray(t1, self.dtype))
        dt = t1 - t0
        std = jnp.sqrt(dt)
        data_shape = self.shape[1:]
        with_h = self.levy_area is dfx.SpaceTimeLevyArea

        # One fold_in per sample and step: the interval's two ends hashed into one word.
        word = _bits(t0) * jnp.uint32(0x9E3779B1) + _bits(t1)

        def draw(key):
            key = jr.fold_in(key, word)
            if not with_h:
                return std * jr.normal(key, data_shape, self.dtype), None
            key_w, key_h = jr.split(key)
            w = std * jr.normal(key_w, data_shape, self.dtype)
            h = std / math.sqrt(12) * jr.normal(key_h, data_shape, self.dtype)
            return w, h

        w, h = jax.vmap(draw)(self.keys)
        if not use_levy:
            return w
        if with_h:
            return dfx.SpaceTimeLevyArea(dt=dt, W=w, H=h)
        return dfx.BrownianIncrement(dt=dt, W=w)
