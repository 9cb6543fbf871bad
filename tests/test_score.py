"""Score networks and output parametrisations."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss

SDES = [ss.VPSDE(), ss.SubVPSDE(), ss.VESDE(), ss.EDMSDE()]
WRAPPERS = [
    ss.DirectScore,
    ss.EpsPrediction,
    ss.X0Prediction,
    ss.VPrediction,
    ss.EDMPreconditioning,
]


class Constant(eqx.Module):
    """A 'network' returning a fixed output (and recording nothing)."""

    out: jax.Array

    def __call__(self, c, x):
        return self.out


def _dist():
    return ss.analytic.Gaussian(jnp.array([0.5, -1.0]), jnp.array([[1.0, 0.3], [0.3, 0.5]]))


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("wrapper", WRAPPERS, ids=lambda w: w.__name__)
def test_parametrisations_round_trip_to_the_same_score(x64, sde, wrapper):
    dist = _dist()
    exact = ss.analytic.marginal_score(dist, sde)
    for frac in (0.01, 0.3, 0.9):
        t = jnp.asarray(frac * sde.T)
        x = jnp.array([0.7, -0.2])
        s = exact(t, x)
        proto = wrapper(Constant(jnp.zeros(2)), sde)
        out = proto.from_score(t, x, s)
        model = wrapper(Constant(out), sde)
        np.testing.assert_allclose(model(t, x), s, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(model.to_score(t, x, out), s, rtol=1e-10, atol=1e-10)
        # Tweedie's denoiser is the same whatever the parametrisation.
        alpha, sigma = sde.marginal(t)
        np.testing.assert_allclose(
            model.denoise(t, x), (x + sigma**2 * s) / alpha, rtol=1e-9, atol=1e-9
        )


def test_parametrisation_outputs_have_their_meaning(x64):
    """eps-prediction outputs z, x0-prediction outputs x0, v = a z - s x0."""
    sde = ss.VPSDE()
    t = jnp.asarray(0.4)
    alpha, sigma = sde.marginal(t)
    x0 = jnp.array([1.0, -2.0])
    z = jnp.array([0.3, 0.8])
    x = alpha * x0 + sigma * z
    score = -z / sigma  # the conditional score, i.e. the denoiser outputs x0 exactly
    dummy = Constant(jnp.zeros(2))
    np.testing.assert_allclose(ss.EpsPrediction(dummy, sde).from_score(t, x, score), z)
    np.testing.assert_allclose(ss.X0Prediction(dummy, sde).from_score(t, x, score), x0)
    v = ss.VPrediction(dummy, sde).from_score(t, x, score)
    np.testing.assert_allclose(v, alpha * z - sigma * x0, rtol=1e-10)  # alpha^2 + sigma^2 = 1


def test_edm_preconditioning_coefficients(x64):
    """On EDMSDE (alpha = 1, sigma = t): c_skip, c_out, c_in, c_noise as in Karras et al."""
    sde = ss.EDMSDE()
    t, sd = jnp.asarray(2.0), 0.5
    seen = {}

    class Spy(eqx.Module):
        def __call__(self, c, x):
            seen["c"], seen["x"] = c, x
            return jnp.ones_like(x)

    model = ss.EDMPreconditioning(Spy(), sde, sigma_data=sd)
    x = jnp.array([1.0, 3.0])
    s = model(t, x)
    c_skip = sd**2 / (t**2 + sd**2)
    c_out = t * sd / jnp.sqrt(t**2 + sd**2)
    c_in = 1 / jnp.sqrt(t**2 + sd**2)
    np.testing.assert_allclose(seen["c"], jnp.log(t) / 4, rtol=1e-12)
    np.testing.assert_allclose(seen["x"], c_in * x, rtol=1e-12)
    denoised = c_skip * x + c_out * 1.0
    np.testing.assert_allclose(s, (denoised - x) / t**2, rtol=1e-12)


@pytest.mark.parametrize("sde", SDES[:3], ids=lambda s: type(s).__name__)
def test_energy_score_is_minus_grad_energy(x64, sde):
    class Quadratic(eqx.Module):
        def __call__(self, c, x):
            return 0.5 * jnp.sum(x**2) * (1.0 + c**2)

    model = ss.EnergyScore(Quadratic(), sde)
    t, x = jnp.asarray(0.3), jnp.array([0.4, -1.5])
    c, x_in = model.net_inputs(t, x)
    k = x_in[0] / x[0]
    expected = -(1.0 + c**2) * k**2 * x
    np.testing.assert_allclose(model(t, x), expected, rtol=1e-10)
    np.testing.assert_allclose(model.log_prob_unnormalised(t, x), -model.energy(t, x))
    # A sample-shaped network gives E = |x - alpha y|^2 / (2 sigma^2).
    model2 = ss.EnergyScore(Constant(jnp.array([1.0, 2.0])), sde)
    alpha, sigma = sde.marginal(t)
    np.testing.assert_allclose(
        model2(t, x), -(x - alpha * jnp.array([1.0, 2.0])) / sigma**2, rtol=1e-10
    )


def test_energy_score_with_scalar_mlp_matches_autodiff():
    net = ss.MLPScoreNet(2, width=16, depth=1, out_size="scalar", key=jr.key(0))
    model = ss.EnergyScore(net, ss.VPSDE())
    t, x = jnp.asarray(0.5), jnp.array([0.1, 0.2])
    eps = 1e-2

    @eqx.filter_jit
    def check(model):
        energy = jax.vmap(model.energy, in_axes=(None, 0))
        fd = (
            energy(t, x[None, :] + eps * jnp.eye(2)) - energy(t, x[None, :] - eps * jnp.eye(2))
        ) / (2 * eps)
        return model(t, x), fd

    score, fd = check(model)
    np.testing.assert_allclose(score, -fd, rtol=2e-2, atol=1e-3)


def test_trace_time_output_checks():
    sde = ss.VPSDE()
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match="shape"):
        ss.EpsPrediction(Constant(jnp.zeros(3)), sde)(0.5, x)
    with pytest.raises(TypeError, match="dtype"):
        ss.EpsPrediction(Constant(jnp.zeros(2, jnp.int32)), sde)(0.5, x)
    with pytest.raises(ValueError, match="scalar|shape"):
        ss.EnergyScore(Constant(jnp.zeros(3)), sde).energy(0.5, x)
    # Under jit the check fires while tracing.
    with pytest.raises(ValueError, match="shape"):
        eqx.filter_jit(lambda m, x: m(0.5, x))(ss.X0Prediction(Constant(jnp.zeros((2, 2))), sde), x)


def test_wrappers_reject_bad_configuration():
    with pytest.raises(TypeError, match="sde"):
        ss.EpsPrediction(Constant(jnp.zeros(2)), "vp")
    with pytest.raises(ValueError, match="sigma_data"):
        ss.EDMPreconditioning(Constant(jnp.zeros(2)), ss.EDMSDE(), sigma_data=-1.0)


def test_mlp_shapes_dtypes_and_bad_input(x64):
    net = ss.MLPScoreNet((2, 3), width=8, depth=2, key=jr.key(0))
    x = jnp.ones((2, 3), jnp.float64)
    f = eqx.filter_jit(lambda net, x: net(0.1, x))
    out = f(net, x)
    assert out.shape == (2, 3) and out.dtype == jnp.float64
    out32 = f(net, x.astype(jnp.float32))
    assert out32.dtype == jnp.float32
    with pytest.raises(ValueError, match="ONE sample"):
        net(0.1, jnp.ones((4, 2, 3)))
    with pytest.raises(ValueError, match="out_size"):
        ss.MLPScoreNet(2, out_size="vector", key=jr.key(0))
    with pytest.raises(ValueError, match="width"):
        ss.MLPScoreNet(2, width=0, key=jr.key(0))


def test_fourier_frequencies_are_not_trained():
    net = ss.MLPScoreNet(2, width=8, depth=1, key=jr.key(0))
    grads = eqx.filter_jit(eqx.filter_grad(lambda n: jnp.sum(n(0.3, jnp.ones(2)) ** 2)))(net)
    assert jnp.all(grads.embed.weights == 0)
    assert jnp.any(grads.input_layer.weight != 0)


@pytest.mark.parametrize(
    "shape, mults", [((1, 8, 8), (1, 2)), ((1, 28, 28), (1, 2, 2))], ids=["8x8", "28x28"]
)
def test_unet_shapes_and_time_dependence(shape, mults):
    net = ss.UNet(shape, base_channels=8, channel_mults=mults, num_heads=2, key=jr.key(0))
    x = jr.normal(jr.key(1), (3, *shape))
    f = eqx.filter_jit(lambda net, c, x: jax.vmap(net, in_axes=(None, 0))(c, x))
    out = f(net, jnp.asarray(0.1), x)
    assert out.shape == (3, *shape) and out.dtype == x.dtype
    assert not jnp.allclose(out, f(net, jnp.asarray(-0.5), x))
    # Each sample is processed independently (no batch statistics).
    out2 = f(net, jnp.asarray(0.1), x.at[0].set(0.0))
    np.testing.assert_array_equal(out[1:], out2[1:])
    assert not jnp.allclose(out[0], out2[0])


def test_unet_rejects_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        ss.UNet((1, 10, 10), channel_mults=(1, 2, 2), key=jr.key(0))
    with pytest.raises(ValueError, match="channels, height, width"):
        ss.UNet((8, 8), key=jr.key(0))
