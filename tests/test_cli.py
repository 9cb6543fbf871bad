import dataclasses
import json
import types

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import assert_card, assert_in_interval

from scoresde import cli
from scoresde._cli import (
    bench as bench_command,
    demo as demo_cmd,
    sample as sample_cmd,
    train as cli_train,
)
from scoresde._likelihood import flow as _likelihood
from scoresde._likelihood.divergence import Hutchinson
from scoresde._training import recipes
from scoresde._training.checkpoint import save


def test_demo_quick_writes_table_json_and_plot(tmp_path, capsys):
    assert cli.main(["demo", "--quick", "--num-samples", "64", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Euler-Maruyama" in out and "sliced W2" in out
    report = json.loads((tmp_path / "demo.json").read_text())
    assert len(report["rows"]) == 4
    for row in report["rows"]:
        assert row["nfe"] > 0 and row["run_s"] >= 0 and row["sliced_w2"] >= 0
    assert (tmp_path / "demo.png").stat().st_size > 1000
    # the sliced-W2 column beside its two-sample floor, from independent reference draws
    assert "vs floor" in out and "floor" in out.splitlines()[1]
    draws = report["noise_floor_sliced_w2_draws"]
    assert len(draws) == 5 and len(set(draws)) == 5
    for row in report["rows"]:
        assert row["at_floor"] == (row["sliced_w2"] <= max(draws))


def test_bad_flags_exit_nonzero(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["demo", "--num-samples", "many"])
    assert e.value.code != 0
    with pytest.raises(SystemExit) as e:
        cli.main(["nonsense"])
    assert e.value.code != 0
    assert cli.main(["demo", "--num-samples", "1"]) == 2
    assert "num-samples" in capsys.readouterr().err


# --- shared by the tests below: checkpoints written without training (no compile) -------------


def _checkpoint(folder, **config):
    cfg = recipes.TrainConfig(model_size="tiny", **config)
    model = recipes.model_from_config(cfg, key=jr.key(0))
    path = folder / "checkpoint.eqx"
    save(path, model, hyperparameters=dataclasses.asdict(cfg))
    return path


# One worker for the module, and its fixtures session-scoped: pytest tears a module fixture
# down whenever the worker turns to another module, so only these build it once per run.
pytestmark = pytest.mark.xdist_group("cli")


@pytest.fixture(scope="session")
def toy_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("toy"), dataset="moons")


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("digits"), dataset="digits")


def _fake_bits_per_dim(calls):
    def fake(sde, score, k, **kwargs):
        calls.append(dict(kwargs, num=k.shape[0], top=int(jnp.max(k))))
        return types.SimpleNamespace(bpd=jnp.full(k.shape[0], 3.0), nfe=jnp.full(k.shape[0], 90))

    return fake


def _no_compute(*args, **kwargs):
    raise AssertionError("computation started before the arguments were checked")


@pytest.mark.parametrize("command", ["demo", "train", "sample", "nll", "bench"])
def test_help_shows_every_default_and_one_output_root(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # no wrapping inside a default
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert f"(default: scoresde-out/{command})" in text
    assert "--seed SEED" in text and ("(default: 0)" in text or "(default: 1)" in text)


@pytest.mark.parametrize("command", ["demo", "train", "sample", "nll", "bench"])
def test_out_that_is_a_file_fails_at_once_with_one_line(
    command, toy_ckpt, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(sample_cmd, "draw", _no_compute)
    monkeypatch.setattr(_likelihood, "log_likelihood", _no_compute)
    monkeypatch.setattr(cli_train, "train", _no_compute)
    monkeypatch.setattr(demo_cmd, "run_demo", _no_compute)
    monkeypatch.setattr(bench_command, "run_bench", _no_compute)
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    argv = [command] + ([str(toy_ckpt)] if command in ("sample", "nll") else [])
    assert cli.main([*argv, "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--out" in err and "existing file" in err and "\n" not in err


@pytest.mark.parametrize("command", ["sample", "nll"])
def test_a_folder_passed_as_checkpoint_says_so(command, toy_ckpt, tmp_path, capsys):
    assert cli.main([command, str(toy_ckpt.parent), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and str(toy_ckpt) in err


def test_nll_num_beyond_the_digits_test_split_is_refused(
    digits_ckpt, tmp_path, capsys, monkeypatch
):
    calls = []
    monkeypatch.setattr(_likelihood, "bits_per_dim", _fake_bits_per_dim(calls))
    assert cli.main(["nll", str(digits_ckpt), "--num", "1000", "--out", str(tmp_path)]) == 2
    assert "297" in capsys.readouterr().err
    assert not calls and not (tmp_path / "nll.json").exists()


def test_nll_on_images_defaults_to_hutchinson_at_t_eps_1e_4(
    digits_ckpt, tmp_path, capsys, monkeypatch
):
    calls = []
    monkeypatch.setattr(_likelihood, "bits_per_dim", _fake_bits_per_dim(calls))
    assert cli.main(["nll", str(digits_ckpt), "--num", "5", "--out", str(tmp_path)]) == 0
    (call,) = calls
    assert isinstance(call["divergence"], Hutchinson) and call["num"] == 5
    assert call["t_eps"] == 1e-4
    err = capsys.readouterr().err
    assert "divergence: hutchinson" in err and "1 Jacobian-vector product" in err
    assert "compiling" in err
    report = json.loads((tmp_path / "nll.json").read_text())
    assert report["num"] == 5 and report["divergence"] == "hutchinson"
    assert report["value"] == 3.0 and report["t_eps"] == call["t_eps"]
    # down to the library's default start, validated in float32 against float64
    argv = ["nll", str(digits_ckpt), "--num", "5", "--t-eps", "1e-5", "--out", str(tmp_path)]
    assert cli.main(argv) == 0 and calls[-1]["t_eps"] == 1e-5


def test_nll_evaluates_a_digits_checkpoint_in_its_own_convention(
    digits_ckpt, tmp_path_factory, capsys, monkeypatch
):
    ckpt17 = _checkpoint(tmp_path_factory.mktemp("digits17"), dataset="digits", levels=17)
    for path, levels, top in ((ckpt17, 17, 16), (digits_ckpt, 256, 255)):
        calls = []
        monkeypatch.setattr(_likelihood, "bits_per_dim", _fake_bits_per_dim(calls))
        out = tmp_path_factory.mktemp("nll")
        assert cli.main(["nll", str(path), "--num", "297", "--out", str(out)]) == 0
        (call,) = calls
        assert call["levels"] == levels and call["top"] == top  # grey levels or 8-bit values
        assert call["num_repeats"] == 1
        assert json.loads((out / "nll.json").read_text())["levels"] == levels
        assert (" at 17 levels" if levels == 17 else " at 8 bits") in capsys.readouterr().err


def test_nll_on_2d_data_is_exact_and_emits_no_raw_warning(toy_ckpt, tmp_path, capsys, recwarn):
    argv = ["nll", str(toy_ckpt), "--num", "4", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    assert not [str(w.message) for w in recwarn]
    out, err = capsys.readouterr()
    assert "divergence: exact" in err and "2 Jacobian-vector products" in err
    assert "note:" not in err and "Warning" not in err
    report = json.loads((tmp_path / "nll.json").read_text())
    assert report["num"] == 4 and report["divergence"] == "exact"
    assert_card(report["settings"], num=4, seed=1, solver="Dopri5, rtol = atol = 1e-5")
    assert_in_interval(report)
    assert report["interval"][1] - report["interval"][0] > 0 and "95 % interval" in out
    assert np.isfinite(report["value"]) and report["nfe_mean"] > 0
    assert "exact divergence" in out


def test_nll_half_width_certifies_the_held_out_mean(toy_ckpt, tmp_path, capsys):
    """`--half-width`: a planned interval for the held-out set's own mean (exact divergence on
    2-D data, so only the solver bias is uncertain), its parts and its cost in the report."""
    argv = ["nll", str(toy_ckpt), "--num", "40", "--half-width", "0.05", "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    report = json.loads((tmp_path / "nll.json").read_text())
    low, high = report["interval"]
    assert low < report["value"] < high and high - low < 2 * 1.5 * 0.05
    assert report["stderr_noise"] == 0.0 and report["stderr_bias"] >= 0.0
    assert report["total_nfe"] > 40 and 32 <= report["num_tight"] <= 40
    assert "95 % interval" in capsys.readouterr().out


def test_nll_half_width_on_digits_passes_probes_draws_and_levels(
    digits_ckpt, tmp_path, capsys, monkeypatch
):
    from scoresde._likelihood import certified as _mean_likelihood

    calls = []

    def fake(sde, score, k, **kwargs):
        calls.append(dict(kwargs, num=k.shape[0]))
        nats = types.SimpleNamespace(cheap_tol=0.01, tight_indices=jnp.arange(32),
                                     total_nfe=jnp.asarray(1234))  # fmt: skip
        return types.SimpleNamespace(bpd=jnp.asarray(2.0), low=jnp.asarray(1.99),
                                     high=jnp.asarray(2.01), stderr=jnp.asarray(0.005),
                                     stderr_probes=jnp.asarray(0.004),
                                     stderr_bias=jnp.asarray(0.003), nats=nats)  # fmt: skip

    monkeypatch.setattr(_mean_likelihood, "estimate_bits_per_dim", fake)
    argv = ["nll", str(digits_ckpt), "--num", "50", "--half-width", "0.01", "--probes", "4",
            "--draws", "2", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    (call,) = calls
    assert call["half_width"] == 0.01 and call["population"] is False
    assert call["num_repeats"] == 2 and call["levels"] == 256 and call["num"] == 50
    assert isinstance(call["divergence"], Hutchinson) and call["divergence"].num_probes == 4
    report = json.loads((tmp_path / "nll.json").read_text())
    np.testing.assert_allclose(report["interval"], [1.99, 2.01], rtol=1e-6)
    assert report["total_nfe"] == 1234
    assert report["draws"] == 2 and report["probes"] == 4 and report["num_tight"] == 32
    assert "4 Jacobian-vector products" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--half-width", "0"], "--half-width must be > 0"),
        (["--half-width", "0.1", "--num", "1"], "--num 2 or more"),
        (["--probes", "0"], "--probes must be >= 1"),
        (["--draws", "0"], "--draws must be >= 1"),
        (["--t-eps", "1e-6"], "--t-eps must lie in [1e-05, 1)"),
    ],
)
def test_nll_bad_half_width_or_probes_fail_before_computing(
    extra, message, toy_ckpt, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(_likelihood, "log_likelihood", _no_compute)
    assert cli.main(["nll", str(toy_ckpt), "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err


def test_sample_npz_holds_samples_and_nfe(toy_ckpt, tmp_path, capsys):
    argv = ["sample", str(toy_ckpt), "--num", "6", "--steps", "3", "--format", "npz"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    assert "compiling" in capsys.readouterr().err
    with np.load(tmp_path / "samples.npz") as f:
        assert f["samples"].shape == (6, 2) and np.all(np.isfinite(f["samples"]))
        assert f["nfe"].shape == (6,) and np.all(f["nfe"] == 3)
    assert not (tmp_path / "samples.npy").exists()
    card = json.loads((tmp_path / "sample.json").read_text())  # the metric card
    assert_card(card["settings"], num=6, seed=0, steps=3, sampler="dpm++2m", levels=None)
    assert card["nfe_mean"] == 3 and card["nfe_range"] == [3, 3]


def test_sample_png_writes_one_image_per_sample(digits_ckpt, toy_ckpt, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    x = np.linspace(-1, 1, 3 * 64, dtype=np.float32).reshape(3, 1, 8, 8)
    fake = types.SimpleNamespace(x=x, nfe=np.full(3, 7))
    monkeypatch.setattr(sample_cmd, "draw", lambda *a, **k: fake)
    argv = ["sample", str(digits_ckpt), "--num", "3", "--format", "png"]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("sample_*.png"))
    assert [f.name for f in files] == ["sample_00000.png", "sample_00001.png", "sample_00002.png"]
    for f, image in zip(files, x, strict=True):
        pixels = plt.imread(f)  # PNG decoder of matplotlib: values in [0, 1]
        assert pixels.shape == (8, 8)
        np.testing.assert_allclose(pixels, np.rint((image[0] + 1) / 2 * 255) / 255, atol=1e-6)
    # one PNG per sample needs images
    assert cli.main(["sample", str(toy_ckpt), "--format", "png", "--out", str(tmp_path)]) == 2
