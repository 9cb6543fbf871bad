"""Argument validation shared by the entry points: clear errors at trace time."""

import math

import jax
import numpy as np


def is_concrete(value) -> bool:
    """True when `value` is a Python number or a non-traced array."""
    return not isinstance(value, jax.core.Tracer)


def check_positive(name: str, value, *, strict: bool = True) -> None:
    if not is_concrete(value):
        return
    v = np.asarray(value)
    ok = np.all(v > 0) if strict else np.all(v >= 0)
    if not (ok and np.all(np.isfinite(v))):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}; got {name}={value!r}.")


def check_t_eps(t_eps, T) -> None:
    """`t_eps` must lie in the open interval (0, T)."""
    if not is_concrete(t_eps):
        return
    v = float(np.asarray(t_eps))
    if not (math.isfinite(v) and 0 < v < T):
        raise ValueError(f"t_eps must lie in (0, sde.T) = (0, {T}); got t_eps={t_eps!r}.")


def check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"steps must be a positive int; got steps={steps!r}.")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got steps={steps}.")
    return int(steps)


def check_shape(shape) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple (num, *data_shape); got shape={shape!r}.") from None
    if len(shape) < 2 or any(s < 1 for s in shape):
        raise ValueError(
            f"shape must be (num, *data_shape) with positive entries; got shape={shape}."
        )
    return shape
