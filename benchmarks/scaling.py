"""Strong and weak scaling of the sharded entry points over forced host devices 1, 2, 4.

    python benchmarks/scaling.py [--quick]

Each device count runs in its own subprocess (`XLA_FLAGS=--xla_force_host_platform_device_count=N`
is read when JAX starts). CPU "devices" are threads sharing this machine's cores (two here), so
the figures show the OVERHEAD of the sharded path, not a speed-up. Measured, per device count:

- adaptive `sample_ode` and `log_likelihood` on `ring2d`: samples/s at a fixed total batch
  (strong) and at a fixed batch per device (weak); a `fit` step (data parallel) in steps/s;
- on 1 device: the sharded path against the unsharded call (ratio; goal <= 1.05);
- on the largest count: `shard_map` (each device its own adaptive loop) against plain automatic
  partitioning (jit with in/out shardings of the same vmapped solve, whose loop runs until the
  globally slowest sample ends), on `ring2d` whose per-sample NFE varies.

Writes `benchmarks/results/scaling.json` (or `scaling_quick.json`).
"""

import json
import os
import subprocess
import sys

COUNTS = (1, 2, 4)


def worker(n: int, quick: bool) -> dict:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
    import jax
    import jax.numpy as jnp
    from _common import load_problem, timed
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    import scoresde as ss

    sde = ss.VPSDE()
    problem = load_problem("ring2d")
    score = ss.analytic.marginal_score(problem, sde)
    key = jax.random.key(0)
    mesh = jax.make_mesh((n,), ("batch",))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    repeats = 1 if quick else 3
    strong = 256 if quick else 2048
    per_device = 64 if quick else 512
    x_data = problem.sample(jax.random.key(1), strong)
    out: dict = {"devices": n, "strong_batch": strong, "weak_batch_per_device": per_device}

    def rate(fn, num):
        first, best, _ = timed(fn, repeats=repeats)
        return {"first_s": first, "best_s": best, "per_s": num / best}

    for scaling, num in (("strong", strong), ("weak", per_device * n)):
        out[f"sample_ode_{scaling}"] = rate(
            lambda num=num: ss.sample_ode(sde, score, key=key, shape=(num, 2), sharding=sharding).x,
            num,
        )
        x = problem.sample(jax.random.key(1), num)
        out[f"log_likelihood_{scaling}"] = rate(
            lambda x=x: ss.log_likelihood(sde, score, x, key=key, sharding=sharding).log_prob, num
        )
    model = ss.MLPScoreNet(2, key=jax.random.key(2))
    loss = ss.DenoisingScoreMatching(sde)
    fit_steps = 20 if quick else 100

    def train():
        return ss.fit(
            model, loss, x_data, key=key, steps=fit_steps, batch_size=256, progress=False,
            steps_per_call=fit_steps, sharding=sharding,
        ).losses  # fmt: skip

    out["fit"] = rate(train, fit_steps)  # per_s: steps/s

    if n == 1:  # the sharded path's overhead on one device
        plain = rate(lambda: ss.sample_ode(sde, score, key=key, shape=(strong, 2)).x, strong)
        out["unsharded_sample_ode"] = plain
        out["overhead_sample_ode"] = out["sample_ode_strong"]["best_s"] / plain["best_s"]
        plain = rate(lambda: ss.log_likelihood(sde, score, x_data, key=key).log_prob, strong)
        out["unsharded_log_likelihood"] = plain
        out["overhead_log_likelihood"] = out["log_likelihood_strong"]["best_s"] / plain["best_s"]
    if n == max(COUNTS):  # shard_map against automatic partitioning, varying per-sample NFE
        auto = NamedSharding(
            jax.make_mesh((n,), ("batch",), axis_types=(AxisType.Auto,)), PartitionSpec("batch")
        )
        x_T = jax.device_put(jax.random.normal(key, (strong, 2)), auto)
        automatic = jax.jit(
            lambda x_T: ss.sample_ode(sde, score, key=key, shape=(strong, 2), x_T=x_T).x,
            in_shardings=auto,
            out_shardings=auto,
        )
        per_sample = ss.sample_ode(sde, score, key=key, shape=(strong, 2), x_T=x_T).nfe
        out["nfe_spread"] = {
            "min": int(jnp.min(per_sample)),
            "max": int(jnp.max(per_sample)),
            "mean": float(jnp.mean(per_sample)),
        }
        out["automatic_sample_ode"] = rate(lambda: automatic(x_T), strong)
        mapped = rate(
            lambda: (
                ss.sample_ode(sde, score, key=key, shape=(strong, 2), x_T=x_T, sharding=sharding).x
            ),
            strong,
        )
        out["shard_map_sample_ode_same_latents"] = mapped
        out["automatic_over_shard_map"] = out["automatic_sample_ode"]["best_s"] / mapped["best_s"]
    return out


def main(quick: bool) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for n in COUNTS:
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}
        args = [sys.executable, os.path.abspath(__file__), "--worker", str(n)]
        proc = subprocess.run(
            args + (["--quick"] if quick else []), env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base = rows[0]
    print("CPU 'devices' share this machine's cores: the figures show overhead, not speed-up.")
    print(f"{'devices':>7} {'ode strong/s':>12} {'ode weak/s':>10} {'nll strong/s':>12} "
          f"{'nll weak/s':>10} {'fit steps/s':>11}")  # fmt: skip
    for r in rows:
        print(
            f"{r['devices']:>7} {r['sample_ode_strong']['per_s']:>12.1f} "
            f"{r['sample_ode_weak']['per_s']:>10.1f} {r['log_likelihood_strong']['per_s']:>12.1f} "
            f"{r['log_likelihood_weak']['per_s']:>10.1f} {r['fit']['per_s']:>11.2f}"
        )
    print(f"sharded path on 1 device / unsharded: sample_ode {base['overhead_sample_ode']:.3f}, "
          f"log_likelihood {base['overhead_log_likelihood']:.3f} (goal <= 1.05)")  # fmt: skip
    last = rows[-1]
    print(
        f"automatic partitioning / shard_map on {last['devices']} devices (sample_ode, NFE "
        f"{last['nfe_spread']['min']}..{last['nfe_spread']['max']}): "
        f"{last['automatic_over_shard_map']:.3f}"
    )
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import metadata, write

    write(
        "scaling_quick" if quick else "scaling",
        {
            **metadata(quick=quick, counts=COUNTS),
            "note": "CPU devices share the machine's cores: overhead, not speed-up.",
            "rows": rows,
        },
    )


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    if "--worker" in sys.argv:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        n = int(sys.argv[sys.argv.index("--worker") + 1])
        print(json.dumps(worker(n, quick), default=float))
    else:
        main(quick)
