"""`scoresde tune` and `scoresde sample --grid`, on a tiny untrained checkpoint (written in the
test, no training: these check the code paths and the refusals, not the quality of a grid)."""

import dataclasses
import functools
import json

import jax.random as jr
import numpy as np
import pytest

import scoresde as ss
from scoresde import cli
from scoresde._cli import sample as sample_cmd, tune as tune_cmd
from scoresde._training import recipes
from scoresde._training.checkpoint import save
from scoresde._tuning import tune_sampler as _tune_sampler
from scoresde._tuning.solver_names import SOLVERS, solver_from_name
from scoresde._tuning.tune_grid import solver_name

# One worker for the module, and its fixtures session-scoped (see tests/test_cli.py).
pytestmark = pytest.mark.xdist_group("cli_tune")

TINY = ["--nfe", "4", "--pilot", "8", "--max-iterations", "3", "--no-progress"]


@pytest.fixture(scope="session")
def toy_ckpt(tmp_path_factory):
    cfg = recipes.TrainConfig(model_size="tiny", dataset="moons")
    path = tmp_path_factory.mktemp("tune_toy") / "checkpoint.eqx"
    save(
        path, recipes.model_from_config(cfg, key=jr.key(0)), hyperparameters=dataclasses.asdict(cfg)
    )
    return path


@pytest.fixture(scope="session")
def tuned(toy_ckpt, tmp_path_factory):
    """`scoresde tune --solver ddim` once: an existing --out refused, then replaced with
    --overwrite. Returns the grid's path and what the two runs printed."""
    out = tmp_path_factory.mktemp("tune_out") / "grids" / "ddim.json"
    out.parent.mkdir()
    out.write_text("an older grid")
    refused = _run(["tune", str(toy_ckpt), "--solver", "ddim", *TINY, "--out", str(out)])
    assert out.read_text() == "an older grid"
    ran = _run(["tune", str(toy_ckpt), "--solver", "ddim", *TINY, "--out", str(out),
                "--overwrite"])  # fmt: skip
    return out, refused, ran


def _run(argv):
    """`(status, stdout, stderr)` of `scoresde argv`."""
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = cli.main(argv)
    return status, stdout.getvalue(), stderr.getvalue()


def _no_compute(*args, **kwargs):
    raise AssertionError("computation started before the arguments were checked")


def test_tune_writes_a_loadable_grid_and_refuses_to_overwrite(tuned, toy_ckpt):
    out, refused, ran = tuned
    status, _, err = refused
    assert status == 2 and "--out" in err and "exists" in err and "--overwrite" in err
    status, stdout, _ = ran
    assert status == 0
    grid = ss.TimeGrid.from_json(out)
    # DDIM costs one evaluation a step: 4 evaluations are 4 steps, from T down to t_eps
    assert grid.solver == "DPMSolver1" and grid.steps == 4
    sde = recipes.load_model(toy_ckpt)[0].sde
    times = np.asarray(grid.times)
    assert times[0] == pytest.approx(sde.T) and times[-1] == pytest.approx(sde.default_t_eps)
    info = grid.info
    assert info["nfe"] == 4 and info["checkpoint"] == str(toy_ckpt) and info["iterations"] >= 1
    assert info["pilot"] + info["held_out"] == 8
    # the table: the tuned grid and every named one, and the line naming the file
    for name in ("tuned", "uniform", "log_snr", "karras", "clipped_log_snr"):
        assert f"\n{name} " in stdout
    assert f"DPMSolver1, 4 steps, NFE 4, grid {info['chosen']}" in stdout and str(out) in stdout
    # the error it reports is the held-out RMS of the grid chosen, never above the named grids'
    rms = info["rms"]
    named = [v["held_out"] for k, v in rms.items() if k != "tuned"]
    assert rms[info["chosen"]]["held_out"] <= min(named)


def test_sample_with_the_grid_uses_its_solver_and_times(tuned, toy_ckpt, tmp_path):
    grid_path = tuned[0]
    grid = ss.TimeGrid.from_json(grid_path)
    argv = ["sample", str(toy_ckpt), "--grid", str(grid_path), "--num", "5", "--format", "npz",
            "--no-progress", "--no-shard", "--out", str(tmp_path)]  # fmt: skip
    status, stdout, _ = _run(argv)
    assert status == 0
    assert "DPMSolver1, 4 steps on the tuned grid, mean NFE 4" in stdout
    with np.load(tmp_path / "samples.npz") as f:
        samples, nfe = f["samples"], f["nfe"]
    assert (nfe == grid.steps).all()  # one evaluation per step
    model = recipes.load_model(toy_ckpt)[0]
    direct = ss.sample_ode(model.sde, model, key=jr.key(0), shape=(5, 2), solver=ss.DDIM(),
                           grid=np.asarray(grid.times)).x  # fmt: skip
    np.testing.assert_allclose(samples, np.asarray(direct), rtol=1e-5, atol=1e-5)
    # ... which is not DDIM on its own default grid (the grid was used)
    default = ss.sample_ode(model.sde, model, key=jr.key(0), shape=(5, 2), solver=ss.DDIM(),
                            steps=4).x  # fmt: skip
    assert not np.allclose(samples, np.asarray(default), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--steps", "10"], "drop --steps"),
        (["--sampler", "ode"], "drop --sampler"),
        (["--sampler", "sde", "--steps", "3"], "drop --sampler and --steps"),
    ],
)
def test_sample_grid_with_sampler_or_steps_is_refused(
    extra, message, tuned, toy_ckpt, tmp_path, monkeypatch
):
    monkeypatch.setattr(sample_cmd, "draw", _no_compute)
    argv = ["sample", str(toy_ckpt), "--grid", str(tuned[0]), *extra, "--out", str(tmp_path)]
    status, _, err = _run(argv)
    assert status == 2 and "--grid sets the solver and the steps" in err and message in err


def _grid_file(folder, solver, sde=None):
    provenance = {} if sde is None else {"sde": sde}
    grid = ss.TimeGrid(np.array([1.0, 0.3, 1e-3]), solver, provenance)
    path = folder / f"grid-{len(list(folder.iterdir()))}.json"
    grid.to_json(path)
    return path


@pytest.mark.parametrize(
    "solver, sde, message",
    [
        ("Nope(7)", None, "unknown solver name 'Nope(7)'"),
        ("", None, "names no solver"),
        ("UniPC(3)", "EDMSDE()", "was tuned for EDMSDE()"),
    ],
)
def test_sample_refuses_a_grid_it_cannot_use(solver, sde, message, toy_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(sample_cmd, "draw", _no_compute)
    grids = tmp_path / "grids"
    grids.mkdir()
    path = _grid_file(grids, solver, sde)
    status, _, err = _run(["sample", str(toy_ckpt), "--grid", str(path), "--out", str(tmp_path)])
    assert status == 2 and message in err and str(path) in err
    assert len(err.strip().splitlines()) == 1


def test_sample_refuses_a_missing_or_foreign_grid_file(toy_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(sample_cmd, "draw", _no_compute)
    missing = tmp_path / "nothing.json"
    status, _, err = _run(["sample", str(toy_ckpt), "--grid", str(missing)])
    assert status == 2 and "no file" in err and str(missing) in err
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"times": [1.0, 0.001]}))
    status, _, err = _run(["sample", str(toy_ckpt), "--grid", str(foreign)])
    assert status == 2 and "not a saved TimeGrid" in err


def test_draw_with_a_grid_refuses_a_sampler_steps_or_other_grids(toy_ckpt):
    model, config = recipes.load_model(toy_ckpt)
    grid = ss.TimeGrid(np.array([1.0, 0.3, 1e-3]), "DPMSolverPP2M")
    with pytest.raises(ValueError, match="a grid sets the sampler"):
        recipes.draw(model, config, "dpm++2m", 2, None, jr.key(0), grid=grid)
    with pytest.raises(ValueError, match="a grid sets the sampler"):
        recipes.draw(model, config, None, 2, 2, jr.key(0), grid=grid)
    with pytest.raises(TypeError, match="grid"):  # ours, or the test run's type checker
        recipes.draw(model, config, None, 2, None, jr.key(0), grid=np.array([1.0, 1e-3]))
    with pytest.raises(ValueError, match="unknown solver name 'Nope'"):
        recipes.draw(model, config, None, 2, None, jr.key(0),
                     grid=ss.TimeGrid(np.array([1.0, 1e-3]), "Nope"))  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--nfe", "0"], "--nfe must be >= 1; got 0"),
        (["--nfe", "1", "--solver", "dpm2"], "--nfe 1 affords no step"),
        (["--nfe", "4", "--pilot", "1"], "--pilot must be >= 2"),
        (["--nfe", "4", "--max-iterations", "-1"], "--max-iterations must be >= 0"),
        (["--nfe", "4", "--fit-size", "0"], "--fit-size must be >= 1"),
    ],
)
def test_tune_bad_flags_fail_before_computing(extra, message, toy_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_cmd, "tune_grid", _no_compute)
    monkeypatch.setattr(tune_cmd, "tune_sampler", _no_compute)
    monkeypatch.setattr(tune_cmd, "load_model", _no_compute)
    status, _, err = _run(["tune", str(toy_ckpt), *extra, "--out", str(tmp_path / "g.json")])
    assert status == 2 and message in err
    assert not (tmp_path / "g.json").exists()


def test_tune_refuses_a_missing_checkpoint_or_a_folder_as_out(toy_ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(tune_cmd, "tune_grid", _no_compute)
    monkeypatch.setattr(tune_cmd, "tune_sampler", _no_compute)
    missing = tmp_path / "no-checkpoint.eqx"
    status, _, err = _run(["tune", str(missing), "--nfe", "4", "--out", str(tmp_path / "g.json")])
    assert status == 2 and str(missing) in err
    status, _, err = _run(["tune", str(toy_ckpt), "--nfe", "4", "--out", str(tmp_path)])
    assert status == 2 and "is a folder" in err
    with pytest.raises(SystemExit) as e:  # --nfe is required
        cli.main(["tune", str(toy_ckpt)])
    assert e.value.code == 2


def test_tune_help_shows_every_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as e:
        cli.main(["tune", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for default in ("(default: auto)", "(default: 256)", "(default: 30)", "(default: 64)",
                    "(default: 0)", "(default: grid.json)"):  # fmt: skip
        assert default in text, default
    assert "scoresde sample CHECKPOINT --grid" in " ".join(text.split())


def test_every_solver_name_maps_back_to_its_solver():
    solvers = (*_tune_sampler.default_candidates(), *(make() for make in tune_cmd.SOLVERS.values()))
    for solver in solvers:
        assert solver_from_name(solver_name(solver)) == solver
    assert all(solver_name(s) == name for name, s in SOLVERS.items())
    assert solver_from_name("DPMSolver1") == ss.DDIM() and solver_from_name("UniPC(2)") == ss.UniPC(
        2
    )
    with pytest.raises(ValueError, match="unknown solver name 'UniPC'"):
        solver_from_name("UniPC")


@pytest.mark.slow
def test_tune_auto_prints_the_table_and_writes_the_winner(toy_ckpt, tmp_path, monkeypatch):
    # two candidates (each compiles its own L-BFGS loop): the command's path, not the library's
    few = functools.partial(tune_cmd.tune_sampler, candidates=(ss.DDIM(), ss.DPMSolverPP2M()))
    monkeypatch.setattr(tune_cmd, "tune_sampler", few)
    out = tmp_path / "auto.json"
    status, stdout, _ = _run(["tune", str(toy_ckpt), *TINY, "--out", str(out)])
    assert status == 0
    lines = stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("solver")))
    rows = [line.split() for line in lines[header + 1 : header + 3]]
    assert {r[0] for r in rows} == {"DPMSolver1", "DPMSolverPP2M"}
    assert [r[1:3] for r in rows] == [["4", "4"], ["4", "4"]]
    tuned = [float(r[3]) for r in rows]
    assert tuned == sorted(tuned)  # best first
    grid = ss.TimeGrid.from_json(out)
    assert grid.solver == rows[0][0] and grid.steps == 4
    assert f"{grid.solver}, 4 steps, NFE 4" in stdout
