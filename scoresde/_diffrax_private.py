"""Every private piece of diffrax that scoresde relies on, in one place.

diffrax is pinned to the minor version these were checked against (pyproject.toml); a diffrax
upgrade is checked here and nowhere else.

- `WrapTerm`: what `diffeqsolve` wraps each term in (the lanes scheduler steps terms itself with
  the same arithmetic);
- `result_code` / `SUCCESS_CODE`: the integer behind a `diffrax.RESULTS` member (kept in integer
  arrays, e.g. one per lane);
- `clip_floor`: `diffeqsolve` rounds a step that ends within 100 ULPs of `t1` to `t1`;
- `diffeqsolve`: `diffrax.diffeqsolve` with that floor computed in one step. diffrax computes it
  as 100 chained `prevbefore` calls, unrolled into about 1,500 XLA instructions in every program
  that solves (about 0.3 s of tracing and compilation per first call, measured on a 2-core CPU);
  the closed form below gives the same bits.
"""

import threading
import types

import diffrax as dfx
import diffrax._integrate as _integrate
import jax
import jax.numpy as jnp
from diffrax._term import WrapTerm as WrapTerm

CLIP_ULPS = 100  # diffrax's `loop`: `for _ in range(100): t1_clip_floor = eqxi.prevbefore(...)`


def result_code(result):
    """The int32 code of a `diffrax.RESULTS` value (an array where `result` is one)."""
    return jnp.asarray(result._value, jnp.int32)


SUCCESS_CODE: int = dfx.RESULTS.successful._value  # type: ignore[attr-defined]
MAX_STEPS_CODE: int = dfx.RESULTS.max_steps_reached._value  # type: ignore[attr-defined]


def prevbefore_n(x, n: int):
    r"""`n` successive `equinox.internal.prevbefore(x)` in closed form: with floats ordered as
    integers ($k = \pm$ the magnitude bits, by sign), $k - n$; `prevbefore(0)` is `-tiny`
    (denormals are flushed), so from 0 it is $k(-\mathrm{tiny}) - (n - 1)$."""
    x = jnp.asarray(x)
    itype = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}[x.dtype.itemsize]
    sign_bit = jnp.asarray(jnp.iinfo(itype).min, itype)
    bits = jax.lax.bitcast_convert_type(x, itype)
    magnitude = bits & ~sign_bit
    ordered = jnp.where(bits < 0, -magnitude, magnitude)
    tiny = jax.lax.bitcast_convert_type(jnp.asarray(jnp.finfo(x.dtype).tiny, x.dtype), itype)
    ordered = jnp.where(x == 0, -tiny - (n - 1), ordered - n)
    out = jnp.where(ordered < 0, (-ordered) | sign_bit, ordered)
    return jax.lax.bitcast_convert_type(out, x.dtype)


def clip_floor(t1):
    """`t1` minus 100 ULPs, as in diffrax: a step end past it is rounded to `t1`."""
    return prevbefore_n(t1, CLIP_ULPS)


class _ClipFloorInOneStep(types.ModuleType):
    """`equinox.internal` as diffrax's `_integrate` module sees it, except `prevbefore`: the
    first of `CLIP_ULPS` chained calls records its argument, the next ones pass their argument
    through, and the last returns `clip_floor` of the recorded one. `_integrate` calls
    `prevbefore` nowhere else (checked by tests/test_diffrax_private.py)."""

    def __init__(self, eqxi):
        super().__init__("equinox.internal")
        self._eqxi = eqxi
        self._chain = threading.local()

    def __getattr__(self, name):
        return getattr(self._eqxi, name)

    def prevbefore(self, x):
        chain = self._chain
        count = getattr(chain, "count", 0) + 1
        if count == 1:
            chain.start = x
        if count < CLIP_ULPS:
            chain.count = count
            return x
        chain.count = 0
        return clip_floor(chain.start)


_FAST_EQXI = _ClipFloorInOneStep(_integrate.eqxi)
_swap_lock = threading.RLock()


def diffeqsolve(*args, **kwargs):
    """`diffrax.diffeqsolve`, traced with `_ClipFloorInOneStep` in place of diffrax's 100
    chained `prevbefore` (same result, bit for bit)."""
    with _swap_lock:
        original = _integrate.eqxi
        _FAST_EQXI._chain.count = 0  # a fresh chain, whatever an interrupted trace left
        _integrate.eqxi = _FAST_EQXI
        try:
            return dfx.diffeqsolve(*args, **kwargs)
        finally:
            _integrate.eqxi = original
