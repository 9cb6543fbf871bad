"""Class-conditional U-Net, label-dropout training, classifier-free guidance on it, checkpoints."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss
from scoresde._training import recipes

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def model():
    net = ss.UNet(SHAPE, base_channels=4, channel_mults=(1, 2), num_heads=2, num_classes=10,
                  key=jr.key(0))  # fmt: skip
    return ss.EpsPrediction(net, ss.VPSDE())


def test_shapes_labels_and_null_label(model):
    x = jr.normal(jr.key(1), (5, *SHAPE))
    t = jnp.full((5,), 0.3)
    labels = jnp.array([0, 3, 9, 10, 3])
    out = jax.vmap(model)(t, x, labels)
    assert out.shape == x.shape and out.dtype == x.dtype
    # per-sample labels under vmap equal one call per sample
    for i in range(5):
        np.testing.assert_allclose(out[i], model(t[i], x[i], int(labels[i])), rtol=1e-5, atol=1e-5)
    # the label changes the output; the null label (10) is a label of its own
    a, b, null = (model(0.3, x[0], k) for k in (3, 4, 10))
    assert not np.allclose(a, b) and not np.allclose(a, null)
    assert model.net.label_embed.weight.shape[0] == 11


def test_bad_labels_raise_naming_the_label(model):
    x = jnp.zeros(SHAPE)
    for bad in (11, -1):
        with pytest.raises(ValueError, match=r"label must lie in \[0, 10\]"):
            model(0.3, x, bad)
    with pytest.raises(TypeError, match="label must be an integer"):
        model(0.3, x, 2.0)
    with pytest.raises(TypeError, match="label must be a scalar"):
        model(0.3, x, jnp.array([1, 2]))
    with pytest.raises(ValueError, match="class-conditional"):
        model(0.3, x)
    with pytest.raises(Exception, match=r"label must lie in \[0, 10\]"):  # traced: at run time
        eqx.filter_jit(lambda lab: model(0.3, x, lab))(jnp.int32(12))
    plain = ss.EpsPrediction(ss.UNet(SHAPE, base_channels=4, num_heads=2, key=jr.key(0)),
                             ss.VPSDE())  # fmt: skip
    with pytest.raises(ValueError, match="unconditional"):
        plain(0.3, x, 1)
    with pytest.raises(ValueError, match="num_classes"):
        ss.UNet(SHAPE, base_channels=4, num_heads=2, num_classes=0, key=jr.key(0))


def test_unconditional_unet_is_unchanged_by_the_new_argument():
    a = ss.UNet(SHAPE, base_channels=4, num_heads=2, key=jr.key(3))
    b = ss.UNet(SHAPE, base_channels=4, num_heads=2, num_classes=10, key=jr.key(3))
    # the label embedding has its own key: every other weight is the same
    assert b.label_embed is not None and a.label_embed is None
    np.testing.assert_array_equal(a.conv_in.weight, b.conv_in.weight)
    np.testing.assert_array_equal(a.conv_out.weight, b.conv_out.weight)


def test_classifier_free_scale_one_is_the_conditional_score_exactly(model):
    x = jr.normal(jr.key(2), SHAPE)
    for t in (0.05, 0.5, 0.95):
        cfg1 = ss.guidance.ClassifierFree(model, 7, 10, 1.0, num_classes=11)
        np.testing.assert_array_equal(cfg1(t, x), model(t, x, 7))
        cfg0 = ss.guidance.ClassifierFree(model, 7, 10, 0.0, num_classes=11)
        np.testing.assert_array_equal(cfg0(t, x), model(t, x, 10))
        cfg3 = ss.guidance.ClassifierFree(model, 7, 10, 3.0, num_classes=11)
        want = 3 * model(t, x, 7) - 2 * model(t, x, 10)
        np.testing.assert_allclose(cfg3(t, x), want, rtol=1e-5, atol=1e-5)
    # a sampler accepts the guided score, and per-sample labels through cond=
    res = ss.sample_sde(ss.VPSDE(), model, key=jr.key(0), shape=(3, *SHAPE), steps=3,
                        cond=jnp.array([1, 2, 10]))  # fmt: skip
    assert res.x.shape == (3, *SHAPE) and np.isfinite(res.x).all()


def test_pack_and_unpack_labels_round_trip():
    digits = ss.load_digits()
    packed = ss.pack_labels(digits.train[:6], digits.train_labels[:6])
    assert packed.shape == (6, 65)
    x0, labels = ss.UnpackLabels(SHAPE)(None, packed)
    np.testing.assert_array_equal(np.asarray(x0), digits.train[:6].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(labels), digits.train_labels[:6])
    x0, _ = ss.UnpackLabels(SHAPE, ss.dequantize)(None, packed)
    np.testing.assert_allclose(x0, ss.dequantize(None, digits.train[:6]), rtol=1e-6)
    with pytest.raises(ValueError, match="labels must have shape"):
        ss.pack_labels(digits.train[:6], digits.train_labels[:5])
    with pytest.raises(TypeError, match="labels must be integers"):
        ss.pack_labels(digits.train[:6], np.zeros(6))
    with pytest.raises(ValueError, match="packed batch"):
        ss.UnpackLabels((1, 4, 4))(None, packed)


def test_label_dropout_rate_and_loss_against_dsm(model):
    sde = ss.VPSDE()
    labels = jnp.full((4000,), 3)
    for p, frac in ((0.0, 0.0), (1.0, 1.0), (0.3, 0.3)):
        dropped = ss.LabelDropoutDSM(sde, 10, p).drop_labels(jr.key(0), labels)
        assert set(np.unique(dropped)) <= {3, 10}
        assert abs(float(jnp.mean(dropped == 10)) - frac) < 0.03
    with pytest.raises(ValueError, match="p_uncond"):
        ss.LabelDropoutDSM(sde, 10, 1.5)
    x0 = jr.normal(jr.key(1), (8, *SHAPE))
    key = jr.key(5)
    # p_uncond = 0: the plain DSM loss of the model at those labels (same t and z draws)
    got = ss.LabelDropoutDSM(sde, 10, 0.0)(model, (x0, jnp.full((8,), 4)), key)
    want = ss.dsm_loss(lambda t, x: model(t, x, 4), sde, x0, key=jr.split(key)[1])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # p_uncond = 1: every label is the null label
    got = ss.LabelDropoutDSM(sde, 10, 1.0)(model, (x0, jnp.full((8,), 4)), key)
    want = ss.dsm_loss(lambda t, x: model(t, x, 10), sde, x0, key=jr.split(key)[1])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(TypeError, match="batches"):
        ss.LabelDropoutDSM(sde, 10)(model, x0, key)


def test_tiny_conditional_training_run_lowers_the_loss():
    digits = ss.load_digits()
    sde = ss.VPSDE()
    net = ss.UNet(SHAPE, base_channels=4, channel_mults=(1,), attention=False, num_classes=10,
                  key=jr.key(0))  # fmt: skip
    result = ss.fit(
        ss.EpsPrediction(net, sde),
        ss.LabelDropoutDSM(sde, 10, 0.1),
        ss.pack_labels(digits.train, digits.train_labels),
        key=jr.key(1),
        steps=60,
        batch_size=64,
        optimizer=ss.adam_with_warmup(1e-2, warmup_steps=5),
        preprocess=ss.UnpackLabels(SHAPE, ss.dequantize),
        progress=False,
    )
    losses = result.losses
    assert losses.shape == (60,) and np.isfinite(losses).all()
    assert np.mean(losses[-15:]) < 0.8 * np.mean(losses[:5]), losses


def test_cli_config_builds_saves_and_loads_a_conditional_model(tmp_path):
    with pytest.raises(ValueError, match="conditional"):
        recipes.TrainConfig(dataset="moons", conditional=True)
    cfg = recipes.TrainConfig(dataset="digits", model_size="tiny", conditional=True)
    model = recipes.model_from_config(cfg, key=jr.key(0))
    assert model.net.num_classes == 10
    path = tmp_path / "checkpoint.eqx"
    ss.save(path, model, hyperparameters=dataclasses.asdict(cfg))
    loaded, config = recipes.load_model(path)
    assert config.conditional and config.p_uncond == 0.1
    x = jr.normal(jr.key(1), SHAPE)
    np.testing.assert_array_equal(loaded(0.4, x, 2), model(0.4, x, 2))
    # the same weights cannot be read into an unconditional skeleton
    plain = recipes.skeleton_from_config(dataclasses.replace(cfg, conditional=False))
    with pytest.raises(ss.CheckpointError):
        ss.load(path, plain)


@pytest.mark.slow  # a training run
def test_noisy_cross_entropy_learns_the_diffused_responsibilities():
    # Two 2-D Gaussians; the minimiser of the noisy cross-entropy is ln p_t(c | x_t), known here.
    sde = ss.VPSDE()
    mix = ss.analytic.GaussianMixture(
        jnp.array([0.5, 0.5]),
        jnp.array([[-1.5, 0.0], [1.5, 0.5]]),
        jnp.stack([0.5 * jnp.eye(2)] * 2),
    )
    labels = np.repeat(np.arange(2), 2000)
    key = jr.key(0)
    x = np.concatenate(
        [np.asarray(ss.analytic.Gaussian(mix.means[c], mix.covs[c]).sample(jr.fold_in(key, c), 2000))
         for c in range(2)]
    )  # fmt: skip
    net = ss.MLPScoreNet(2, width=32, depth=2, out_size=2, key=jr.key(1))
    loss = ss.NoisyCrossEntropy(sde, num_classes=2)
    fit = ss.fit(net, loss, ss.pack_labels(x, labels), key=jr.key(2), steps=600, batch_size=256,
                 preprocess=ss.UnpackLabels(2), progress=False)  # fmt: skip
    clf = fit.ema_model
    errs = []
    for t in (0.05, 0.3, 0.7):
        xt = mix.marginal(sde, t).sample(jr.key(3), 500)
        exact = jax.vmap(mix.marginal(sde, t).responsibilities)(xt)[:, 1]
        learned = jax.nn.softmax(jax.vmap(clf, in_axes=(None, 0))(jnp.asarray(t), xt))[:, 1]
        errs.append(float(jnp.mean(jnp.abs(learned - exact))))
    assert max(errs) < 0.05, errs
    # Negative control: the untrained network is far from it.
    untrained = jax.nn.softmax(jax.vmap(lambda x_: net(jnp.asarray(0.3), x_))(xt))[:, 1]
    assert float(jnp.mean(jnp.abs(untrained - exact))) > 0.1
    with pytest.raises(ValueError, match="num_classes"):
        ss.NoisyCrossEntropy(sde, num_classes=1)
    with pytest.raises(Exception, match="labels must lie"):
        loss(net, (jnp.zeros((4, 2)), jnp.array([0, 1, 2, 0])), jr.key(0))
