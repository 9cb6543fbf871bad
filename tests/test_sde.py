from fractions import Fraction

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import EXTRA_SDE_IDS, EXTRA_SDES, SDE_IDS, SDES
from hypothesis import given, settings, strategies as st

import scoresde as ss

fractions = st.floats(0.001, 1.0)
ALL_SDES, ALL_SDE_IDS = SDES + EXTRA_SDES, SDE_IDS + EXTRA_SDE_IDS


@pytest.mark.parametrize("sde", ALL_SDES, ids=ALL_SDE_IDS)
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


@pytest.mark.parametrize("sde", ALL_SDES, ids=ALL_SDE_IDS)
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


@pytest.mark.parametrize("sde", ALL_SDES, ids=ALL_SDE_IDS)
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


@pytest.mark.parametrize("sde", ALL_SDES, ids=ALL_SDE_IDS)
def test_marginal_at_zero_is_the_data(sde):
    alpha, sigma = sde.marginal(0.0)
    assert float(alpha) == 1.0 and float(sigma) == 0.0


@pytest.mark.parametrize("sde", ALL_SDES, ids=ALL_SDE_IDS)
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
        (lambda: ss.CosineVPSDE(s=-0.1), "s must"),
        (lambda: ss.CosineVPSDE(T=1.0), "0 < T < 1"),
        (lambda: ss.CosineVPSDE(T=0.0), "0 < T < 1"),
        (lambda: ss.DDPMSDE([0.1, 1.0]), "betas must all lie in"),
        (lambda: ss.DDPMSDE([0.1, float("nan")]), "betas must all lie in"),
        (lambda: ss.DDPMSDE([]), "non-empty 1-D"),
        (lambda: ss.DDPMSDE([[0.1, 0.2]]), "non-empty 1-D"),
        (lambda: ss.DDPMSDE(num_steps=0), "num_steps"),
        (lambda: ss.DDPMSDE(beta_end=2.0), "betas must all lie in"),
        (lambda: ss.DDPMSDE(beta_start=-1.0), "beta_start"),
    ],
)
def test_invalid_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_ddpm_schedule_arguments_are_typed():
    with pytest.raises(TypeError, match="either betas or"):
        ss.DDPMSDE([0.1, 0.2], num_steps=2)
    with pytest.raises(TypeError, match="num_steps"):
        ss.DDPMSDE(num_steps=10.0)


# ----------------------------------------------------------------------------- cosine and DDPM


@settings(deadline=None, max_examples=25)
@given(u=st.floats(0.0, 1.0), s=st.sampled_from([0.0, 0.008, 0.1]))
def test_cosine_matches_the_improved_ddpm_formula(x64, u, s):
    """alpha^2 = f(t)/f(0) with f(t) = cos^2(((t + s)/(1 + s)) pi/2), sigma^2 = 1 - alpha^2 and
    beta = -d ln alpha^2/dt, against NumPy (beta by central differences)."""
    sde = ss.CosineVPSDE(s=s)
    t = u * sde.T

    def f(t):
        return np.cos((t + s) / (1 + s) * np.pi / 2) ** 2

    alpha, sigma = sde.marginal(jnp.float64(t))
    assert np.isclose(float(alpha) ** 2, f(t) / f(0), rtol=1e-12, atol=0)
    assert np.isclose(float(sigma) ** 2, 1 - f(t) / f(0), rtol=1e-9, atol=1e-15)
    if 1e-4 < t < sde.T - 1e-4:
        h = 1e-6
        beta = -(np.log(f(t + h)) - np.log(f(t - h))) / (2 * h)
        assert np.isclose(float(sde.diffusion(jnp.float64(t))) ** 2, beta, rtol=1e-6)
        assert np.isclose(-2 * float(sde.drift_coeff(jnp.float64(t))), beta, rtol=1e-6)


def test_cosine_end_time():
    """The default ends where alpha(T) ~ 8.4e-3, beta(T) ~ 370 (no clipping); T is adjustable."""
    sde = ss.CosineVPSDE()
    alpha, sigma = sde.marginal(sde.T)
    assert sde.T == 0.9946 and 8.3e-3 < float(alpha) < 8.5e-3
    assert 360 < float(sde.diffusion(sde.T)) ** 2 < 380
    later = ss.CosineVPSDE(T=0.999)
    assert float(later.marginal(later.T)[0]) < 2e-3
    assert jnp.isfinite(later.log_snr(later.T)) and jnp.isfinite(later.diffusion(later.T))


def _exact_alpha_bar(betas):
    """prod_{i<=n}(1 - beta_i) and 1 - that, for n = 0..N, in exact rational arithmetic."""
    prod, out = Fraction(1), [(1.0, 0.0)]
    for b in betas:
        prod *= 1 - Fraction(float(b))
        out.append((float(prod), float(1 - prod)))
    return np.array(out)


@pytest.mark.parametrize(
    "sde",
    [ss.DDPMSDE(), ss.DDPMSDE(np.random.default_rng(0).uniform(0.01, 0.6, size=37))],
    ids=["linear", "random"],
)
def test_ddpm_marginals_are_the_discrete_chain_at_grid_points(x64, sde):
    N = sde.num_steps
    ts = jnp.arange(N + 1, dtype=jnp.float64) / N
    alpha, sigma = jax.vmap(sde.marginal)(ts)
    exact = _exact_alpha_bar(sde.betas)
    assert np.allclose(alpha**2, exact[:, 0], rtol=1e-12, atol=0)
    assert np.allclose(sigma**2, exact[:, 1], rtol=1e-12, atol=0)
    # Between grid points ln alpha_bar is linear in t: beta(t) = -N ln(1 - beta_n) on (t_{n-1}, t_n].
    mid = (jnp.arange(N, dtype=jnp.float64) + 0.5) / N
    log_ab = jnp.log(jnp.asarray(exact[:, 0]))
    assert np.allclose(
        2 * jnp.log(jax.vmap(sde.marginal)(mid)[0]), 0.5 * (log_ab[1:] + log_ab[:-1])
    )
    rates = -N * np.log1p(-sde.betas)
    assert np.allclose(jax.vmap(sde.diffusion)(mid) ** 2, rates, rtol=1e-12)


def test_ddpm_defaults_and_log_snr_inverse_at_grid_points(x64):
    sde = ss.DDPMSDE()
    assert np.array_equal(sde.betas, np.linspace(1e-4, 0.02, 1000)) and sde.num_steps == 1000
    assert sde.default_t_eps == 1e-3 and sde.T == 1.0
    ts = jnp.arange(1, 1001, dtype=jnp.float64) / 1000
    assert np.allclose(sde.log_snr_inverse(sde.log_snr(ts)), ts, rtol=1e-12, atol=0)


def test_ddpm_rate_at_a_grid_point_is_the_left_segments():
    """At t_n exactly (a binary fraction here) beta(t) is that of (t_{n-1}, t_n]."""
    sde = ss.DDPMSDE(np.linspace(0.01, 0.3, 16))
    ts = jnp.arange(1, 17) / 16
    rates = -16 * np.log1p(-sde.betas)
    assert np.allclose(jax.vmap(sde.diffusion)(ts) ** 2, rates, rtol=1e-6)
    assert np.allclose(-2 * jax.vmap(sde.drift_coeff)(ts), rates, rtol=1e-6)


def test_ddpm_schedule_is_static():
    """The betas are no array leaf (never trained or traced) and equal schedules compare equal."""
    sde = ss.DDPMSDE(num_steps=10)
    assert jax.tree.leaves(eqx.filter(sde, eqx.is_array)) == []
    assert sde == ss.DDPMSDE(num_steps=10) and hash(sde) == hash(ss.DDPMSDE(num_steps=10))
    assert sde != ss.DDPMSDE(num_steps=11)
    a = eqx.filter_jit(lambda m, t: m.marginal(t)[0])(sde, 0.3)
    assert np.isclose(float(a), float(sde.marginal(0.3)[0]))


@pytest.mark.parametrize("sde", ALL_SDES, ids=ALL_SDE_IDS)
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


GRID_VALUES = [
    ("uniform", ss.UniformGrid()),
    ("log_snr", ss.LogSNRGrid()),
    ("karras", ss.KarrasGrid()),
    ("clipped_log_snr", ss.ClippedLogSNRGrid()),
]


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.EDMSDE()], ids=["vp", "edm"])
@pytest.mark.parametrize("name, value", GRID_VALUES, ids=[n for n, _ in GRID_VALUES])
def test_grid_values_give_the_times_of_their_names(sde, name, value):
    t_eps = sde.default_t_eps
    by_name = np.asarray(ss.time_grid(sde, 7, t_eps=t_eps, kind=name))
    np.testing.assert_array_equal(
        np.asarray(ss.time_grid(sde, 7, t_eps=t_eps, kind=value)), by_name
    )
    np.testing.assert_array_equal(np.asarray(value.times_for(sde, 7, t_eps)), by_name)


def test_grid_values_carry_their_options():
    sde = ss.EDMSDE()
    np.testing.assert_array_equal(
        np.asarray(ss.KarrasGrid(rho=5.0).times_for(sde, 6, 0.002)),
        np.asarray(ss.time_grid(sde, 6, t_eps=0.002, kind="karras", rho=5.0)),
    )
    np.testing.assert_array_equal(
        np.asarray(ss.ClippedLogSNRGrid(sigma_hi=2.0).times_for(sde, 6, 0.002)),
        np.asarray(ss.clipped_log_snr_grid(sde, 6, t_eps=0.002, sigma_hi=2.0)),
    )


def test_bad_grid_values_raise():
    sde = ss.VPSDE()
    with pytest.raises(ValueError, match="rho"):
        ss.KarrasGrid(rho=0.0)
    with pytest.raises(ValueError, match="sigma_hi"):
        ss.ClippedLogSNRGrid(sigma_hi=-1.0)
    with pytest.raises(TypeError, match="kind must be a time grid"):
        ss.time_grid(sde, 4, t_eps=1e-3, kind=3)
    with pytest.raises(ValueError, match="rho"):  # a value carries its own exponent
        ss.time_grid(sde, 4, t_eps=1e-3, kind=ss.KarrasGrid(), rho=5.0)
    with pytest.raises(ValueError, match="steps"):
        ss.UniformGrid().times_for(sde, 0, 1e-3)
