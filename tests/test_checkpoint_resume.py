"""Training that loses nothing: periodic and on-signal checkpoints, `--resume` equal to an
uninterrupted run, refusing to overwrite a run, `load_checkpoint` without a skeleton, and clear
errors for empty data and missing files. One tiny MLP recipe throughout (compiled once)."""

import dataclasses
import json
import os
import signal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss
from scoresde import cli
from scoresde._inverse.guidance import ClassifierFree
from scoresde._score_calls import Conditioned
from scoresde._training import recipes

STEPS = 20
CONFIG = recipes.TrainConfig(
    dataset="moons", model_size="tiny", steps=STEPS, batch_size=32, num_train=256
)
FLAGS = ["train", "--dataset", "moons", "--model-size", "tiny", "--steps", str(STEPS),
         "--batch-size", "32", "--num-train", "256", "--checkpoint-every", "10", "--samples",
         "0", "--quiet", "--no-shard"]  # fmt: skip


def _leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def _state(folder):
    return ss.load(folder / "state.eqx", recipes.state_skeleton_from_config(CONFIG))


class _StopAfter:
    """A `stop()` that turns True on its `n`-th call (fit asks before every compiled call)."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self):
        self.calls += 1
        return self.calls >= self.n


# One worker for the module, and its fixtures session-scoped: pytest tears a module fixture
# down whenever the worker turns to another module, so only these build it once per run.
pytestmark = pytest.mark.xdist_group("checkpoint_resume")


@pytest.fixture(scope="session")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    result = recipes.train(CONFIG, out, progress=False, checkpoint_every=10)
    assert not result["interrupted"] and result["step"] == STEPS
    return out


def test_resumed_run_equals_an_uninterrupted_one(straight, tmp_path):
    # stop before the second compiled call: the first ends at the checkpoint, step 10
    half = recipes.train(CONFIG, tmp_path, progress=False, checkpoint_every=10, stop=_StopAfter(2))
    assert half["interrupted"] and half["step"] == 10 and half["state"] == tmp_path / "state.eqx"
    assert int(_state(tmp_path).step) == 10 and not (tmp_path / "checkpoint.eqx").exists()
    assert len(json.loads((tmp_path / "losses.json").read_text())) == 10
    rest = recipes.train(CONFIG, tmp_path, progress=False, checkpoint_every=10, resume=True)
    assert not rest["interrupted"] and rest["step"] == STEPS
    one, two = _state(straight), _state(tmp_path)
    assert int(one.step) == int(two.step) == STEPS
    for a, b in zip(_leaves(one), _leaves(two), strict=True):  # params, EMA, Adam moments
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    la = json.loads((straight / "losses.json").read_text())
    lb = json.loads((tmp_path / "losses.json").read_text())
    np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-6)
    for a, b in zip(
        _leaves(ss.load_checkpoint(straight / "checkpoint.eqx").model),
        _leaves(ss.load_checkpoint(tmp_path / "checkpoint.eqx").model),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_sigint_saves_and_says_how_to_resume_then_resume_and_overwrite(
    straight, tmp_path, capsys, monkeypatch
):
    real_fit, sent = recipes.fit, []

    def fit_then_sigint(*args, checkpoint_fn, **kwargs):
        def checkpoint(state, losses):
            checkpoint_fn(state, losses)
            if not sent:  # Ctrl-C right after the first periodic checkpoint
                sent.append(True)
                os.kill(os.getpid(), signal.SIGINT)

        return real_fit(*args, checkpoint_fn=checkpoint, **kwargs)

    monkeypatch.setattr(recipes, "fit", fit_then_sigint)
    out = str(tmp_path)
    assert cli.main([*FLAGS, "--out", out]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "device" in err[0]  # the device note, then ONE line
    assert "interrupted at step 10 of 20" in err[1] and str(tmp_path / "state.eqx") in err[1]
    assert f"scoresde train --resume --out {out}" in err[1]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    # a second run into the same folder is refused, naming both ways on
    assert cli.main([*FLAGS, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "--overwrite" in err and "already holds" in err
    # a flag that disagrees with the run's settings is refused on resume
    assert cli.main([*FLAGS, "--seed", "3", "--resume", "--out", out]) == 2
    assert "--seed 3" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--out", out, "--quiet", "--samples", "0",
                     "--no-shard"]) == 0  # fmt: skip
    for a, b in zip(_leaves(_state(straight)), _leaves(_state(tmp_path)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert len(json.loads((tmp_path / "losses.json").read_text())) == STEPS
    # --overwrite clears the old run's outputs (and nothing else) before training again
    (tmp_path / "samples.npy").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.setattr(recipes, "fit", real_fit)
    assert cli.main([*FLAGS, "--overwrite", "--out", out]) == 0
    assert not (tmp_path / "samples.npy").exists() and (tmp_path / "notes.txt").exists()
    assert (tmp_path / "checkpoint.eqx").exists()


def test_resume_with_nothing_to_resume_is_refused(tmp_path, capsys):
    assert cli.main([*FLAGS, "--resume", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "state.eqx" in err


def _filled(skeleton, seed=0):
    """Random arrays in place of a skeleton's abstract leaves (an eager U-Net init takes tens
    of seconds on a busy CPU; this takes none)."""
    rng = np.random.default_rng(seed)

    def fill(leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            return jnp.asarray(rng.standard_normal(leaf.shape), leaf.dtype)
        return jnp.zeros(leaf.shape, leaf.dtype)

    return jax.tree.map(fill, skeleton)


def _saved(folder, **config):
    cfg = recipes.TrainConfig(model_size="tiny", **config)
    if cfg.dataset == "digits":
        model = _filled(recipes.skeleton_from_config(cfg))
    else:
        model = recipes.model_from_config(cfg, key=jr.key(0))
    path = folder / "checkpoint.eqx"
    ss.save(path, model, hyperparameters=dataclasses.asdict(cfg), ema=True)
    return path, model


@pytest.mark.parametrize(
    "config",
    [
        dict(dataset="moons"),
        dict(dataset="digits", levels=17),
        dict(dataset="digits", conditional=True),
    ],  # fmt: skip
    ids=["toy-mlp", "digits-unet", "conditional-unet"],
)
def test_load_checkpoint_rebuilds_every_recipe_without_a_skeleton(config, tmp_path):
    path, model = _saved(tmp_path, **config)
    trained = ss.load_checkpoint(path)
    assert isinstance(trained, ss.Trained) and type(trained.model) is type(model)
    for a, b in zip(_leaves(trained.model), _leaves(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert trained.config == recipes.TrainConfig(model_size="tiny", **config)
    assert trained.sde == model.sde
    if config["dataset"] == "moons":
        assert trained.levels is None and trained.data_shape == (2,)
        x = jnp.ones(2)
        np.testing.assert_array_equal(trained.score(0.5, x), model(0.5, x))
    else:
        assert trained.levels == config.get("levels", 256) and trained.data_shape == (1, 8, 8)
    if config.get("conditional"):
        assert isinstance(trained.score, Conditioned) and int(trained.score.cond) == 10
        assert isinstance(trained.guided(3, 2.0), ClassifierFree)
    else:
        assert trained.score is trained.model


def test_load_checkpoint_of_an_interrupted_run_gives_its_ema_model(straight):
    trained = ss.load_checkpoint(straight / "state.eqx")
    for a, b in zip(_leaves(trained.model), _leaves(_state(straight).ema_model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_missing_files_and_foreign_checkpoints_give_clear_errors(tmp_path):
    missing = tmp_path / "nope.eqx"
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nope.eqx") as e:
        ss.load(missing, recipes.skeleton_from_config(CONFIG))
    assert "sidecar" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.eqx") as e:
        ss.load_checkpoint(missing)
    assert "sidecar" not in str(e.value)
    path, _ = _saved(tmp_path, dataset="moons")
    with pytest.raises(IsADirectoryError, match="checkpoint.eqx"):
        ss.load_checkpoint(tmp_path)
    model = ss.EpsPrediction(ss.MLPScoreNet(2, width=8, depth=1, key=jr.key(0)), ss.VPSDE())
    ss.save(tmp_path / "own.eqx", model, hyperparameters={"width": 8})
    with pytest.raises(ss.CheckpointError, match="not written by scoresde train"):
        ss.load_checkpoint(tmp_path / "own.eqx")


def test_fit_on_empty_data_names_data_and_its_shape():
    model = ss.EpsPrediction(ss.MLPScoreNet(2, width=8, depth=1, key=jr.key(0)), ss.VPSDE())
    loss = ss.DenoisingScoreMatching(ss.VPSDE())
    for shape in [(0, 2), (5, 0)]:
        with pytest.raises(ValueError, match=rf"data .*shape \({shape[0]}, {shape[1]}\)"):
            ss.fit(model, loss, np.zeros(shape, np.float32), key=jr.key(0), steps=2,
                   progress=False)  # fmt: skip


def test_fit_checkpoints_on_multiples_of_the_step_and_stops_when_asked():
    model = ss.EpsPrediction(ss.MLPScoreNet(2, width=8, depth=1, key=jr.key(0)), ss.VPSDE())
    loss, data = ss.DenoisingScoreMatching(ss.VPSDE()), ss.gaussian_mixture(jr.key(0), 64)
    kw = dict(key=jr.key(1), batch_size=16, steps_per_call=4, progress=False,
              optimizer=ss.adam_with_warmup(1e-3, warmup_steps=2))  # fmt: skip
    first = ss.fit(model, loss, data, steps=4, **kw)
    seen = []
    record = lambda state, losses: seen.append((int(state.step), len(losses)))
    ss.fit(None, loss, data, steps=9, state=first.state, checkpoint_fn=record,
           checkpoint_every=5, **kw)  # fmt: skip
    assert seen == [(5, 1), (10, 6), (13, 9)]  # calls cut short at 5 and 10, then the end
    seen.clear()
    stopped = ss.fit(model, loss, data, steps=12, checkpoint_fn=record, stop=_StopAfter(2), **kw)
    assert int(stopped.state.step) == 4 and stopped.losses.shape == (4,) and seen == [(4, 4)]
    with pytest.raises(ValueError, match="checkpoint_fn is None"):
        ss.fit(model, loss, data, steps=2, checkpoint_every=5, **kw)


def test_stop_on_signal_asks_once_then_quits_and_restores_the_handlers():
    from scoresde._training.runs import StopOnSignal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), StopOnSignal() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and stop.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # a second signal, SIGINT: quit at once
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
