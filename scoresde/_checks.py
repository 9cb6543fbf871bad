"""Argument validation shared by the entry points: clear errors at trace time, and one way to
report a failed solve (raise with advice, or an in-graph error under `jit`).

Plumbing: this module imports no family of the package. The check that an argument is an SDE
lives with the SDEs (`_sde.check_sde_and_score`).
"""

import math
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

ADVICE = (
    "Try a larger t_eps, looser rtol/atol, a larger max_steps, or float64 "
    "(jax.config.update('jax_enable_x64', True))."
)


def is_concrete(value) -> bool:
    """True when `value` is a Python number or a non-traced array."""
    return not isinstance(value, jax.core.Tracer)


def on_host(value):
    """A concrete array as a NumPy array, fetched without compiling an XLA program (a sharded array
    is gathered); `None` for an array that spans processes (not fully addressable here)."""
    if not getattr(value, "is_fully_addressable", True):
        return None
    return np.asarray(value)


def all_finite(value) -> bool:
    """Whether every entry of a concrete array is finite, computed on the host (no compile)."""
    v = on_host(value)
    return bool(jnp.all(jnp.isfinite(value))) if v is None else bool(np.isfinite(v).all())


def check_positive(name: str, value, *, strict: bool = True) -> None:
    if not is_concrete(value):
        return
    v = np.asarray(value)
    ok = np.all(v > 0) if strict else np.all(v >= 0)
    if not (ok and np.all(np.isfinite(v))):
        bound = "> 0" if strict else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}; got {name}={value!r}.")


def check_int(name: str, value, *, minimum: int = 1) -> int:
    """`value` as an `int >= minimum` (a bool is not an int here): `ValueError` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int >= {minimum}; got {name}={value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {name}={value}.")
    return int(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {name}={value!r}.")
    return bool(value)


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


def check_solver(solver, controller=None) -> None:
    if not isinstance(solver, dfx.AbstractSolver):
        raise TypeError(f"solver must be a diffrax solver; got {type(solver).__name__}.")
    if controller is not None and not isinstance(controller, dfx.AbstractStepSizeController):
        raise TypeError(
            f"stepsize_controller must be a diffrax step-size controller; got {controller!r}."
        )


def check_ode_solver(who: str, solver) -> None:
    """`solver` must step one ODE term (its `term_structure` admits a `diffrax.ODETerm`): an SDE
    solver (SRA1, ShARK, SEA, EulerHeun, Milstein, ...) expects a drift and a diffusion term."""
    structure = solver.term_structure
    if not (isinstance(structure, type) and issubclass(dfx.ODETerm, structure)):
        raise TypeError(
            f"{who} integrates the probability-flow ODE, but {type(solver).__name__} is a "
            "solver for SDEs (it steps a drift and a diffusion term): use an ODE solver "
            "(diffrax.Tsit5(), diffrax.Heun(), scoresde.DPMSolver2(), ...), or "
            f"scoresde.sample_sde to sample with {type(solver).__name__}."
        )


def check_tolerances(rtol, atol) -> None:
    """`rtol >= 0`, `atol >= 0`, not both zero (a controller could then accept no step)."""
    check_positive("rtol", rtol, strict=False)
    check_positive("atol", atol, strict=False)
    if is_concrete(rtol) and is_concrete(atol) and float(rtol) == 0 and float(atol) == 0:
        raise ValueError("rtol and atol are both 0: no step could meet that; make one > 0.")


def check_key(key, *, name: str = "key"):
    """A JAX PRNG key: `jax.random.key(...)` (typed) or `jax.random.PRNGKey(...)` (raw uint32)."""
    if isinstance(key, jax.Array) or hasattr(key, "dtype"):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.shape == ():
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
    raise TypeError(
        f"{name} must be one PRNG key, e.g. {name}=jax.random.key(0); got "
        f"{name}={key!r}" + (f" of shape {key.shape}" if hasattr(key, "shape") else "") + "."
    )


def check_latents(x_T, shape, dtype):
    """Given latents: an array of exactly `shape`, finite, cast to `dtype`."""
    if x_T is None:
        return None
    x_T = as_float_array("x_T", x_T).astype(dtype)
    if x_T.shape != shape:
        raise ValueError(f"x_T has shape {x_T.shape}; expected shape={shape}.")
    if is_concrete(x_T) and not all_finite(x_T):
        raise ValueError("x_T contains non-finite values (NaN or inf).")
    return x_T


def as_float_array(name: str, value):
    """`value` as a JAX floating array: integer data is refused (say how to convert), and float64
    input with `jax_enable_x64` off is computed in float32 with a warning saying so."""
    source = getattr(value, "dtype", None)
    x = jnp.asarray(value)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name} has dtype {x.dtype}; it must hold floating-point data (cast it, e.g. "
            f"{name}.astype(jnp.float32); for integer pixel data use scoresde.bits_per_dim, "
            "which states its dequantisation)."
        )
    if source is not None and np.dtype(source) == np.float64 and x.dtype != jnp.float64:
        warnings.warn(
            f"{name} is float64 but jax_enable_x64 is off: computing in float32. Enable "
            "float64 with jax.config.update('jax_enable_x64', True), or pass float32 data.",
            stacklevel=3,
        )
    return x


def check_batch(name: str, value):
    """A finite float32 or float64 batch `(batch, *data_shape)` with `batch >= 1`."""
    x = as_float_array(name, value)
    if jnp.finfo(x.dtype).bits < 32:
        raise TypeError(
            f"{name} has dtype {x.dtype}; scoresde computes in float32 (or float64 with "
            "jax_enable_x64): half precision cannot meet the solvers' tolerances. Pass "
            f"{name}.astype(jnp.float32)."
        )
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"{name} has shape {x.shape}; expected a batch (batch, *data_shape) with batch >= 1 "
            f"(for one sample use {name}[None])."
        )
    if is_concrete(x) and not all_finite(x):
        raise ValueError(f"{name} contains non-finite values (NaN or inf).")
    if not is_concrete(x):
        x = eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"{name} contains non-finite values.")
    return x


def _count_false(flags) -> int:
    """How many entries of a concrete boolean array are False (on the host: no compile)."""
    v = on_host(flags)
    return int(jnp.sum(~flags)) if v is None else int(np.size(v) - np.count_nonzero(v))


# Said under a trace, where the cause cannot be looked for: the score comes before the tolerances.
_TRACED_CAUSE = (
    "If the score returns NaN or inf (check it on a few inputs), fix that first; otherwise: "
)


def raise_if_failed(who: str, ok, out, *, detail: str = "", diagnose=None):
    """Raise `RuntimeError` naming how many solves failed (`ok` False); under a trace, attach
    the same check to `out` with `eqx.error_if`. Returns `out`.

    `diagnose`: a function called only after a failure (on the host), returning the sentence
    that names a non-finite score (`_score_calls.diagnose_score`) or `None`; when it names one,
    the error says that and gives no tolerance advice."""
    if is_concrete(ok):
        failed = _count_false(ok)
        if failed:
            cause = diagnose() if diagnose is not None else None
            raise RuntimeError(
                f"{who}: the solver failed for {failed} of {ok.shape[0]} samples"
                f"{f' ({detail})' if detail else ''}. {cause or ADVICE}"
            )
        return out
    return eqx.error_if(out, ~jnp.all(ok), f"{who}: the solver failed. {_TRACED_CAUSE}{ADVICE}")


def finite_rows(x):
    """Per sample of the batch `x`: whether all its entries are finite (for use inside `jit`, so
    that the check after the call compiles nothing of its own)."""
    return jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)


def raise_if_not_finite(who: str, x, *, hint: str, finite=None, diagnose=None) -> None:
    """Raise `FloatingPointError` if any sample of the batch `x` has a non-finite entry: naming
    a non-finite score if `diagnose` (as in `raise_if_failed`) finds one, else with `hint`.

    `finite`: the per-sample flags `finite_rows(x)` if the jitted solve already returned them;
    otherwise they are computed here, on the host."""
    if not is_concrete(x):
        return
    if finite is None:
        v = on_host(x)
        if v is None:
            finite = finite_rows(x)
        else:
            finite = np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
    bad = _count_false(finite)
    if bad:
        cause = diagnose() if diagnose is not None else None
        why = f". {cause}" if cause else f"; {hint}"
        raise FloatingPointError(f"{who}: {bad} of {x.shape[0]} samples are not finite{why}")
