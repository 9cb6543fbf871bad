"""Wall-clock timing of a jitted call, written once: compiled by a first call, then the fastest of
a few more (the least disturbed by other work on the machine)."""

import math
import time

import jax


def timed_after_compile(run, repeats: int):
    """`(result, first, fastest)`: `run()`'s first result, that first call's seconds
    (compilation included) and the fastest of `repeats` further calls, each waited for
    (`jax.block_until_ready` on the whole result)."""
    started = time.perf_counter()
    result = jax.block_until_ready(run())
    first = time.perf_counter() - started
    fastest = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(run())
        fastest = min(fastest, time.perf_counter() - started)
    return result, first, fastest
