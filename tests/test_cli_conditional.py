"""`scoresde sample --label --guidance` and `scoresde inpaint`, on tiny untrained checkpoints
(written in the test, no training: these check the code paths and the refusals, not quality)."""

import dataclasses
import json
import types

import jax.random as jr
import numpy as np
import pytest
from helpers import assert_card, record_figures

from scoresde import cli
from scoresde._cli import figures as figures_mod, inpaint as inpaint_cmd, sample as sample_cmd
from scoresde._metrics import digits as _digits
from scoresde._training import recipes
from scoresde._training.checkpoint import save


def _checkpoint(folder, **config):
    cfg = recipes.TrainConfig(model_size="tiny", **config)
    model = recipes.model_from_config(cfg, key=jr.key(0))
    path = folder / "checkpoint.eqx"
    save(path, model, hyperparameters=dataclasses.asdict(cfg))
    return path


# One worker for the module, and its fixtures session-scoped: pytest tears a module fixture
# down whenever the worker turns to another module, so only these build it once per run.
pytestmark = pytest.mark.xdist_group("cli_conditional")


@pytest.fixture(scope="session")
def cond_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("cond"), dataset="digits", conditional=True)


@pytest.fixture(scope="session")
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


def test_sample_with_label_titles_its_plot_and_prints_the_label_fraction_first(
    cond_ckpt, tmp_path, capsys, monkeypatch
):
    """samples.png is titled with the sampler, steps, label and guidance; the digit metrics
    line starts with the fraction classified as the requested label (`label_fraction` in the
    JSON), before the class TV against all classes. Sampler and classifier are stand-ins."""
    x = np.linspace(-1, 1, 4 * 64, dtype=np.float32).reshape(4, 1, 8, 8)
    monkeypatch.setattr(sample_cmd, "draw", lambda *a, **k: types.SimpleNamespace(
        x=x, nfe=np.full(4, 6)))  # fmt: skip
    hist = np.zeros(10)
    hist[[3, 5]] = 0.75, 0.25
    fake = _digits.DigitMetrics(hist, np.full(10, 0.1), 0.65, 0.9, 0.95, 12.0, 3.0, 4,
                                (10.0, 14.0), (2.0, 4.0), (0.5, 0.8), 200, 0)  # fmt: skip
    monkeypatch.setattr(_digits, "digit_metrics", lambda samples, classifier=None: fake)
    argv = ["sample", str(cond_ckpt), "--label", "3", "--guidance", "2", "--num", "4",
            "--steps", "5", "--sampler", "sde", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    with record_figures() as figures:
        assert cli.main(argv) == 0
    (fig,) = figures
    for part in ("sde", "5 steps", "label 3", "guidance 2", "mean NFE 6"):
        assert part in fig["suptitle"], fig["suptitle"]
    assert fig["size"][0] >= 4 * 64 and fig["size"][1] >= 64
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("digit metrics"))
    assert line.startswith("digit metrics: 0.750 classified as label 3; ")
    assert line.index("classified as label 3") < line.index("class TV 0.650")
    report = json.loads((tmp_path / "digit_metrics.json").read_text())
    assert report["label"] == 3 and report["label_fraction"] == 0.75
    assert_card(report["settings"], num=4, seed=0, label=3, guidance=2.0, sampler="sde", steps=5)
    assert report["frechet_interval"] == [10.0, 14.0] and "bootstrap" in report["interval_kind"]


def test_sample_refuses_a_label_on_an_unconditional_checkpoint(plain_ckpt, tmp_path, capsys):
    assert cli.main(["sample", str(plain_ckpt), "--label", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "class-conditional checkpoint" in err and "unconditional" in err


def test_inpaint_writes_figure_json_and_reports_hidden_error(cond_ckpt, tmp_path, capsys):
    argv = ["inpaint", str(cond_ckpt), "--mask", "lower-half", "--images", "2", "--steps", "2",
            "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    with record_figures() as figures:
        assert cli.main(argv) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "RMSE on the hidden pixels" in out and "dps" in out  # the default method
    report = json.loads((tmp_path / "inpaint.json").read_text())
    # the baselines are printed and saved; a method that loses to the mean image is flagged
    assert report["method"] == "dps" and "empirical posterior" in out
    assert 0 < report["empirical_posterior_hidden_rmse"] and 0 < report["mean_image_hidden_rmse"]
    assert report["beats_mean_image"] == (report["hidden_rmse"] < report["mean_image_hidden_rmse"])
    flagged = "does not beat the mean image" in captured.err
    assert flagged == (not report["beats_mean_image"])
    data = np.load(tmp_path / "inpaint.npz")
    mask = data["mask"]
    assert mask.shape == (1, 8, 8) and mask[:, :4].all() and not mask[:, 4:].any()
    # the observed images carry nothing of the hidden pixels
    assert (data["observed"][:, :, 4:] == 0).all()
    hidden = np.broadcast_to(~mask, data["truth"].shape)
    rmse = np.sqrt(np.mean((data["completed"][hidden] - data["truth"][hidden]) ** 2))
    np.testing.assert_allclose(report["hidden_rmse"], rmse, rtol=1e-6)
    # network evaluations: (2 steps + the final denoising step) x DPS's 1 evaluation + 1 VJP
    assert report["nfe_per_image"] == 3 * 3
    # inpaint.png: titled columns (observed, the method, truth), digits named, a title with the
    # mask and the hidden-pixel RMSE, each 8x8 digit drawn over at least 64x64 pixels
    (fig,) = figures
    assert fig["path"].endswith("inpaint.png")
    assert figures_mod.png_size(tmp_path / "inpaint.png") == fig["size"]
    assert fig["size"][0] >= 3 * 64 and fig["size"][1] >= 2 * 64
    assert "lower-half hidden" in fig["suptitle"] and f"{rmse:.3f}" in fig["suptitle"]
    assert [ax["title"] for ax in fig["axes"][:3]] == ["observed", "DPS", "truth"]
    assert fig["axes"][0]["ylabel"] == f"digit {data['labels'][0]}"


def test_empirical_posterior_draws_the_training_image_that_explains_the_observation():
    mask = inpaint_cmd.make_mask("lower-half")
    train = np.random.default_rng(0).uniform(-1, 1, (50, 1, 8, 8))
    observed = train[[7, 31]] * mask
    picked = inpaint_cmd.empirical_posterior(train, observed, mask, 0.05, seed=0)
    np.testing.assert_array_equal(picked, train[[7, 31]])
    # negative control: with a vague measurement the draws spread over the training set
    vague = [
        inpaint_cmd.empirical_posterior(train, observed, mask, 100.0, seed=s)[0] for s in range(5)
    ]
    assert len({v.tobytes() for v in vague}) > 1


def test_inpaint_grid_without_matplotlib_is_upscaled():
    x = np.zeros((2, 1, 8, 8))
    image = inpaint_cmd.grid(x, x, x, inpaint_cmd.make_mask("lower-half"))
    # 2 rows x 3 columns of 8x8 images at 12x with 1-pixel gaps
    assert image.shape == (1, 2 * 97 + 1, 3 * 97 + 1)


def test_inpaint_refuses_point_data_and_too_many_images(tmp_path, plain_ckpt, capsys):
    toy = _checkpoint(tmp_path / "toy", dataset="moons")
    assert cli.main(["inpaint", str(toy), "--out", str(tmp_path / "a")]) == 2
    assert "needs an image checkpoint" in capsys.readouterr().err
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
