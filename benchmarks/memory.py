"""Peak memory against batch size, with and without `chunk_size=`.

    python benchmarks/memory.py [--quick]

A batch larger than memory streams through `chunk_size` rows at a time with the same results
(tests/test_sharding.py checks the equality). This measures what it buys: each configuration
runs in a fresh subprocess (so compiled buffers and allocator caches of one do not count against
another) and reports

- `peak_rss_mb`: the process's peak resident set (`ru_maxrss`) after the call (its compilation
  included), minus the peak after `import scoresde` and a warm-up call of the same entry point
  on 4 rows (the runtime's fixed cost); CPU backend, float32;
- `state_mb`: the size of the batch itself (`batch * d * 4` bytes), for scale.

Problem: an isotropic Gaussian in d = 3072 (a 32x32x3 image's size) with its exact score, so the
score costs nothing and the memory is the sampler's own: adaptive `sample_ode` (Tsit5, rtol =
atol = 1e-5: seven stage buffers per sample) and `log_likelihood` (Hutchinson, one probe).
Writes `benchmarks/results/memory.json` (or `memory_quick.json`).
"""

import json
import resource
import subprocess
import sys

D = 3072


def worker(entry: str, batch: int, chunk: int | None) -> dict:
    import jax
    from _common import timed

    import scoresde as ss

    sde = ss.VPSDE()
    var = 0.25

    def score(t, x):  # exact diffused score of N(0, var I), written without the D x D matrix
        alpha, sigma = sde.marginal(t)
        return -x / (alpha**2 * var + sigma**2)

    key = jax.random.key(0)

    def call(n, chunk_size):
        if entry == "sample_ode":
            out = ss.sample_ode(sde, score, key=key, shape=(n, D), chunk_size=chunk_size)
            return out.x
        x = 0.5 * jax.random.normal(jax.random.key(1), (n, D))
        return ss.log_likelihood(sde, score, x, key=key, chunk_size=chunk_size).log_prob

    jax.block_until_ready(call(4, None))  # warm-up: the runtime's fixed cost
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, _, _ = timed(call, batch, chunk, repeats=0)  # one call: its first
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"entry": entry, "batch": batch, "chunk_size": chunk,
            "peak_rss_mb": (peak - base) / 1024, "state_mb": batch * D * 4 / 2**20,
            "wall_s": wall}  # fmt: skip


def main(quick: bool) -> None:
    batches = (256, 1024) if quick else (256, 1024, 4096)
    chunk = 256
    rows = []
    for entry in ("sample_ode", "log_likelihood"):
        for batch in batches:
            for c in (None, chunk):
                if c is not None and c >= batch:
                    continue
                cmd = [sys.executable, __file__, "--worker", entry, str(batch), str(c)]
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                row = json.loads(res.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{entry:>15} batch {batch:>5} chunk {str(c):>5}: peak +{row['peak_rss_mb']:8.1f} MB"
                      f" (batch itself {row['state_mb']:6.1f} MB), {row['wall_s']:.1f} s", flush=True)  # fmt: skip
    name = "memory_quick.json" if quick else "memory.json"
    path = __file__.rsplit("/", 1)[0] + "/results/" + name
    with open(path, "w") as f:
        json.dump({"d": D, "dtype": "float32", "backend": "cpu", "rows": rows}, f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        entry, batch, chunk = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        print(json.dumps(worker(entry, batch, None if chunk == "None" else int(chunk))))
    else:
        main("--quick" in sys.argv)
