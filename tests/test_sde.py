import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDE_IDS, SDES
from hypothesis import given, settings, strategies as st

import scoresde as ss

fractions = st.floats(0.001, 1.0)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@settings(deadline=None, max_examples=25)
@given(u=fractions)
def test_marginal_is_consistent_with_drift_and_diffusion(x64, sde, u):
    """alpha' = f alpha and (sigma^2)' = 2 f sigma^2 + g^2, by autodiff."""
    t = jnp.asarray(u * sde.T, jnp.float64)
    alpha, sigma = sde.marginal(t)
    dalpha = jax.grad(lambda s: sde.marginal(s)[0])(t)
    dvar = jax.grad(lambda s: sde.marginal(s)[1] ** 2)(t)
    f, g = sde.drift_coeff(t), sde.diffusion(t)
    assert jnp.allclose(dalpha, f * alpha, rtol=1e-9, atol=1e-12)
    assert jnp.allclose(dvar, 2 * f * sigma**2 + g**2, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@settings(deadline=None, max_examples=25)
@given(u=fractions)
def test_log_snr_and_its_inverse(x64, sde, u):
    t = jnp.asarray(u * sde.T, jnp.float64)
    alpha, sigma = sde.marginal(t)
    lam = sde.log_snr(t)
    assert jnp.allclose(lam, jnp.log(alpha / sigma), rtol=1e-10, atol=1e-10)
    assert jnp.allclose(sde.log_snr_inverse(lam), t, rtol=1e-8, atol=1e-12)
    # lambda as a function of ln sigma (the likelihood's variable="log_sigma").
    assert jnp.allclose(sde.log_snr_from_log_std(jnp.log(sigma)), lam, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_small_t_is_finite_and_accurate_in_float32(sde):
    """Near t = 0 the std must not cancel to zero or NaN (expm1, no log(0))."""
    t = jnp.asarray(1e-7 * sde.T, jnp.float32)
    alpha, sigma = sde.marginal(t)
    with jax.enable_x64(True):
        t64 = jnp.asarray(1e-7 * sde.T, jnp.float64)
        alpha64, sigma64 = sde.marginal(t64)
        lam64 = sde.log_snr(t64)
    assert jnp.isfinite(sde.log_snr(t)) and jnp.isfinite(sde.diffusion(t))
    assert np.isclose(float(sigma), float(sigma64), rtol=1e-5)
    assert np.isclose(float(alpha), float(alpha64), rtol=1e-6)
    assert np.isclose(float(sde.log_snr(t)), float(lam64), rtol=1e-5)


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_marginal_at_zero_is_the_data(sde):
    alpha, sigma = sde.marginal(0.0)
    assert float(alpha) == 1.0 and float(sigma) == 0.0


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_perturb_and_prior(sde):
    key = jr.key(0)
    x0 = jnp.ones((3, 4))
    xt, z = sde.perturb(key, x0, 0.5 * sde.T)
    alpha, sigma = sde.marginal(0.5 * sde.T)
    assert xt.shape == x0.shape == z.shape
    assert jnp.allclose(xt, alpha * x0 + sigma * z)
    x = sde.prior_sample(key, (5, 2))
    assert x.shape == (5, 2)
    expected = jax.scipy.stats.norm.logpdf(x[0], scale=sde.prior_std).sum()
    assert jnp.allclose(sde.prior_log_prob(x[0]), expected, rtol=1e-6)


def test_vp_prior_mismatch_is_small():
    """The prior is never exactly p_T: VP leaves alpha(1) ~ 6.7e-3 of the data."""
    alpha, sigma = ss.VPSDE().marginal(1.0)
    assert 6e-3 < float(alpha) < 7e-3 and abs(float(sigma) - 1) < 1e-4


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ss.VPSDE(beta_min=-0.1), "beta_min"),
        (lambda: ss.VPSDE(beta_min=5.0, beta_max=1.0), "beta_min <= beta_max"),
        (lambda: ss.SubVPSDE(beta_max=float("nan")), "beta_max"),
        (lambda: ss.VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: ss.VESDE(sigma_min=10.0, sigma_max=1.0), "sigma_min < sigma_max"),
        (lambda: ss.EDMSDE(sigma_max=-1.0), "sigma_max"),
    ],
)
def test_invalid_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("kind", ["uniform", "log_snr", "karras"])
def test_time_grid(sde, kind):
    ts = ss.time_grid(sde, 10, t_eps=sde.default_t_eps, kind=kind)
    assert ts.shape == (11,)
    assert float(ts[0]) == pytest.approx(sde.T) and float(ts[-1]) == pytest.approx(
        sde.default_t_eps
    )
    assert bool(jnp.all(jnp.diff(ts) < 0))
    if kind == "log_snr":
        lam = sde.log_snr(ts[1:-1])
        assert jnp.allclose(jnp.diff(lam), jnp.diff(lam)[0], rtol=1e-3)


def test_karras_grid_matches_edm_formula():
    sde = ss.EDMSDE()
    ts = ss.time_grid(sde, 5, t_eps=0.002, kind="karras", rho=7.0)
    i = np.arange(6) / 5
    expected = (80 ** (1 / 7) + i * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert np.allclose(np.asarray(ts), expected, rtol=1e-5)


def test_time_grid_bad_input():
    with pytest.raises(ValueError, match="grid"):
        ss.time_grid(ss.VPSDE(), 10, t_eps=1e-3, kind="cosine")
    with pytest.raises(ValueError, match="steps"):
        ss.time_grid(ss.VPSDE(), 0, t_eps=1e-3)
