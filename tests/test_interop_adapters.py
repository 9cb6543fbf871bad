"""Adapters for networks in other conventions (`ss.interop.Network` + the time inputs), against
closed forms: a "network" in each convention built from an exact Gaussian score, with its own
formulas for the schedule, must give back the exact score."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss

pytestmark = pytest.mark.usefixtures("x64")

MEAN = np.array([0.5, -1.0, 2.0])
STD = 0.7  # data N(MEAN, STD^2 I)
B0, B1 = 0.1, 20.0  # VPSDE's linear beta
SIGMA_DATA = 0.5


def _vp_alpha_sigma_from_sigma_hat(s):
    alpha = 1.0 / jnp.sqrt(1.0 + s**2)
    return alpha, s * alpha


def _gauss_score(x, alpha, sigma):
    return -(x - alpha * MEAN) / (alpha**2 * STD**2 + sigma**2)


def _output(kind, x, alpha, sigma):
    """The network output of each convention for the exact Gaussian, by its own formulas."""
    score = _gauss_score(x, alpha, sigma)
    eps = -sigma * score
    x0 = (x + sigma**2 * score) / alpha
    return {"score": score, "eps": eps, "x0": x0, "v": alpha * eps - sigma * x0}[kind]


# The time inputs' closed forms on VPSDE(B0, B1): (alpha, sigma) from what the network receives.
def _from_time(tin):
    B = B0 * tin + 0.5 * (B1 - B0) * tin**2
    return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))


TIME_INPUTS = {
    "time": (ss.interop.Time(), _from_time),
    "time999": (ss.interop.Time(999.0), lambda tin: _from_time(tin / 999.0)),
    "sigma": (ss.interop.Sigma(), _vp_alpha_sigma_from_sigma_hat),
    "log_sigma": (ss.interop.LogSigma(), lambda v: _vp_alpha_sigma_from_sigma_hat(jnp.exp(v))),
    "c_noise": (ss.interop.CNoise(), lambda c: _vp_alpha_sigma_from_sigma_hat(jnp.exp(4 * c))),
}
OUTPUTS = {
    "score": ss.DirectScore,
    "eps": ss.EpsPrediction,
    "x0": ss.X0Prediction,
    "v": ss.VPrediction,
}
TS = (1e-3, 0.05, 0.3, 0.7, 1.0)


def _points(sde, ts):
    xs = jr.normal(jr.key(0), (len(ts), 3)) * 2.0
    return jnp.asarray(ts), xs


@pytest.mark.parametrize("time_name", sorted(TIME_INPUTS))
@pytest.mark.parametrize("out_name", sorted(OUTPUTS))
def test_vp_network_in_each_convention_gives_the_exact_score(time_name, out_name):
    sde = ss.VPSDE(B0, B1)
    time_input, schedule = TIME_INPUTS[time_name]

    def fn(tin, x):
        alpha, sigma = schedule(tin)
        return _output(out_name, x, alpha, sigma)

    score = OUTPUTS[out_name](ss.interop.Network(fn, time_input), sde)
    exact = ss.analytic.marginal_score(ss.analytic.Gaussian(MEAN, STD**2 * jnp.eye(3)), sde)
    ts, xs = _points(sde, TS)
    got = jax.vmap(score)(ts, xs)
    want = jax.vmap(exact)(ts, xs)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_wrong_time_input_is_detected():
    """Negative control: a network reading its input as sigma while it is given c_noise is off."""
    sde = ss.VPSDE(B0, B1)

    def fn(s, x):
        return _output("eps", x, *_vp_alpha_sigma_from_sigma_hat(s))

    score = ss.EpsPrediction(ss.interop.Network(fn, ss.interop.CNoise()), sde)
    exact = ss.analytic.marginal_score(ss.analytic.Gaussian(MEAN, STD**2 * jnp.eye(3)), sde)
    ts, xs = _points(sde, TS)
    err = jnp.max(jnp.abs(jax.vmap(score)(ts, xs) - jax.vmap(exact)(ts, xs)))
    assert err > 1e-2


def test_equinox_example_convention_vp_beta_one_on_zero_ten():
    """The Equinox score-based diffusion example: beta(t) = 1 on [0, 10], the network taking t
    and predicting the score: VPSDE(1, 1, T=10) with Time()."""
    sde = ss.VPSDE(1.0, 1.0, T=10.0)

    def fn(t, x):
        alpha, sigma = jnp.exp(-0.5 * t), jnp.sqrt(-jnp.expm1(-t))
        return _output("score", x, alpha, sigma)

    score = ss.DirectScore(ss.interop.Network(fn, ss.interop.Time()), sde)
    exact = ss.analytic.marginal_score(ss.analytic.Gaussian(MEAN, STD**2 * jnp.eye(3)), sde)
    ts, xs = _points(sde, (1e-2, 0.5, 3.0, 10.0))
    np.testing.assert_allclose(jax.vmap(score)(ts, xs), jax.vmap(exact)(ts, xs), rtol=1e-9)


def test_ddpm_index_on_the_grid():
    """diffusers' index n = N t - 1: alphas_cumprod[n] (0-based) is alpha(t)^2 of DDPMSDE."""
    betas = np.linspace(1e-4, 0.02, 50)
    acp = np.cumprod(1 - betas)  # diffusers' alphas_cumprod
    sde = ss.DDPMSDE(betas=betas)
    seen = []

    def fn(n, x):
        seen.append(n)
        a2 = jnp.asarray(acp)[jnp.round(n).astype(int)]
        return _output("eps", x, jnp.sqrt(a2), jnp.sqrt(1 - a2))

    score = ss.EpsPrediction(ss.interop.Network(fn, ss.interop.DDPMIndex()), sde)
    exact = ss.analytic.marginal_score(ss.analytic.Gaussian(MEAN, STD**2 * jnp.eye(3)), sde)
    n = np.array([0, 1, 17, 49])
    ts, xs = _points(sde, (n + 1) / 50)
    index = jax.vmap(ss.interop.DDPMIndex(), in_axes=(None, 0))(sde, ts)
    np.testing.assert_allclose(index, n, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(score)(ts, xs), jax.vmap(exact)(ts, xs), rtol=1e-9)


def test_ddpm_index_needs_a_ddpm_table():
    score = ss.EpsPrediction(ss.interop.Network(lambda n, x: x, ss.interop.DDPMIndex()), ss.VPSDE())
    with pytest.raises(TypeError, match="DDPMSDE"):
        score(0.5, jnp.zeros(3))


def test_edm_f_with_c_noise_on_vp_and_ve():
    """EDM's F(c_in x_hat, c_noise) under EDMPreconditioning: exact on a VP and on EDM's SDE."""
    for sde in (ss.VPSDE(B0, B1), ss.EDMSDE()):

        def fn(c, x_in):
            s = jnp.exp(4 * c)  # sigma_hat
            x_hat = x_in * jnp.sqrt(s**2 + SIGMA_DATA**2)
            denoised = MEAN + STD**2 / (STD**2 + s**2) * (x_hat - MEAN)
            c_skip = SIGMA_DATA**2 / (s**2 + SIGMA_DATA**2)
            c_out = s * SIGMA_DATA / jnp.sqrt(s**2 + SIGMA_DATA**2)
            return (denoised - c_skip * x_hat) / c_out

        net = ss.interop.Network(fn, ss.interop.CNoise())
        score = ss.EDMPreconditioning(net, sde, sigma_data=SIGMA_DATA)
        exact = ss.analytic.marginal_score(ss.analytic.Gaussian(MEAN, STD**2 * jnp.eye(3)), sde)
        ts, xs = _points(sde, (0.01, 0.3, 0.9))
        ts = ts * sde.T
        np.testing.assert_allclose(jax.vmap(score)(ts, xs), jax.vmap(exact)(ts, xs), rtol=1e-9)


def test_k_diffusion_denoiser_on_raw_x():
    """A k-diffusion denoiser D(x, sigma) on the raw x of a VE SDE: X0Prediction, Sigma(),
    scaled_input=False. With scaled_input=True it would see x / sqrt(sigma^2 + 1): off."""
    sde = ss.EDMSDE()

    def denoiser(s, x):
        return MEAN + STD**2 / (STD**2 + s**2) * (x - MEAN)

    exact = ss.analytic.marginal_score(ss.analytic.Gaussian(MEAN, STD**2 * jnp.eye(3)), sde)
    ts, xs = _points(sde, (0.01, 1.0, 40.0))
    good = ss.X0Prediction(
        ss.interop.Network(denoiser, ss.interop.Sigma(), scaled_input=False), sde
    )
    bad = ss.X0Prediction(ss.interop.Network(denoiser, ss.interop.Sigma()), sde)
    want = jax.vmap(exact)(ts, xs)
    np.testing.assert_allclose(jax.vmap(good)(ts, xs), want, rtol=1e-9)
    assert jnp.max(jnp.abs(jax.vmap(bad)(ts, xs) - want)) > 1e-2


def test_network_checks_its_arguments():
    with pytest.raises(TypeError, match="time"):
        ss.interop.Network(lambda t, x: x, "sigma")
    with pytest.raises(TypeError, match="fn"):
        ss.interop.Network(3, ss.interop.Sigma())
    with pytest.raises(ValueError, match="scale"):
        ss.interop.Time(-1.0)


def test_label_is_passed_on():
    sde = ss.VPSDE()
    net = ss.interop.Network(lambda c, x, label: x * label, ss.interop.CNoise())
    score = ss.DirectScore(net, sde)
    np.testing.assert_allclose(score(0.5, jnp.ones(2), 3.0), 3.0 * jnp.ones(2))
