"""`scoresde sample --label --guidance` and `scoresde inpaint`, on tiny untrained checkpoints
(written in the test, no training: these check the code paths and the refusals, not quality)."""

import dataclasses
import json

import jax.random as jr
import numpy as np
import pytest

from scoresde import cli
from scoresde._cli import inpaint as inpaint_cmd
from scoresde._training import recipes
from scoresde._training.checkpoint import save


def _checkpoint(folder, **config):
    cfg = recipes.TrainConfig(model_size="tiny", **config)
    model = recipes.model_from_config(cfg, key=jr.key(0))
    path = folder / "checkpoint.eqx"
    save(path, model, hyperparameters=dataclasses.asdict(cfg))
    return path


@pytest.fixture(scope="module")
def cond_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("cond"), dataset="digits", conditional=True)


@pytest.fixture(scope="module")
def plain_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("plain"), dataset="digits")


def test_sample_with_label_and_guidance(cond_ckpt, tmp_path, capsys):
    argv = ["sample", str(cond_ckpt), "--label", "3", "--guidance", "2.0", "--num", "3",
            "--steps", "2", "--sampler", "sde", "--format", "npz", "--no-progress",
            "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "label 3, guidance 2" in out
    data = np.load(tmp_path / "samples.npz")
    assert data["samples"].shape == (3, 1, 8, 8) and np.isfinite(data["samples"]).all()
    # network evaluations: 2 steps + the final denoising step, 2 per classifier-free call
    assert (data["nfe"] == 3 * 2).all()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--label", "10"], "--label must lie in [0, 9]"),
        (["--label", "-1"], "--label must lie in [0, 9]"),
        (["--guidance", "2.0"], "--guidance needs --label"),
        (["--label", "1", "--guidance", "-1"], "--guidance must be >= 0"),
    ],
)
def test_sample_refuses_bad_labels_before_computing(cond_ckpt, tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    assert cli.main(["sample", str(cond_ckpt), *extra, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_sample_refuses_a_label_on_an_unconditional_checkpoint(plain_ckpt, tmp_path, capsys):
    assert cli.main(["sample", str(plain_ckpt), "--label", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "class-conditional checkpoint" in err and "unconditional" in err


def test_inpaint_writes_grid_json_and_reports_hidden_error(cond_ckpt, tmp_path, capsys):
    argv = ["inpaint", str(cond_ckpt), "--mask", "lower-half", "--images", "2", "--steps", "2",
            "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "RMSE on the hidden pixels" in out and "pigdm" in out
    report = json.loads((tmp_path / "inpaint.json").read_text())
    data = np.load(tmp_path / "inpaint.npz")
    mask = data["mask"]
    assert mask.shape == (1, 8, 8) and mask[:, :4].all() and not mask[:, 4:].any()
    # the observed images carry nothing of the hidden pixels
    assert (data["observed"][:, :, 4:] == 0).all()
    hidden = np.broadcast_to(~mask, data["truth"].shape)
    rmse = np.sqrt(np.mean((data["completed"][hidden] - data["truth"][hidden]) ** 2))
    np.testing.assert_allclose(report["hidden_rmse"], rmse, rtol=1e-6)
    # network evaluations: (2 steps + the final denoising step) x PiGDM's 1 evaluation + 1 VJP
    assert report["nfe_per_image"] == 3 * 3
    png = (tmp_path / "inpaint.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    # 2 rows x 3 columns of 8x8 images at 4x with 1-pixel gaps
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (3 * 33 + 1, 2 * 33 + 1)


def test_inpaint_refuses_point_data_and_too_many_images(tmp_path, plain_ckpt, capsys):
    toy = _checkpoint(tmp_path / "toy", dataset="moons")
    assert cli.main(["inpaint", str(toy), "--out", str(tmp_path / "a")]) == 2
    assert "digits checkpoint" in capsys.readouterr().err
    assert cli.main(["inpaint", str(plain_ckpt), "--images", "9999",
                     "--out", str(tmp_path / "b")]) == 2  # fmt: skip
    assert "--images must be <= 297" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_masks():
    for name in inpaint_cmd.MASKS:
        mask = inpaint_cmd.make_mask(name)
        assert mask.dtype == bool and 0 < mask.sum() < 64
    assert inpaint_cmd.make_mask("centre").sum() == 64 - 16
    assert (inpaint_cmd.make_mask("left-half") == ~inpaint_cmd.make_mask("right-half")).all()
