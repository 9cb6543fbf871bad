"""Run by tests/test_sharding.py: one of two local CPU processes joined by `jax.distributed`.

`python multihost_worker.py PROCESS_ID PORT OUT.json`: 2 CPU devices per process, 4 in all;
`sample_ode` with `sharding=` over all 4, then this process's rows (its addressable shards)
compared with the single-process samples computed here in chunks of 2 (the same rows per
solve as each device's).
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import json  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
process_id, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
jax.distributed.initialize(
    coordinator_address=f"localhost:{port}", num_processes=2, process_id=process_id
)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

import scoresde as ss  # noqa: E402

sde = ss.VPSDE()
dist = ss.analytic.Gaussian(jnp.array([1.0, -1.0]), jnp.array([[1.0, 0.3], [0.3, 0.5]]))
score = ss.analytic.marginal_score(dist, sde)
mesh = jax.make_mesh((jax.device_count(),), ("batch",))
sharding = NamedSharding(mesh, PartitionSpec("batch"))
key = jax.random.key(0)
sharded = ss.sample_ode(sde, score, key=key, shape=(8, 2), sharding=sharding)
with jax.default_device(jax.local_devices()[0]):
    # one process, the same per-device layout (2 rows a solve): XLA:CPU vectorises a vmap of 8
    # rows differently, which rounds differently and can change adaptive steps
    single = ss.sample_ode(sde, score, key=key, shape=(8, 2), chunk_size=2)
x_single, nfe_single = np.asarray(single.x), np.asarray(single.nfe)
rows, max_diff, nfe_equal = [], 0.0, True
for shard, nfe_shard in zip(
    sorted(sharded.x.addressable_shards, key=lambda s: s.index[0].start),
    sorted(sharded.nfe.addressable_shards, key=lambda s: s.index[0].start),
    strict=True,
):
    index = shard.index[0]
    rows += list(range(8))[index]
    max_diff = max(max_diff, float(np.max(np.abs(np.asarray(shard.data) - x_single[index]))))
    nfe_equal &= bool(np.array_equal(np.asarray(nfe_shard.data), nfe_single[index]))
with open(out, "w") as f:
    json.dump(
        {
            "process": jax.process_index(),
            "devices": jax.device_count(),
            "local_devices": jax.local_device_count(),
            "rows": rows,
            "max_diff": max_diff,
            "nfe_equal": nfe_equal,
        },
        f,
    )
jax.distributed.shutdown()
