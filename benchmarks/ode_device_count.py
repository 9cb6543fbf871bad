"""Adaptive probability-flow ODE solves against the device count: 1 device (unsharded) against
`sharding=` over 4 forced host devices, and against `chunk_size=` (a vmap of another width, no
devices), on batches of 48 and 50 (4 does not divide 50: padding).

Entry points (default tolerances, float32, 3-D mixture with an exact score, VP SDE):
`sample_ode` (Tsit5 + PIDController), `log_likelihood` (Dopri5, one Rademacher probe),
`log_likelihood` with the exact divergence and with two probes, `encode`, `decode` (Dopri5 +
PIDController), and, as a control, `sample_ode` with 24 fixed steps.

Per entry and batch: `samples_differing` (rows not bitwise equal), `max_abs` / `max_rel` (the
largest difference of the main output, absolute and over max|ref|), `max_ulps` (in units of the
last place of each reference entry), `steps_differing` (rows whose `num_steps` differ) and
`max_step_diff`.

Run: `python benchmarks/ode_device_count.py [--tag NAME] [--batches 48,50] [--only a,b]
[--data-key K]` (`--data-key`: the key of the likelihood and encoding data, default 1); writes
`benchmarks/results/ode_device_count[_NAME].json`.
"""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import metadata, write  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

import scoresde as ss  # noqa: E402

SDE = ss.VPSDE()
MIX3 = ss.analytic.GaussianMixture(
    jnp.array([0.3, 0.5, 0.2]),
    jnp.array([[1.5, 0.0, -0.5], [-1.0, 1.0, 0.0], [0.0, -1.5, 1.0]]),
    jnp.stack([0.05 * jnp.eye(3), 0.3 * jnp.eye(3), jnp.diag(jnp.array([0.02, 0.5, 0.1]))]),
)
SCORE = ss.analytic.marginal_score(MIX3, SDE)
KEY = jax.random.key(0)


def four():
    mesh = jax.make_mesh((4,), ("batch",), devices=jax.devices()[:4])
    return NamedSharding(mesh, PartitionSpec("batch"))


def entries(num, data_key=1):
    data = MIX3.sample(jax.random.key(data_key), num)
    latents = SDE.prior_sample(jax.random.key(2), (num, 3))
    return {
        "sample_ode": (lambda **kw: ss.sample_ode(SDE, SCORE, key=KEY, shape=(num, 3), **kw), "x"),
        "sample_ode_fixed": (
            lambda **kw: ss.sample_ode(SDE, SCORE, key=KEY, shape=(num, 3), steps=24, **kw),
            "x",
        ),
        "log_likelihood": (
            lambda **kw: ss.log_likelihood(SDE, SCORE, data, key=KEY, **kw),
            "log_prob",
        ),
        "log_likelihood_exact": (
            lambda **kw: ss.log_likelihood(SDE, SCORE, data, divergence=ss.ExactDivergence(), **kw),
            "log_prob",
        ),
        "log_likelihood_2probes": (
            lambda **kw: ss.log_likelihood(
                SDE, SCORE, data, key=KEY, divergence=ss.Hutchinson(num_probes=2), **kw
            ),
            "log_prob",
        ),
        "encode": (lambda **kw: ss.encode(SDE, SCORE, data, **kw), "z"),
        "decode": (lambda **kw: ss.decode(SDE, SCORE, latents, **kw), "x"),
    }


def compare(a, b, field):
    xa, xb = np.asarray(getattr(a, field)), np.asarray(getattr(b, field))
    rows = lambda d: d.reshape(d.shape[0], -1).any(axis=1)  # noqa: E731
    sa, sb = np.asarray(a.num_steps), np.asarray(b.num_steps)
    diff = np.abs(xa - xb)
    return {
        "samples_differing": int(rows(xa != xb).sum()),
        "max_abs": float(diff.max()),
        "max_rel": float(diff.max() / np.abs(xb).max()),
        "max_ulps": float(np.max(diff / np.spacing(np.abs(xb)))),
        "steps_differing": int((sa != sb).sum()),
        "max_step_diff": int(np.abs(sa - sb).max()),
        "mean_steps": float(sb.mean()),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tag", default="")
    parser.add_argument("--batches", default="48,50")
    parser.add_argument("--only", default="", help="comma-separated entries (default: all)")
    parser.add_argument("--data-key", type=int, default=1, help="key of the likelihood data")
    args = parser.parse_args()
    only = set(args.only.split(",")) - {""}
    assert jax.device_count() == 4
    report = {"meta": metadata(data_key=args.data_key, only=sorted(only)), "batches": {}}
    for num in (int(b) for b in args.batches.split(",")):
        out = {}
        for name, (call, field) in entries(num, args.data_key).items():
            if only and name not in only:
                continue
            ref = call()
            out[name] = {
                "devices4": compare(call(sharding=four()), ref, field),
                "chunk12": compare(call(chunk_size=12), ref, field),
            }
            print(num, name, out[name], flush=True)
        report["batches"][str(num)] = out
    write(f"ode_device_count{'_' + args.tag if args.tag else ''}", report)


if __name__ == "__main__":
    main()
