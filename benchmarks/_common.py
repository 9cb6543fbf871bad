"""Shared helpers for the benchmark scripts: problems, timing, metadata, JSON output.

Run a script from the repository root (`python benchmarks/x.py`): this module puts the checkout
that holds it first on `sys.path`, so the scripts time this checkout's `scoresde`.
"""

import json
import math
import pathlib
import platform
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import scoresde as ss  # noqa: E402

RESULTS = HERE / "results"
DATA = ROOT / "scoresde" / "_bench" / "data"  # the package's copy of the shared problem set


def load_npz(name: str):
    """The arrays of the shared problem `name` (`ring2d`, `aniso64`) from the package's copy."""
    return np.load(DATA / f"{name}.npz")


def load_problem(name: str, dtype=None) -> ss.analytic.GaussianMixture:
    """`ring2d` or `aniso64` from the package's problem set, or `mix64` (see `mix64`)."""
    if name == "mix64":
        return mix64(dtype)
    return ss.analytic.GaussianMixture.from_npz(DATA / f"{name}.npz", dtype)


def mix64(dtype=None) -> ss.analytic.GaussianMixture:
    """A 2-component 64-D mixture: means +-0.5 * ones, weights 0.3 / 0.7, diagonal variances
    log-spaced in [0.01, 1] and reversed for the second component."""
    import jax.numpy as jnp

    dtype = jnp.result_type(float) if dtype is None else dtype
    dim = 64
    var = np.logspace(-2, 0, dim)
    means = np.stack([0.5 * np.ones(dim), -0.5 * np.ones(dim)])
    eigvecs = np.broadcast_to(np.eye(dim), (2, dim, dim))
    return ss.analytic.GaussianMixture(
        jnp.asarray([0.3, 0.7], dtype),
        jnp.asarray(means, dtype),
        eigvecs=jnp.asarray(eigvecs, dtype),
        eigvals=jnp.asarray(np.stack([var, var[::-1]]), dtype),
    )


def block(out):
    """Wait for every array in the pytree `out` (other leaves are skipped); returns `out`."""
    jax.block_until_ready([leaf for leaf in jax.tree.leaves(out) if isinstance(leaf, jax.Array)])
    return out


def interleaved(fns: dict, rounds: int):
    """Call each of `fns` (zero-argument callables) once to compile, then time them in `rounds`
    interleaved rounds, so that load changes on a shared machine hit every one alike.

    Returns `(outputs, first-call seconds, per-round seconds)`, dicts keyed like `fns`; summarise
    the rounds with `spread`, and compare two with `ratio` (round by round).
    """
    outs, firsts = {}, {}
    for k, f in fns.items():
        start = time.perf_counter()
        outs[k] = block(f())
        firsts[k] = time.perf_counter() - start
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            start = time.perf_counter()
            block(f())
            times[k].append(time.perf_counter() - start)
    return outs, firsts, times


def timed(fn, *args, repeats: int = 3):
    """`(first-call seconds, best of `repeats` later calls, first output)` of `fn(*args)`;
    `interleaved` with one function (best is `inf` when `repeats` is 0)."""
    outs, firsts, times = interleaved({"fn": lambda: fn(*args)}, repeats)
    return firsts["fn"], min(times["fn"], default=math.inf), outs["fn"]


def spread(values) -> dict:
    """`min`, `median` and `max` of per-round figures: the interval a table reports."""
    values = list(values)
    return dict(min=min(values), median=statistics.median(values), max=max(values))


def ratio(times_a, times_b) -> dict:
    """`spread` of the round-by-round ratios `a / b` of two `interleaved` timings."""
    return spread(a / b for a, b in zip(times_a, times_b, strict=True))


def metadata(**parameters) -> dict:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip()
    except OSError:
        commit = "unknown"
    return dict(
        parameters=parameters,
        versions={
            "scoresde": ss.__version__,
            "jax": jax.__version__,
            "python": platform.python_version(),
        },
        device=str(jax.devices()[0]),
        cpu_count=__import__("os").cpu_count(),
        load_average=__import__("os").getloadavg(),
        platform=platform.platform(),
        commit=commit,
    )


def write(name: str, payload: dict) -> pathlib.Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {path}")
    return path
