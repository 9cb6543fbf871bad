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
    """`ring2d` or `aniso64`, copied from the shared problem set into `benchmarks/`."""
    return ss.analytic.GaussianMixture.from_npz(HERE / f"{name}.npz", dtype)


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
