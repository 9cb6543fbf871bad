"""Training loop, checkpoints and the `train` CLI subcommand."""

import argparse
import json
import math
import types

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import assert_no_recompile, record_figures

import scoresde as ss
from scoresde._cli import train as _cli_train
from scoresde._training import recipes as _recipes

SDE = ss.VPSDE()
LOSS = ss.DenoisingScoreMatching(SDE)
OPT = ss.adam_with_warmup(1e-3, warmup_steps=5)


def _model(key=0, width=16):
    return ss.EpsPrediction(ss.MLPScoreNet(2, width=width, depth=1, key=jr.key(key)), SDE)


def _data(n=512):
    return ss.gaussian_mixture(jr.key(0), n, num_components=2)


def _leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def _fit(**kw):
    args = dict(key=jr.key(1), steps=20, batch_size=32, optimizer=OPT, steps_per_call=8)
    args.update(kw)
    model = args.pop("model", _model())
    data = args.pop("data", _data())
    return ss.fit(model, LOSS, data, progress=False, **args)


def test_fit_learns_is_reproducible_and_does_not_retrace():
    first = _fit(steps=60)
    with assert_no_recompile():
        again = _fit(steps=60)  # same shapes and static arguments: no new trace
    for a, b in zip(_leaves(first.model), _leaves(again.model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.losses.shape == (60,) and np.all(np.isfinite(first.losses))
    assert int(first.state.step) == 60
    # A different number of steps (a partial last call) still reuses the compiled step.
    with assert_no_recompile():
        third = _fit(steps=13)
    assert int(third.state.step) == 13 and third.losses.shape == (13,)
    # Training lowers the loss (compare means of the first and last 40 steps).
    with assert_no_recompile():
        long = _fit(steps=400)
    assert long.losses[-40:].mean() < 0.8 * long.losses[:40].mean()


@pytest.mark.slow
def test_fit_randomness_comes_from_the_step_index():
    """Step k uses fold_in(key, k): fusing more steps per call changes nothing."""
    a = _fit(steps=16, steps_per_call=8)
    b = _fit(steps=16, steps_per_call=16)
    for x, y in zip(_leaves(a.model), _leaves(b.model), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    c = _fit(steps=16, steps_per_call=8, key=jr.key(2))
    assert not np.allclose(a.losses, c.losses)


def test_resume_equals_one_run():
    one = _fit(steps=16, steps_per_call=8)
    half = _fit(steps=8, steps_per_call=8)
    rest = ss.fit(None, LOSS, _data(), key=jr.key(1), steps=8, batch_size=32, optimizer=OPT,
                  steps_per_call=8, progress=False, state=half.state)  # fmt: skip
    for x, y in zip(_leaves(one.state), _leaves(rest.state), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_ema_and_eval_hook():
    res = _fit(steps=20, ema_decay=0.0)
    for x, y in zip(_leaves(res.model), _leaves(res.ema_model), strict=True):
        np.testing.assert_array_equal(x, y)
    res = _fit(steps=20, ema_decay=0.99)
    pairs = zip(_leaves(res.model), _leaves(res.ema_model), strict=True)
    assert any(not np.array_equal(x, y) for x, y in pairs)
    seen = []
    res = _fit(steps=20, eval_every=8, eval_fn=lambda s: seen.append(int(s.step)) or len(seen))
    assert [s for s, _ in res.evals] == [8, 16, 20] and seen == [8, 16, 20]


def test_nan_data_is_rejected_naming_the_row_or_batch():
    data = np.asarray(_data()).copy()
    data[37, 1] = np.nan
    with pytest.raises(ValueError, match="row 37"):
        _fit(data=data)
    data[37, 1] = np.inf
    with pytest.raises(ValueError, match="row 37"):
        _fit(data=data)

    def stream():
        for i in range(100):
            batch = np.ones((32, 2), np.float32) * 0.1
            if i == 3:
                batch[5, 0] = np.nan
            yield batch

    with pytest.raises(ValueError, match="batch 3"):
        _fit(data=stream())


def test_fit_from_an_iterator_of_batches():
    res = _fit(data=ss.batches(jr.key(0), _data(), 32), steps=12)
    assert res.losses.shape == (12,) and np.all(np.isfinite(res.losses))
    with pytest.raises(ValueError, match="ran out"):
        _fit(data=iter([np.zeros((32, 2), np.float32)] * 3), steps=12)


def test_fit_rejects_bad_arguments():
    with pytest.raises(TypeError, match="steps"):
        _fit(steps=2.5)
    with pytest.raises(ValueError, match="steps"):
        _fit(steps=0)
    with pytest.raises(ValueError, match="ema_decay"):
        _fit(ema_decay=1.0)
    with pytest.raises(ValueError, match="eval_fn"):
        _fit(eval_every=5)
    with pytest.raises(ValueError, match="shape"):
        _fit(data=jnp.ones(10))
    with pytest.raises(ValueError, match="learning_rate"):
        ss.adam_with_warmup(-1.0)


# --- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    res = _fit(steps=10)
    path = tmp_path / "model.eqx"
    ss.save(path, res.ema_model, hyperparameters={"width": 16}, ema=True)
    meta = ss.read_sidecar(path)
    assert meta["model"] == "EpsPrediction" and meta["network"] == "MLPScoreNet"
    assert meta["sde"]["class"] == "VPSDE" and meta["ema"] is True
    assert meta["versions"]["jax"] == jax.__version__
    loaded = ss.load(path, _model(key=5), hyperparameters={"width": 16}, ema=True)
    for a, b in zip(_leaves(res.ema_model), _leaves(loaded), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    # A whole TrainState (optimiser state included) round-trips too.
    state_path = tmp_path / "state.eqx"
    ss.save(state_path, res.state)
    skeleton = ss.TrainState.init(_model(key=5), OPT)
    state = ss.load(state_path, skeleton)
    for a, b in zip(_leaves(res.state), _leaves(state), strict=True):
        np.testing.assert_array_equal(a, b)
    # An abstract skeleton (no weights initialised) loads the same arrays.
    abstract = eqx.filter_eval_shape(_model, key=5)
    assert not _leaves(abstract)  # ShapeDtypeStructs only
    loaded = ss.load(path, abstract, ema=True)
    for a, b in zip(_leaves(res.ema_model), _leaves(loaded), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_corruption_is_detected(tmp_path):
    model = _model()
    path = tmp_path / "model.eqx"
    ss.save(path, model, hyperparameters={"width": 16})
    good = path.read_bytes()
    # 1. truncated file
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ss.CheckpointError, match="truncated"):
        ss.load(path, model)
    # same size, flipped bytes
    path.write_bytes(good[:-4] + bytes(4))
    with pytest.raises(ss.CheckpointError, match="SHA-256"):
        ss.load(path, model)
    path.write_bytes(good)
    # 2. wrong skeleton: another width, another parametrisation, another SDE
    with pytest.raises(ss.CheckpointError, match="leaf"):
        ss.load(path, _model(width=32))
    with pytest.raises(ss.CheckpointError, match="parametrisation"):
        ss.load(path, ss.X0Prediction(model.net, SDE))
    with pytest.raises(ss.CheckpointError, match="SDE"):
        ss.load(path, ss.EpsPrediction(model.net, ss.VPSDE(beta_max=10.0)))
    # 3. mismatched sidecar
    with pytest.raises(ss.CheckpointError, match="width"):
        ss.load(path, model, hyperparameters={"width": 32})
    with pytest.raises(ss.CheckpointError, match="ema"):
        ss.load(path, model, ema=True)
    side = ss._training.checkpoint.sidecar_path(path)
    meta = json.loads(side.read_text())
    meta["leaves"][0]["shape"] = [99]
    side.write_text(json.dumps(meta))
    with pytest.raises(ss.CheckpointError, match="leaf 0"):
        ss.load(path, model)
    side.write_text("{not json")
    with pytest.raises(ss.CheckpointError, match="JSON"):
        ss.load(path, model)
    side.unlink()
    with pytest.raises(ss.CheckpointError, match="missing"):
        ss.load(path, model)


def test_failed_load_leaves_the_skeleton_untouched(tmp_path):
    model = _model()
    path = tmp_path / "m.eqx"
    ss.save(path, _fit(steps=8).model)
    path.write_bytes(path.read_bytes()[:100])
    before = [np.asarray(x).copy() for x in _leaves(model)]
    with pytest.raises(ss.CheckpointError):
        ss.load(path, model)
    for a, b in zip(before, _leaves(model), strict=True):
        np.testing.assert_array_equal(a, b)


# --- CLI -----------------------------------------------------------------------------------


def _parse(argv):
    parser = argparse.ArgumentParser(prog="scoresde")
    sub = parser.add_subparsers(dest="command")
    _cli_train.add_parser(sub)
    return parser.parse_args(argv)


def test_cli_train_writes_a_loadable_checkpoint_and_a_loss_curve(tmp_path, capsys):
    out = tmp_path / "run"
    args = _parse(["train", "--dataset", "moons", "--steps", "10", "--batch-size", "64",
                   "--model-size", "tiny", "--num-train", "500", "--out", str(out), "--quiet",
                   "--samples", "5"])  # fmt: skip
    assert args.func is _cli_train.run
    with record_figures() as figures:
        assert _cli_train.run(args) == 0
    # the final loss is the progress bar's: the mean of the last steps (all 10 here)
    printed = capsys.readouterr().out
    final = json.loads((out / "losses.json").read_text())
    assert f"final loss: {np.mean(final):.4g} (mean of the last 10 steps" in printed
    # the sample scatter: titled with what drew it, labelled axes with tick labels
    (scatter,) = [f for f in figures if f["path"].endswith("samples.png")]
    assert "moons after 10 training steps, dpm++2m, 50 steps" in scatter["suptitle"]
    (ax,) = scatter["axes"]
    assert ax["xlabel"] == "x[0]" and ax["ylabel"] == "x[1]"
    assert len(ax["xticks"]) >= 2 and len(ax["yticks"]) >= 2
    assert (out / "losses.png").stat().st_size > 1000
    # The end-of-training samples: an array and a scatter plot.
    samples = np.load(out / "samples.npy")
    assert samples.shape == (5, 2) and np.all(np.isfinite(samples))
    assert (out / "samples.png").stat().st_size > 1000
    losses = json.loads((out / "losses.json").read_text())
    assert len(losses) == 10 and all(math.isfinite(v) for v in losses)
    hyper = ss.read_sidecar(out / "checkpoint.eqx")["hyperparameters"]
    config = _cli_train.TrainConfig(**hyper)
    assert config.dataset == "moons" and config.steps == 10
    skeleton = _cli_train.model_from_config(config, key=jr.key(123))
    model = ss.load(out / "checkpoint.eqx", skeleton, ema=True)
    assert isinstance(model, ss.EpsPrediction)
    assert model(0.5, jnp.zeros(2)).shape == (2,)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1; got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--num-train", "0"], "--num-train must be >= 1"),
        (["--learning-rate", "0"], "--learning-rate must be a finite number > 0"),
        (["--learning-rate", "inf"], "--learning-rate must be a finite number > 0"),
        (["--p-uncond", "1.5"], "--p-uncond must lie in [0, 1]"),
        (["--conditional"], "--conditional needs a labelled data set (--dataset digits or mnist"),
        (["--samples", "-1"], "--samples must be >= 0"),
        (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    ],
)
def test_cli_train_refuses_bad_values_by_their_flags(argv, message, tmp_path, capsys):
    """A refused value is named by its flag, never by the library's keyword (learning_rate,
    batch_size, ...), on one line, before any output folder is made."""
    out = tmp_path / "never"
    assert _cli_train.run(_parse(["train", *argv, "--quiet", "--out", str(out)])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert "_" not in err.split(": error: ", 1)[1].split(";")[0]  # no library keyword
    assert not out.exists()


def test_cli_train_refuses_bad_choices():
    with pytest.raises(SystemExit):
        _parse(["train", "--sde", "nonsense"])


def test_cli_train_levels_17_trains_on_grey_levels_and_records_them(tmp_path, monkeypatch):
    seen = {}

    def fake_fit(model, loss, data, *, preprocess, **kwargs):  # no compile: the data path only
        y = data if preprocess is None else preprocess(jr.key(0), data)
        seen.update(data=np.asarray(data), y=np.asarray(y))
        return types.SimpleNamespace(ema_model=model, losses=np.ones(2))

    monkeypatch.setattr(_recipes, "fit", fake_fit)
    # each run below replaces the previous one's outputs in tmp_path (--overwrite)
    argv = ["train", "--dataset", "digits", "--levels", "17", "--model-size", "tiny", "--steps",
            "2", "--samples", "0", "--quiet", "--out", str(tmp_path),
            "--overwrite"]  # fmt: skip
    assert _cli_train.run(_parse(argv)) == 0
    v = seen["data"].astype(np.float64)
    np.testing.assert_array_equal(seen["data"], ss.digit_levels(ss.load_digits().train))
    assert np.all((seen["y"] >= 2 * v / 17 - 1 - 1e-6) & (seen["y"] < 2 * (v + 1) / 17 - 1))
    hyper = ss.read_sidecar(tmp_path / "checkpoint.eqx")["hyperparameters"]
    assert hyper["levels"] == 17 and _cli_train.TrainConfig(**hyper).levels == 17
    # 17 is the digits default; --levels 256 trains on the 8-bit values, 2(k + u)/256 - 1
    assert _cli_train.run(_parse([*argv[:3], *argv[5:]])) == 0
    assert ss.read_sidecar(tmp_path / "checkpoint.eqx")["hyperparameters"]["levels"] == 17
    assert _cli_train.run(_parse([*argv[:4], "256", *argv[5:]])) == 0
    assert seen["data"].max() == 255 and seen["y"].max() > 0.99
    assert ss.read_sidecar(tmp_path / "checkpoint.eqx")["hyperparameters"]["levels"] == 256
    assert _cli_train.run(_parse(["train", "--steps", "2", "--samples", "0", "--quiet",
                                  "--model-size", "tiny", "--out", str(tmp_path),
                                  "--overwrite"])) == 0  # fmt: skip
    assert ss.read_sidecar(tmp_path / "checkpoint.eqx")["hyperparameters"]["levels"] == 256


def test_cli_train_refuses_bad_levels(capsys):
    assert _cli_train.run(_parse(["train", "--dataset", "digits", "--levels", "16"])) == 2
    err = capsys.readouterr().err
    assert "--levels must be 256" in err and "or 17" in err and "got 16" in err
    assert _cli_train.run(_parse(["train", "--dataset", "moons", "--levels", "17"])) == 2
    assert "--levels 17 is a digits convention" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["train", "--levels", "seventeen"])
    # checkpoints written before --levels existed read as 8-bit models
    assert _cli_train.TrainConfig(dataset="digits").levels == 256


@pytest.mark.slow
def test_cli_train_levels_17_then_nll_at_17_levels(tmp_path):
    """A real (tiny, 3-step) 17-level run, then `scoresde nll` on it: bits/dim at 17 levels."""
    from scoresde import cli

    argv = ["train", "--dataset", "digits", "--levels", "17", "--model-size", "tiny", "--steps",
            "3", "--batch-size", "16", "--samples", "2", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads((tmp_path / "digit_metrics.json").read_text())  # samples scored as images
    ckpt = str(tmp_path / "checkpoint.eqx")
    assert cli.main(["nll", ckpt, "--num", "2", "--no-progress", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "nll.json").read_text())
    assert report["levels"] == 17 and math.isfinite(report["value"])


def _categorical_bits_per_dim(alpha: float = 0.1) -> float:
    """The independent per-pixel categorical over the 17 grey levels (add-alpha smoothing),
    fitted on the training digits: its exact discrete bits/dim on the test digits."""
    train, test = (ss.digit_levels(d).reshape(len(d), -1) for d in ss.load_digits()[:2])
    counts = np.stack([np.bincount(column, minlength=17) for column in train.T])
    probs = (counts + alpha) / (len(train) + 17 * alpha)
    return float(-np.mean(np.log2(probs[np.arange(64), test])))


@pytest.mark.slow
def test_cli_train_digits_defaults_beat_the_per_pixel_categorical(tmp_path):
    """`scoresde train --dataset digits` with its defaults (about 16 minutes on 2 cores): test
    bits/dim at 17 levels below the per-pixel categorical baseline, by more than 3 standard
    errors; a 10-step model (negative control) is far above it."""
    from scoresde import cli

    baseline = _categorical_bits_per_dim()
    figures = {}
    for name, extra in (("default", []), ("10 steps", ["--steps", "10"])):
        out = tmp_path / name.replace(" ", "_")
        argv = ["train", "--dataset", "digits", "--samples", "0", "--quiet", "--out", str(out)]
        assert cli.main(argv + extra) == 0
        num = "297" if name == "default" else "32"
        ckpt = str(out / "checkpoint.eqx")
        assert cli.main(["nll", ckpt, "--num", num, "--no-progress", "--out", str(out)]) == 0
        figures[name] = json.loads((out / "nll.json").read_text())
        assert figures[name]["levels"] == 17
    default = figures["default"]
    assert default["value"] + 3 * default["stderr"] < baseline, (figures, baseline)
    assert figures["10 steps"]["value"] > baseline + 1.0, (figures, baseline)


# --- the statistical training check --------------------------------------------------------


@eqx.filter_jit
def _pf_ode_nll(score, sde, x, t_eps):
    """-ln p(x) by the instantaneous change of variables with the exact divergence (2-D)."""

    def one(x):
        def field(t, y, args):
            def drift(x):
                return sde.drift(t, x) - 0.5 * sde.diffusion(t) ** 2 * score(t, x)

            return drift(y[0]), jnp.trace(jax.jacfwd(drift)(y[0]))

        sol = dfx.diffeqsolve(
            dfx.ODETerm(field), dfx.Tsit5(), t_eps, sde.T, 0.01, (x, jnp.zeros(())),
            stepsize_controller=dfx.PIDController(rtol=1e-5, atol=1e-5), max_steps=4096,
        )  # fmt: skip
        return -(sde.prior_log_prob(sol.ys[0][0]) + sol.ys[1][0])

    return jax.vmap(one)(x)


def _nll(score, sde, x, t_eps):
    if hasattr(ss, "log_likelihood") and hasattr(ss, "ExactDivergence"):
        result = ss.log_likelihood(sde, score, x, divergence=ss.ExactDivergence(), t_eps=t_eps)
        return -result.log_prob
    return _pf_ode_nll(score, sde, x, t_eps)


@pytest.mark.slow
def test_short_training_reaches_the_true_entropy_on_a_mixture():
    """Test NLL of a 3000-step model on the 8-Gaussian ring within 0.15 nats of the entropy."""
    dist = ss.toy_mixture()
    n_test = 2000
    entropy_samples = -jax.vmap(dist.log_prob)(dist.sample(jr.key(101), 200_000))
    entropy = float(jnp.mean(entropy_samples))
    entropy_se = float(jnp.std(entropy_samples)) / math.sqrt(200_000)
    data = dist.sample(jr.key(0), 20_000)
    result = ss.train_toy2d(key=jr.key(1), data=data, steps=3000)
    x_test = dist.sample(jr.key(100), n_test)
    nll = _nll(result.ema_model, result.ema_model.sde, x_test, 1e-3)
    true_nll = -jax.vmap(dist.log_prob)(x_test)
    # the gap is measured on the same test points, so their sampling noise mostly cancels
    gap = float(jnp.mean(nll - true_nll))
    gap_se = float(jnp.std(nll - true_nll)) / math.sqrt(n_test)
    assert entropy_se < 0.01
    assert stats.mean(true_nll, entropy).within(5)
    assert gap + 5 * gap_se < 0.15, (gap, gap_se, float(jnp.mean(nll)), entropy)
    assert float(jnp.mean(nll)) - entropy < 0.15 + 5 * float(jnp.std(nll)) / math.sqrt(n_test)


@pytest.mark.slow
def test_fit_unet_on_digits_with_dequantisation():
    """Conv nets on CPU take the unrolled path (one step per call by default)."""
    net = ss.UNet((1, 8, 8), base_channels=8, channel_mults=(1, 2), num_heads=2, key=jr.key(0))
    model = ss.EpsPrediction(net, SDE)
    data = jnp.asarray(ss.load_digits().train)
    res = ss.fit(model, LOSS, data, key=jr.key(1), steps=3, batch_size=16, optimizer=OPT,
                 preprocess=ss.dequantize, progress=False)  # fmt: skip
    assert res.losses.shape == (3,) and np.all(np.isfinite(res.losses))
    assert int(res.state.step) == 3


def test_a_nan_loss_stops_training_naming_the_step():
    def bad_loss(model, batch, key):
        value = LOSS(model, batch, key)
        return jnp.where(jnp.max(batch) > 1e3, jnp.nan, value)

    data = np.asarray(_data()).copy()
    data[:] = 0.0
    data[0] = 1e4  # drawn sooner or later; the loss turns NaN at that step
    with pytest.raises(FloatingPointError, match="step"):
        ss.fit(_model(), bad_loss, data, key=jr.key(1), steps=400, batch_size=32, optimizer=OPT,
               steps_per_call=8, progress=False)  # fmt: skip


def test_progress_bar_shows_steps_speed_and_the_recent_loss(capsys):
    """The bar's loss is the mean of the last 50 steps, so it shows the loss as it is now:
    after 100 steps at 1000 and 60 at 350 it reads 350, where an average since the start would
    still lag above it (the lag once read 424 against a final 354)."""
    from scoresde._training.fit import LOSS_WINDOW, _Progress, recent_loss

    bar = _Progress(160, enabled=True)
    bar.update(100, np.full(100, 1000.0))
    bar.update(160, np.r_[np.full(59, 350.0), np.nan])
    bar.close()
    err = capsys.readouterr().err
    assert "160/160" in err and "step/s" in err
    assert f"loss 350 (mean of last {LOSS_WINDOW})" in err
    assert recent_loss(np.r_[np.full(100, 1000.0), np.full(LOSS_WINDOW, 350.0)]) == 350.0
    assert recent_loss(np.array([2.0, np.nan, 4.0])) == 3.0  # fewer steps than the window
    # Disabled: nothing on stderr.
    quiet = _Progress(10, enabled=False)
    quiet.update(10, np.ones(10))
    quiet.close()
    assert capsys.readouterr().err == ""
