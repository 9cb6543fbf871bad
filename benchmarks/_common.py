"""Shared helpers for the benchmark scripts: timing, metadata, JSON output."""

import json
import pathlib
import platform
import subprocess
import time

import jax

import scoresde as ss

HERE = pathlib.Path(__file__).parent
RESULTS = HERE / "results"


def load_problem(name: str, dtype=None) -> ss.analytic.GaussianMixture:
    """`ring2d` or `aniso64`, copied from the shared problem set into `benchmarks/`, or `mix64`
    (see `mix64`)."""
    if name == "mix64":
        return mix64(dtype)
    return ss.analytic.GaussianMixture.from_npz(HERE / f"{name}.npz", dtype)


def mix64(dtype=None) -> ss.analytic.GaussianMixture:
    """A 2-component 64-D mixture: means +-0.5 * ones, weights 0.3 / 0.7, diagonal variances
    log-spaced in [0.01, 1] and reversed for the second component."""
    import jax.numpy as jnp
    import numpy as np

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


def timed(fn, *args, repeats: int = 3):
    """(first call seconds, best of `repeats` later calls, last output); blocks on results."""
    start = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return first, best, out


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
        platform=platform.platform(),
        commit=commit,
    )


def write(name: str, payload: dict) -> pathlib.Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float))
    print(f"wrote {path}")
    return path
