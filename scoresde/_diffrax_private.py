"""Every private piece of diffrax that scoresde relies on, in one place.

diffrax is pinned to the minor version these were checked against (pyproject.toml); a diffrax
upgrade is checked here and nowhere else.

- `WrapTerm`: what `diffeqsolve` wraps each term in (the lanes scheduler steps terms itself with
  the same arithmetic);
- `result_code` / `SUCCESS_CODE`: the integer behind a `diffrax.RESULTS` member (kept in integer
  arrays, e.g. one per lane);
- `clip_floor`: `diffeqsolve` rounds a step that ends within 100 ULPs of `t1` to `t1`.
"""

import diffrax as dfx
import jax.numpy as jnp
from diffrax._term import WrapTerm as WrapTerm


def result_code(result):
    """The int32 code of a `diffrax.RESULTS` value (an array where `result` is one)."""
    return jnp.asarray(result._value, jnp.int32)


SUCCESS_CODE: int = dfx.RESULTS.successful._value  # type: ignore[attr-defined]
MAX_STEPS_CODE: int = dfx.RESULTS.max_steps_reached._value  # type: ignore[attr-defined]


def clip_floor(t1):
    """`t1` minus 100 ULPs, as in diffrax: a step end past it is rounded to `t1`."""
    out = t1
    for _ in range(100):
        out = jnp.nextafter(out, jnp.asarray(-jnp.inf, out.dtype))
    return out
