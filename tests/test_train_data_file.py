"""`scoresde train --data FILE` (a `DataFile` in the config) and `--dataset mnist`: the file's
checks, what the sidecar records, and the commands that follow the recorded shape, levels and
split."""

import dataclasses
import json
import types

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import assert_card, assert_in_interval

import scoresde as ss
from scoresde import cli
from scoresde._likelihood import flow as _likelihood
from scoresde._training import recipe_data, recipes
from scoresde._training.checkpoint import read_sidecar, save
from scoresde._training.data_file import (
    DataFile,
    DataFileChangedWarning,
    DataFileError,
    read_data_file,
    split_rows,
)

pytestmark = pytest.mark.xdist_group("cli")
TINY = ["--model-size", "tiny", "--batch-size", "4", "--quiet", "--no-shard"]


def _images(num=12, shape=(1, 4, 8), seed=0):
    return np.random.default_rng(seed).integers(0, 256, (num, *shape)).astype(np.uint8)


def test_uint8_images_file_trains_and_sample_follows_the_recorded_shape(
    tmp_path, capsys, monkeypatch
):
    images = _images()
    data = tmp_path / "faces.npy"
    np.save(data, images)
    seen = {}

    def fake_fit(model, loss, data, *, preprocess, **kwargs):  # no compile: the data path only
        seen.update(data=np.asarray(data), y=np.asarray(preprocess(jr.key(0), data)))
        return types.SimpleNamespace(ema_model=model, losses=np.ones(2))

    monkeypatch.setattr(recipes, "fit", fake_fit)
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--steps", "2", "--samples", "0", "--out", str(run)]
    assert cli.main([*argv, *TINY]) == 0
    train, test = split_rows(12, 1, seed=0)
    np.testing.assert_array_equal(seen["data"], images[train])  # the train split, 8-bit values
    k = seen["data"].astype(np.float64)  # dequantised at 256 levels: 2(k + u)/256 - 1
    assert np.all((seen["y"] >= 2 * k / 256 - 1 - 1e-6) & (seen["y"] < 2 * (k + 1) / 256 - 1))
    meta = read_sidecar(run / "checkpoint.eqx")
    recorded = meta["hyperparameters"]["data"]
    assert meta["hyperparameters"]["dataset"] == "file"
    assert recorded["path"] == str(data.resolve())
    assert recorded["sha256"] == read_data_file(data).sha256 and len(recorded["sha256"]) == 64
    assert recorded["shape"] == [1, 4, 8] and recorded["dtype"] == "uint8"
    assert (recorded["num"], recorded["num_test"]) == (12, 1)  # a tenth, at least one
    trained = ss.load_checkpoint(run / "checkpoint.eqx")
    assert trained.data_shape == (1, 4, 8) and trained.levels == 256
    # sample needs no file: the shape comes from the config
    data.unlink()
    out = tmp_path / "samples"
    argv = ["sample", str(run / "checkpoint.eqx"), "--num", "3", "--steps", "1", "--out", str(out)]
    assert cli.main([*argv, "--no-progress", "--no-shard", "--format", "npz"]) == 0
    assert np.load(out / "samples.npz")["samples"].shape == (3, 1, 4, 8)


def test_points_file_trains_and_nll_evaluates_its_test_split(tmp_path, capsys, monkeypatch):
    x = np.random.default_rng(1).normal(size=(30, 3)).astype(np.float32)
    data = tmp_path / "points.npz"
    np.savez(data, x=x)
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--steps", "2", "--samples", "4", "--out", str(run)]
    assert cli.main([*argv, *TINY, "--seed", "3"]) == 0
    assert np.load(run / "samples.npy").shape == (4, 3)
    card = json.loads((run / "train.json").read_text())  # the run's metric card
    assert_card(card["settings"], num=27, seed=3, ema=True, training_steps=2,
                levels=None, data_convention="continuous (as given)")  # fmt: skip
    assert card["settings"]["config"]["seed"] == 3 and card["final_loss"]["window"] == 2
    assert_in_interval(card["final_loss"])
    hyper = read_sidecar(run / "checkpoint.eqx")["hyperparameters"]
    assert hyper["data"]["shape"] == [3] and hyper["data"]["dtype"] == "float"
    assert recipes.TrainConfig.from_hyperparameters(hyper).data_levels is None
    seen = []

    def fake(sde, score, x, **kwargs):  # the rows nll evaluates, without solving an ODE
        seen.append(np.asarray(x))
        return types.SimpleNamespace(log_prob=jnp.zeros(x.shape[0]), nfe=jnp.ones(x.shape[0]))

    monkeypatch.setattr(_likelihood, "log_likelihood", fake)
    capsys.readouterr()
    assert cli.main(["nll", str(run / "checkpoint.eqx"), "--out", str(tmp_path / "nll")]) == 0
    _, test = split_rows(30, 3, seed=3)
    np.testing.assert_array_equal(seen[0], x[test])  # the recorded split, all 3 test rows
    report = json.loads((tmp_path / "nll" / "nll.json").read_text())
    assert report["metric"] == "nll_nats" and report["num"] == 3 and report["split_seed"] == 3
    assert_card(report["settings"], num=3, seed=1, dataset="file", ema=True)
    assert report["interval"] == [0.0, 0.0] and report["nfe_range"] == [1.0, 1.0]
    assert "changed" not in capsys.readouterr().err  # negative control for the hash warning
    np.savez(data, x=x + 1)  # resuming on another file's content is refused, naming it
    assert cli.main(["train", "--resume", "--out", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "changed since it started" in err and str(data.resolve()) in err


def _train_error(tmp_path, capsys, name, array, *extra):
    path = tmp_path / name
    np.save(path, array)
    assert cli.main(["train", "--data", str(path), "--out", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert str(path.resolve()) in err  # the message names the file
    return err


@pytest.mark.parametrize(
    "array, extra, problem",
    [
        (np.zeros((5, 4, 4), np.uint8), (), "ndim 3"),
        (np.r_[np.zeros((3, 2)), [[np.nan, 0.0]]], (), "NaN or inf value(s), the first in row 3"),
        (np.zeros((4, 1, 4, 4), np.float32), (), "need their range"),
        (np.full((4, 1, 4, 4), 1.5, np.float32), ("--data-range", "0", "1"), "outside"),
        (np.zeros((4, 1, 6, 8), np.uint8), (), "divisible by 4"),
        (np.zeros((1, 2)), (), "at least 2"),
        (np.zeros((4, 1, 4, 4), np.uint8), ("--data-range", "0", "1"), "drop --data-range"),
        (np.zeros((4, 1, 4, 4), np.int64), (), "integer images"),
    ],
)
def test_each_bad_file_is_refused_naming_the_file_and_the_problem(
    tmp_path, capsys, array, extra, problem
):
    assert problem in _train_error(tmp_path, capsys, "bad.npy", array, *extra)


def test_npz_rules_and_missing_or_foreign_files(tmp_path, capsys):
    several = tmp_path / "several.npz"
    np.savez(several, a=np.zeros((4, 2)), b=np.zeros((4, 2)))
    with pytest.raises(DataFileError, match=r"several\.npz.*name the data 'x'"):
        read_data_file(several)
    only = tmp_path / "only.npz"
    np.savez(only, points=np.ones((4, 2)))
    assert read_data_file(only).shape == (2,)
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, x=np.ones((4, 2)), y=np.array([0, 2, 1, 2]))
    assert read_data_file(labelled).num_classes == 3
    np.savez(labelled, x=np.ones((4, 2)), y=np.array([0.5, 2, 1, 2]))
    with pytest.raises(DataFileError, match="labels y must be integers"):
        read_data_file(labelled)
    with pytest.raises(DataFileError, match=r"missing\.npy: no such file"):
        read_data_file(tmp_path / "missing.npy")
    (tmp_path / "table.csv").write_text("1,2\n")
    with pytest.raises(DataFileError, match=r"table\.csv: unknown suffix"):
        read_data_file(tmp_path / "table.csv")
    # flags: --data with --dataset, --data-range without --data, --conditional without labels
    np.save(tmp_path / "p.npy", np.ones((4, 2)))
    for argv, words in (
        (["--data", str(tmp_path / "p.npy"), "--dataset", "moons"], "pass one of them"),
        (["--data-range", "0", "1"], "--data-range goes with --data"),
        (["--data", str(tmp_path / "p.npy"), "--conditional"], "labelled dataset"),
    ):
        assert cli.main(["train", *argv, "--out", str(tmp_path / "o")]) == 2
        assert words in capsys.readouterr().err


def test_float_images_map_onto_minus_one_one_and_nll_counts_the_map(tmp_path):
    x = np.random.default_rng(2).uniform(0, 1, (10, 2, 4, 4)).astype(np.float32)
    path = tmp_path / "float.npy"
    np.save(path, x)
    source = read_data_file(path, data_range=(0, 1))
    assert source.levels is None and source.data_range == (0.0, 1.0)
    assert source.log_scale() == pytest.approx(32 * np.log(2.0))  # D ln(2 / (hi - lo))
    config = recipes.TrainConfig(dataset="file", data=source, seed=5)
    rows = recipe_data.training_set(config, None)
    train, _ = split_rows(10, 1, seed=5)
    np.testing.assert_allclose(rows.x, 2 * x[train] - 1, atol=1e-6)
    assert rows.dequantize is None and rows.labels is None


def test_a_changed_file_warns_in_the_library_and_is_a_note_in_nll(tmp_path, capsys, monkeypatch):
    path = tmp_path / "digits.npy"
    np.save(path, _images(20, (1, 4, 4)))
    config = recipes.TrainConfig(dataset="file", data=read_data_file(path), model_size="tiny")
    ckpt = tmp_path / "checkpoint.eqx"
    save(ckpt, recipes.model_from_config(config, key=jr.key(0)),
         hyperparameters=dataclasses.asdict(config))  # fmt: skip
    calls = []

    def fake(sde, score, k, **kwargs):
        calls.append(kwargs["levels"])
        return types.SimpleNamespace(bpd=jnp.full(k.shape[0], 3.0), nfe=jnp.ones(k.shape[0]))

    monkeypatch.setattr(_likelihood, "bits_per_dim", fake)
    argv = ["nll", str(ckpt), "--out", str(tmp_path / "nll"), "--no-progress", "--no-shard"]
    assert cli.main(argv) == 0
    assert "changed since training" not in capsys.readouterr().err  # unchanged: no note
    np.save(path, _images(20, (1, 4, 4), seed=1))  # same shape, other content
    with pytest.warns(DataFileChangedWarning, match=str(path.resolve())):
        recipe_data.held_out(config, 2, None)
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "changed since training" in err and str(path.resolve()) in err
    assert calls == [256, 256]  # uint8 files: bits/dim at 8 bits
    np.save(path, _images(20, (1, 4, 8)))  # another shape: refused, naming the file
    assert cli.main(argv) == 2
    assert "the checkpoint was trained on 20 samples of shape (1, 4, 4)" in capsys.readouterr().err


def test_data_file_config_round_trips_through_the_sidecar_json():
    source = DataFile("/d/x.npy", "0" * 64, (3, 8, 8), "float", 50, 5, (-1.0, 1.0), 4)
    config = recipes.TrainConfig(dataset="file", data=source, conditional=True)
    again = recipes.TrainConfig.from_hyperparameters(
        json.loads(json.dumps(dataclasses.asdict(config)))
    )
    assert again == config and hash(again) == hash(config)
    assert again.sample_shape == (3, 8, 8) and recipe_data.num_classes(again) == 4
    with pytest.raises(ValueError, match="go together"):
        recipes.TrainConfig(dataset="file")
    with pytest.raises(ValueError, match="go together"):
        recipes.TrainConfig(dataset="moons", data=source)


def test_mnist_config_builds_the_28x28_recipe():
    config = recipes.TrainConfig(dataset="mnist")
    assert config.sample_shape == (1, 28, 28) and config.data_levels == 256
    net = recipes.skeleton_from_config(config).net
    assert net.data_shape == (1, 28, 28)
    defaults = recipes.dataset_defaults("mnist")
    assert defaults["weighting"] == "likelihood" and defaults["levels"] == 256
    assert defaults["steps"] * 0.28 < 3600  # the CPU budget's arithmetic (0.28 s a step)
    with pytest.raises(ValueError, match="digits convention"):
        recipes.TrainConfig(dataset="mnist", levels=17)


@pytest.mark.slow
def test_mnist_smoke_trains_samples_and_reports_mnist_digit_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "mnist", "--steps", "2", "--samples", "2", "--out", str(run)]
    assert cli.main([*argv, *TINY]) == 0
    hyper = read_sidecar(run / "checkpoint.eqx")["hyperparameters"]
    assert hyper["dataset"] == "mnist" and hyper["weighting"] == "likelihood"
    assert np.load(run / "samples.npy").shape == (2, 1, 28, 28)
    metrics = json.loads((run / "digit_metrics.json").read_text())
    assert metrics["num_samples"] == 2 and "frechet" in metrics


def test_inpaint_completes_the_recorded_test_split_of_an_image_file(tmp_path, capsys):
    images = _images(20, (1, 4, 4))
    path = tmp_path / "tiles.npz"
    np.savez(path, x=images, y=np.arange(20) % 3)
    config = recipes.TrainConfig(dataset="file", data=read_data_file(path), model_size="tiny")
    ckpt = tmp_path / "checkpoint.eqx"
    save(ckpt, recipes.model_from_config(config, key=jr.key(0)),
         hyperparameters=dataclasses.asdict(config))  # fmt: skip
    out = tmp_path / "inpaint"
    argv = ["inpaint", str(ckpt), "--images", "2", "--steps", "2", "--out", str(out)]
    assert cli.main([*argv, "--no-progress"]) == 0
    saved = np.load(out / "inpaint.npz")
    _, test = split_rows(20, 2, seed=0)
    np.testing.assert_allclose(saved["truth"], (2 * (images[test] + 0.5) / 256 - 1), atol=1e-6)
    np.testing.assert_array_equal(saved["labels"], test % 3)
    report = json.loads((out / "inpaint.json").read_text())
    assert_card(report["settings"], num=2, seed=0, levels=256, ema=False)
    assert report["settings"]["steps"] == 2 and report["settings"]["noise_std"] == 0.05
    for name in ("model", "mean_image", "empirical_posterior"):
        assert_in_interval(report["metrics"][f"{name}_hidden_rmse"])
    assert report["metrics"]["model_hidden_rmse"]["value"] == report["hidden_rmse"]  # one figure
    assert not any("accuracy" in k for k in report["metrics"])  # no digit classifier for tiles
    assert cli.main([*argv[:3], "3", *argv[4:], "--no-progress"]) == 2  # the split holds 2
    assert "test split" in capsys.readouterr().err
