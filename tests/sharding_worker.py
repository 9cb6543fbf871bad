"""Run by tests/test_sharding.py in a subprocess: `python sharding_worker.py OUT.json [--full]`.

Forces 4 CPU devices BEFORE importing JAX, then compares every batch entry point with
`sharding=` over 1, 2 and 4 devices (of the same process) against the unsharded call, and
records what the test asserts: the worst relative difference per result field (max|a - b| over
max|b|, float32), whether the integer fields (`nfe`, ...) are identical, and whether the result's
sharding spans the mesh (equal to the requested one when the device count divides the batch).
Also: the collectives inside the while loops of the compiled sharded and automatically
partitioned solves, each device's score evaluations against its local maximum NFE, and an
`eqx.error_if` raised inside `shard_map`.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import collections  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402

import diffrax as dfx  # noqa: E402
import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._keys import draw_latents  # noqa: E402

FULL = "--full" in sys.argv
SDE = ss.VPSDE()
# Two components of very different widths: per-sample adaptive NFE varies.
DIST = ss.analytic.GaussianMixture(
    jnp.array([0.5, 0.5]),
    jnp.array([[2.0, 0.0], [-2.0, 0.0]]),
    jnp.stack([0.01 * jnp.eye(2), 0.5 * jnp.eye(2)]),
)
SCORE = ss.analytic.marginal_score(DIST, SDE)
KEY = jax.random.key(0)
NUM = 6  # 4 does not divide it; 1 and 2 do
# A 3-D mixture of three components of different shapes: adaptive step counts vary per sample.
MIX3 = ss.analytic.GaussianMixture(
    jnp.array([0.3, 0.5, 0.2]),
    jnp.array([[1.5, 0.0, -0.5], [-1.0, 1.0, 0.0], [0.0, -1.5, 1.0]]),
    jnp.stack([0.05 * jnp.eye(3), 0.3 * jnp.eye(3), jnp.diag(jnp.array([0.02, 0.5, 0.1]))]),
)
SCORE3 = ss.analytic.marginal_score(MIX3, SDE)
QUICK = 50  # the default run's batch of the 3-D mixture: 4 does not divide it
MEASUREMENT = ss.LinearMeasurement(jnp.array([[1.0, 0.0]]), jnp.array([0.5]), 0.5)


def mesh_sharding(n, axis_type=AxisType.Explicit):
    mesh = jax.make_mesh((n,), ("batch",), devices=jax.devices()[:n], axis_types=(axis_type,))
    return NamedSharding(mesh, PartitionSpec("batch"))


def cases():
    """Every batch entry point as `call(**sharding_kwargs)`, on small inputs."""
    x0 = np.asarray(ss.sample_ode(SDE, SCORE, key=KEY, shape=(NUM, 2)).x)
    levels = np.clip(np.round((x0 + 3) * 40), 0, 255)
    rh = dfx.ReversibleHeun()
    enc = ss.encode(SDE, SCORE, x0, solver=rh, steps=8)

    return {
        "sample_ode": lambda **kw: ss.sample_ode(SDE, SCORE, key=KEY, shape=(NUM, 2), **kw),
        "log_likelihood": lambda **kw: ss.log_likelihood(SDE, SCORE, x0, key=KEY, **kw),
        "sample_sde": lambda **kw: ss.sample_sde(
            SDE, SCORE, key=KEY, shape=(NUM, 2), steps=8, **kw
        ),
        "sample_sde_pid": lambda **kw: ss.sample_sde(
            SDE,
            SCORE,
            key=KEY,
            shape=(NUM, 2),
            solver=dfx.Heun(),
            steps=None,
            stepsize_controller=dfx.PIDController(rtol=1e-2, atol=1e-2),
            **kw,
        ),
        "sample_sde_adaptive": lambda **kw: ss.sample_sde_adaptive(
            SDE, SCORE, key=KEY, shape=(NUM, 2), rtol=0.05, **kw
        ),
        "sample_pc": lambda **kw: ss.sample_pc(SDE, SCORE, key=KEY, shape=(NUM, 2), steps=8, **kw),
        "sample_edm": lambda **kw: ss.sample_edm(
            SDE, SCORE, key=KEY, shape=(NUM, 2), steps=4, churn=10.0, **kw
        ),
        "run_langevin": lambda **kw: ss.run_langevin(
            ss.MALA(lambda x: SCORE(1e-3, x), step_size=0.05), x0, key=KEY, num_steps=4, **kw
        ),
        "annealed_langevin": lambda **kw: ss.annealed_langevin(
            SDE, SCORE, x0, key=KEY, sigmas=jnp.array([1.0, 0.5]), steps_per_level=3, **kw
        ),
        "bits_per_dim": lambda **kw: ss.bits_per_dim(
            SDE, SCORE, levels, key=KEY, num_repeats=2, **kw
        ),
        "encode": lambda **kw: ss.encode(SDE, SCORE, x0, **kw),
        "decode": lambda **kw: ss.decode(SDE, SCORE, enc, solver=rh, steps=8, **kw),
        "sample_smc": lambda **kw: ss.sample_smc(
            SDE, SCORE, MEASUREMENT, key=KEY, shape=(8, 2), steps=40, **kw
        ),
    }


def compare(result, ref, sharding):
    """Per field: relative difference (floats) or equality (ints), and the sharding check."""
    out, ok_sharding = {}, True
    fields = {f: getattr(ref, f) for f in vars(ref) if not f.startswith("_")}
    for name, b in fields.items():
        a = getattr(result, name)
        if not isinstance(b, jax.Array) or b.ndim == 0:
            continue
        a_host, b_host = np.asarray(a), np.asarray(b)
        if b_host.dtype.kind == "f":
            scale = np.max(np.abs(b_host[np.isfinite(b_host)]), initial=0.0)
            diff = np.max(np.abs(a_host - b_host), initial=0.0)
            out[name] = float(diff / scale) if scale > 0 else float(diff)
        else:
            out[name] = bool(np.array_equal(a_host, b_host))
        mesh_devices = set(sharding.mesh.devices.flat)
        if a.sharding.device_set != mesh_devices:
            ok_sharding = False
        divides = b.shape[0] % sharding.mesh.size == 0
        if divides and not a.sharding.is_equivalent_to(sharding, a.ndim):
            ok_sharding = False
    return {"fields": out, "sharding_spans_mesh": ok_sharding}


def computations(text):
    comps, name = {}, None
    for line in text.splitlines():
        match = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if match:
            name = match.group(1)
            comps[name] = []
        elif name is not None:
            comps[name].append(line)
    return comps


def loop_collectives(text):
    """`(while loops, computations inside them, collective instructions inside them)`."""
    comps = computations(text)
    callee = re.compile(r"(?:condition|body|to_apply|calls)=%?([\w.\-]+)")
    todo = [
        n
        for lines in comps.values()
        for line in lines
        if " while(" in line
        for n in re.findall(r"(?:condition|body)=%?([\w.\-]+)", line)
    ]
    loops, seen, found = len(todo) // 2, set(), []
    while todo:
        name = todo.pop()
        if name in seen or name not in comps:
            continue
        seen.add(name)
        for line in comps[name]:
            if re.search(r"all-reduce|all-gather|collective-permute|all-to-all", line):
                found.append(line.strip()[:100])
            todo += callee.findall(line)
            for group in re.findall(r"branch_computations=\{([^}]*)\}", line):
                todo += [b.strip().lstrip("%") for b in group.split(",")]
    return {"loops": loops, "computations": len(seen), "collectives": found}


CALLS: collections.Counter = collections.Counter()


class CountingScore(eqx.Module):
    """Counts the score's executions per device (inside `shard_map`)."""

    inner: object

    def __call__(self, t, x):
        jax.debug.callback(lambda d: CALLS.update([int(d)]), jax.lax.axis_index("batch"))
        return self.inner(t, x)


class GuardedScore(eqx.Module):
    inner: object

    def __call__(self, t, x):
        x = eqx.error_if(x, jnp.any(jnp.abs(x) > 40.0), "score input out of range")
        return self.inner(t, x)


def quick_checks(report):
    """The default run's checks, from four compiles: the unsharded reference, ONE compiled
    sharded solve from per-sample keys (its HLO read, then run), the same vmapped solve under
    automatic partitioning (the negative control of the HLO check), and a sharded solve whose
    score raises."""
    four = mesh_sharding(4)
    # No fixed latents: sample i draws its latent from fold_in(key, i), i its GLOBAL index, so
    # each device must offset its rows (a device restarting at 0 would repeat samples).
    ref = ss.sample_ode(SDE, SCORE, key=KEY, shape=(NUM, 2))
    score = CountingScore(SCORE)
    run = jax.jit(lambda key: ss.sample_ode(SDE, score, key=key, shape=(NUM, 2), sharding=four))
    compiled = run.lower(KEY).compile()
    CALLS.clear()
    result = compiled(KEY)
    jax.effects_barrier()
    report["entries"]["sample_ode/4"] = compare(result, ref, four)
    report["distinct_rows"] = len(np.unique(np.asarray(result.x), axis=0))
    padded = np.concatenate([np.asarray(result.nfe), np.repeat(np.asarray(result.nfe)[-1:], 2)])
    report["steps"] = {
        "calls_per_device": [CALLS[d] for d in range(4)],
        "local_max_nfe": padded.reshape(4, 2).max(axis=1).tolist(),
        "nfe": np.asarray(result.nfe).tolist(),
    }
    x_T = jax.random.normal(jax.random.key(1), (NUM, 2))
    auto = mesh_sharding(4, AxisType.Auto)
    plain = jax.jit(
        lambda x_T: ss.sample_ode(SDE, SCORE, key=KEY, shape=(8, 2), x_T=x_T, throw=False).x,
        in_shardings=auto,
        out_shardings=auto,
    )
    x8 = jax.device_put(np.concatenate([np.asarray(x_T), np.asarray(x_T)[:2]]), auto)
    report["hlo"] = {
        "sample_ode_shard_map": loop_collectives(compiled.as_text()),
        "sample_ode_automatic": loop_collectives(plain.lower(x8).compile().as_text()),
    }
    # Not under an outer jit: an error on one device must not leave the others in a collective.
    bad = jnp.zeros((8, 2)).at[5].set(50.0)
    try:
        jax.block_until_ready(
            ss.sample_ode(SDE, GuardedScore(SCORE), key=KEY, shape=(8, 2), x_T=bad, sharding=four)
        )
        report["error_if"] = None
    except Exception as e:  # noqa: BLE001 - the test reads the type and message
        report["error_if"] = [type(e).__name__, "score input out of range" in str(e)]


def ulps(a, b):
    """The largest difference of two float arrays in ulps of `b`'s largest entry."""
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.spacing(np.max(np.abs(b))))


def device_count_checks(report):
    """Adaptive PF-ODE solves of the 3-D mixture on 1 device and on 4 (`QUICK` samples: padded):
    `sample_ode` (the latents drawn from the key) and `log_likelihood` (exact divergence) of its
    samples. Per result: the difference in ulps and whether the step counts agree. Negative
    control: the same one-device solve (the same compiled programs) from latents moved by ONE
    ulp."""
    four, shape, dtype = mesh_sharding(4), (QUICK, 3), jnp.result_type(float)
    ode = lambda **kw: ss.sample_ode(SDE, SCORE3, key=KEY, shape=shape, **kw)  # noqa: E731
    one, split = ode(), ode(sharding=four)
    latents = draw_latents(sde=SDE, key=KEY, shape=shape, dtype=dtype, rows=None)
    moved = ode(x_T=jnp.nextafter(latents, jnp.inf))
    exact = ss.ExactDivergence()
    ll = lambda **kw: ss.log_likelihood(SDE, SCORE3, one.x, divergence=exact, **kw)  # noqa: E731
    ll_one, ll_split = ll(), ll(sharding=four)
    report["device_count"] = {
        "sample_ode": {
            "x_ulps": ulps(split.x, one.x),
            "steps_equal": bool(np.array_equal(split.num_steps, one.num_steps)),
        },
        "log_likelihood": {
            "log_prob_ulps": ulps(ll_split.log_prob, ll_one.log_prob),
            "z_ulps": ulps(ll_split.z, ll_one.z),
            "steps_equal": bool(np.array_equal(ll_split.num_steps, ll_one.num_steps)),
        },
        "one_ulp_moved": {
            "x_max_diff": float(np.max(np.abs(np.asarray(moved.x) - np.asarray(one.x)))),
            "steps_differing": int(np.sum(np.asarray(moved.num_steps) != one.num_steps)),
        },
    }


def full_checks(report):
    """Every entry point on 1, 2 and 4 devices and in chunks of 4, against the unsharded call."""
    for name, call in cases().items():
        ref = call()
        for n in (1, 2, 4):
            sharding = mesh_sharding(n)
            report["entries"][f"{name}/{n}"] = compare(call(sharding=sharding), ref, sharding)
        if name == "sample_smc":  # particles are coupled: no chunks
            continue
        chunked = compare(call(chunk_size=4), ref, mesh_sharding(1))
        report["entries"][f"{name}/chunk4"] = {"fields": chunked["fields"]}


def fit_check(report):
    """Data-parallel `fit` on 4 devices: the first steps' losses against one device's."""
    data = jax.random.normal(jax.random.key(3), (256, 2))
    model = ss.MLPScoreNet(2, key=jax.random.key(0))
    loss = ss.DenoisingScoreMatching(SDE)
    kw = dict(key=jax.random.key(1), steps=5, batch_size=64, progress=False)
    one = ss.fit(model, loss, data, **kw).losses
    four = ss.fit(model, loss, data, sharding=mesh_sharding(4), **kw).losses
    report["fit"] = {"max_rel_loss_diff": float(np.max(np.abs(four - one) / np.abs(one)))}


def main(path):
    report: dict = {"devices": jax.device_count(), "entries": {}}
    if FULL:
        full_checks(report)
        fit_check(report)
    else:
        quick_checks(report)
        device_count_checks(report)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
