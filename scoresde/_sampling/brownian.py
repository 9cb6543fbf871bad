"""Brownian paths: a cheap one for fixed-step sampling of a whole batch at once
(`BatchBrownianPath`), and a tree read exactly on a grid of integer times (`grid_brownian`, for
`sample_sde_adaptive`, whose step ends lie on such a grid).

`BatchBrownianPath`: each sample `i` of the batch owns a key; the increment over `[t0, t1]` is drawn from
`fold_in(key_i, hash(bits(t0), bits(t1)))`, so a sample's noise depends only on its own key
and on the step, never on the batch it sits in. Like `diffrax.UnsafeBrownianPath`, increments
over different intervals are independent draws: the path is exact for a fixed grid whose
steps are each evaluated once as a whole, and wrong for adaptive steps (use
`diffrax.VirtualBrownianTree`, or `grid_brownian` where step ends lie on a grid).
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


def grid_brownian(key, n, levels: int, shape, dtype, clock=None):
    r"""$W(c(n))$, a Brownian motion read at grid index `n` (an integer in $[0, 2^L]$, $L$ =
    `levels`) of a monotone clock $c$ with $c(0) = 0$: default $c(n) = n$ (in quanta).

    A Brownian tree over the grid: $W(c(2^L)) = \sqrt{c(2^L)}\,z_0$, and the node halving
    $[a, b]$ at $m$ draws the bridge $W(c(m)) \mid W(c(a)), W(c(b))$, mean
    $W_a + \tfrac{c_m - c_a}{c_b - c_a}(W_b - W_a)$, variance
    $\tfrac{(c_m - c_a)(c_b - c_m)}{c_b - c_a}$, from `fold_in(key, m)`. After $L$ halvings `n`
    is a node: its value is exact, never interpolated within a leaf, so two reads at the same
    integer agree to the rounding of the $L$ bridges (bitwise, with the default clock, whose
    fractions and variances are exact powers of two), however the caller rounds its own state.
    Cost: $L$ normal draws of `shape` per read.
    """
    top = 2**levels
    c = (lambda q: q.astype(dtype)) if clock is None else clock
    total = c(jnp.asarray(top, jnp.int32))
    w_top = jnp.sqrt(total) * jr.normal(jr.fold_in(key, 0), shape, dtype)

    def halve(_, carry):
        lo, hi, w_lo, w_hi = carry
        mid = (lo + hi) // 2
        c_lo, c_mid, c_hi = c(lo), c(mid), c(hi)
        left, span = c_mid - c_lo, c_hi - c_lo
        safe = jnp.where(span > 0, span, jnp.ones_like(span))
        frac = jnp.clip(left / safe, 0, 1)
        var = jnp.maximum(left * (c_hi - c_mid) / safe, 0)
        z = jr.normal(jr.fold_in(key, mid), shape, dtype)
        w_mid = (w_lo + frac * (w_hi - w_lo) + jnp.sqrt(var) * z).astype(dtype)
        right = n >= mid
        return (
            jnp.where(right, mid, lo),
            jnp.where(right, hi, mid),
            jnp.where(right, w_mid, w_lo),
            jnp.where(right, w_hi, w_mid),
        )

    zero = jnp.asarray(0, jnp.int32)
    init = (zero, jnp.asarray(top, jnp.int32), jnp.zeros(shape, dtype), w_top)
    lo, _, w_lo, w_hi = jax.lax.fori_loop(0, levels, halve, init)
    return jnp.where(n == lo, w_lo, w_hi)
