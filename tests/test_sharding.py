"""`sharding=` and `chunk_size=` on the batch entry points (scoresde/_sharding.py).

JAX fixes its device count at import, so the checks run in ONE subprocess with 4 forced CPU
devices (`tests/sharding_worker.py`), which compares the sharded calls over meshes of 1, 2 and
4 of its devices with the unsharded call of the same process and reports what it found. The
default run makes a handful of compiles (adaptive `sample_ode` on 6 samples over 4 devices, a
batch 4 does not divide, their latents drawn from per-sample keys; adaptive `sample_ode` and
`log_likelihood` on 50 samples of a 3-D mixture on 1 and 4 devices); the slow run covers every
entry point on 1, 2 and 4 devices and in chunks.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import scoresde as ss
from scoresde._sharding import check_sharding

WORKER = pathlib.Path(__file__).with_name("sharding_worker.py")
RTOL = 1e-6  # float32: max|sharded - unsharded| / max|unsharded| per field


def run_worker(tmp_path_factory, *flags):
    out = tmp_path_factory.mktemp("sharding") / "report.json"
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(out), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


# One worker for the module, and its fixtures session-scoped: pytest tears a module fixture
# down whenever the worker turns to another module, so only these build it once per run.
pytestmark = pytest.mark.xdist_group("sharding")


@pytest.fixture(scope="session")
def quick(tmp_path_factory):
    return run_worker(tmp_path_factory)


def assert_equal_results(entries, skip=(), rtol=RTOL):
    assert entries
    for name, entry in entries.items():
        if name.split("/")[0] in skip:
            continue
        for field, value in entry["fields"].items():
            if isinstance(value, bool):
                assert value, f"{name}: {field} differs from the unsharded call"
            else:
                assert value <= rtol, f"{name}: {field} differs by {value:.2e} (relative)"
        assert entry.get("sharding_spans_mesh") in (True, None), f"{name}: wrong sharding"


def test_sharded_sample_ode_equals_unsharded_on_an_uneven_batch(quick):
    assert quick["devices"] == 4
    entry = quick["entries"]["sample_ode/4"]
    assert set(entry["fields"]) == {"x", "nfe", "num_steps", "successful"}
    assert_equal_results(quick["entries"])


def test_sharded_samples_keep_their_global_keys(quick):
    """Latents from per-sample keys (no fixed latents): the 6 samples drawn over 4 devices are
    the unsharded ones drawn with the same key (checked with the other fields above), and no
    two are alike (a device restarting its indices at 0 would repeat samples)."""
    assert quick["entries"]["sample_ode/4"]["fields"]["x"] <= RTOL
    assert quick["distinct_rows"] == 6


def test_adaptive_pf_ode_solves_do_not_depend_on_the_device_count(quick):
    # 50 samples of a 3-D mixture on 1 and on 4 devices (padded to 52): the same samples and
    # likelihoods (measured: to the bit; allowed: 4 ulps) and the same steps. Sensitive: one
    # ulp in the latents changes the adaptive steps of several samples (the error estimate of
    # the first steps is mostly rounding, see docs/how-to/devices.md), so a rounding
    # difference between the device layouts would show here as changed steps.
    found = quick["device_count"]
    ode, ll = found["sample_ode"], found["log_likelihood"]
    assert ode["steps_equal"] and ll["steps_equal"]
    assert max(ode["x_ulps"], ll["log_prob_ulps"], ll["z_ulps"]) <= 4
    assert found["one_ulp_moved"]["steps_differing"] > 0
    assert found["one_ulp_moved"]["x_max_diff"] > 1e-6


def test_each_device_loops_until_its_own_slowest_sample(quick):
    steps = quick["steps"]
    # the per-sample NFE varies, so the devices' local maxima differ from the global one
    assert len(set(steps["nfe"])) > 1
    assert steps["calls_per_device"] == steps["local_max_nfe"]


def test_no_collective_inside_the_sharded_while_loops(quick):
    sharded = quick["hlo"]["sample_ode_shard_map"]
    assert sharded["loops"] >= 1 and sharded["computations"] > 0
    assert sharded["collectives"] == []
    # negative control: the same vmapped solve under automatic partitioning all-reduces inside
    automatic = quick["hlo"]["sample_ode_automatic"]
    assert any("all-reduce" in line for line in automatic["collectives"])


def test_error_if_raises_inside_shard_map(quick):
    assert quick["error_if"] == ["EquinoxRuntimeError", True]


@pytest.mark.slow
def test_every_entry_point_equals_unsharded_on_1_2_4_devices_and_in_chunks(tmp_path_factory):
    report = run_worker(tmp_path_factory, "--full")
    entries = report["entries"]
    names = {name.split("/")[0] for name in entries}
    assert {"sample_ode", "log_likelihood", "sample_pc", "sample_edm", "decode"} <= names
    assert all(f"sample_ode/{n}" in entries for n in (1, 2, 4, "chunk4"))
    # `sample_sde` with a PID controller reads diffrax's VirtualBrownianTree between its nodes,
    # where a one-ulp difference in a step's end moves the increment by ~1e-5 (slopes of order
    # 1/sqrt(tol)): the same in distribution, not to 1e-6; reported by the worker, not asserted.
    # `sample_sde_adaptive` reads its own tree at grid nodes only: asserted like the others.
    # A device's vmap has fewer rows than the unsharded one (3 or 2 of 6), and XLA:CPU's
    # vectorised code rounds differently by width: measured up to 6.4e-6 (sample_edm with churn,
    # 2 devices), 1.0e-6 (log_prob), 4.2e-6 (bits_per_dim's stderr, a difference of close
    # numbers); 0 wherever the widths compile alike. Integer fields (nfe, steps) are equal.
    assert {f"sample_sde_adaptive/{n}" for n in (1, 2, 4, "chunk4")} <= set(entries)
    assert_equal_results(entries, skip=("sample_sde_pid", "sample_smc"), rtol=1e-5)
    # SMC (8 particles: a multiple of every device count, as sample_smc requires): XLA splits the
    # particle work and all-gathers for the weights and the resampling;
    # the sums round differently, so the particles agree to float32 rounding of those sums and
    # the resampling decisions are identical.
    for n in (1, 2, 4):
        smc = entries[f"sample_smc/{n}"]["fields"]
        assert smc["x"] <= 1e-5 and smc["log_weights"] <= 1e-4
        assert smc["resampled"] and smc["nfe"]
    # data-parallel fit: the first 5 losses as on one device, up to float32 rounding of a
    # mean split over 4 devices
    assert report["fit"]["max_rel_loss_diff"] <= 1e-6


def _sharding(spec):
    mesh = jax.make_mesh((1,), ("batch",), devices=jax.devices()[:1])
    return NamedSharding(mesh, spec)


def test_check_sharding_accepts_a_batch_split_and_refuses_others():
    assert check_sharding(_sharding(PartitionSpec("batch"))) == ("batch", 1)
    assert check_sharding(_sharding(PartitionSpec(("batch",), None))) == ("batch", 1)
    with pytest.raises(TypeError, match="NamedSharding"):
        check_sharding(jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    with pytest.raises(ValueError, match="axis 0"):
        check_sharding(_sharding(PartitionSpec()))
    with pytest.raises(ValueError, match="axis 0"):
        check_sharding(_sharding(PartitionSpec(None, "batch")))


def test_chunks_give_the_unchunked_samples_in_process():
    sde = ss.VPSDE()
    dist = ss.analytic.Gaussian(jnp.array([1.0, -1.0]), jnp.array([[1.0, 0.3], [0.3, 0.5]]))
    score = ss.analytic.marginal_score(dist, sde)
    kw = dict(key=jax.random.key(0), shape=(5, 2), steps=6)
    whole = ss.sample_pc(sde, score, **kw)
    chunked = ss.sample_pc(sde, score, chunk_size=2, **kw)
    np.testing.assert_array_equal(np.asarray(chunked.x), np.asarray(whole.x))
    # negative control: a different key is not the same batch
    other = ss.sample_pc(sde, score, **{**kw, "key": jax.random.key(1)}, chunk_size=2)
    assert not np.allclose(np.asarray(other.x), np.asarray(whole.x))
    with pytest.raises(ValueError, match="chunk_size"):
        ss.sample_pc(sde, score, chunk_size=0, **kw)


@pytest.mark.slow
def test_two_processes_with_jax_distributed_give_the_single_process_samples(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    worker = WORKER.with_name("multihost_worker.py")
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parents[1]), env.get("PYTHONPATH", "")])
    outs = [tmp_path / f"process{i}.json" for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), str(i), str(port), str(outs[i])],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = [p.communicate(timeout=900)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    reports = [json.loads(o.read_text()) for o in outs]
    assert [r["process"] for r in reports] == [0, 1]
    assert all(r["devices"] == 4 and r["local_devices"] == 2 for r in reports)
    # each process computed its own rows; together all 8, each equal to the one-process samples
    assert sorted(reports[0]["rows"] + reports[1]["rows"]) == list(range(8))
    assert all(r["max_diff"] == 0.0 and r["nfe_equal"] for r in reports), reports


def test_cli_uses_all_local_devices_unless_no_shard(capsys):
    from scoresde import cli
    from scoresde._cli.common import local_sharding

    sharding = local_sharding("sample", False)
    assert isinstance(sharding, NamedSharding)
    assert sharding.device_set == set(jax.local_devices())
    assert f"{jax.local_device_count()} device(s)" in capsys.readouterr().err
    assert local_sharding("sample", True) is None
    assert "--no-shard" in capsys.readouterr().err
    for command in ("sample", "nll", "train"):
        with pytest.raises(SystemExit) as e:
            cli.main([command, "--help"])
        assert e.value.code == 0
        assert "--no-shard" in capsys.readouterr().out


def test_the_module_runs_on_one_worker(request):
    """`--dist loadgroup` keeps this module's tests on one worker, so its session fixture (a
    4-device subprocess) is built once: xdist marks a grouped test's id with its group. With
    pytest 9.2 and pytest-xdist 3.8 the mark is lost and the groups fall apart (pyproject.toml)."""
    if not hasattr(request.config, "workerinput"):
        pytest.skip("not running under pytest-xdist")
    assert request.node.nodeid.endswith("@sharding")
