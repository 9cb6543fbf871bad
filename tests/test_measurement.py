"""LinearMeasurement and the exact conditioning oracles of `ss.analytic` (MATH.md, Conditional
sampling): the posterior, the evidence and the noisy likelihood score."""

import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
import pytest
import stats
from helpers import SDE_IDS, SDES, random_gaussian, random_mixture
from hypothesis import given, settings, strategies as st

import scoresde as ss


def _measurement(seed, dim, d_y, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    A = jnp.asarray(rng.normal(size=(d_y, dim)), dtype)
    y = jnp.asarray(rng.normal(size=d_y), dtype)
    noise = jnp.asarray(rng.uniform(0.2, 1.0, size=d_y), dtype)
    return ss.LinearMeasurement(A, y, noise)


# --- the measurement itself -------------------------------------------------------------------


def test_apply_transpose_and_log_likelihood(x64):
    m = _measurement(0, 3, 2)
    x = jnp.array([0.3, -1.0, 2.0])
    A = np.asarray(m.matrix)
    np.testing.assert_allclose(m.apply(x), A @ np.asarray(x), rtol=1e-12)
    v = jnp.array([1.0, -2.0])
    np.testing.assert_allclose(m.transpose(v, x), A.T @ np.asarray(v), rtol=1e-12)
    r = np.asarray(m.y) - A @ np.asarray(x)
    var = np.asarray(m.noise_std) ** 2
    expected = -0.5 * np.sum(np.log(2 * np.pi * var) + r**2 / var)
    np.testing.assert_allclose(m.log_likelihood(x), expected, rtol=1e-12)


def test_lineax_operator_equals_matrix(x64):
    m = _measurement(1, 3, 2)
    op = ss.LinearMeasurement(lx.MatrixLinearOperator(m.matrix), m.y, m.noise_std)
    x = jnp.array([1.0, 2.0, -0.5])
    np.testing.assert_allclose(op.apply(x), m.apply(x), rtol=1e-14)
    g = random_gaussian(3, 3, jnp.float64)
    np.testing.assert_allclose(g.condition(op).cov, g.condition(m).cov, rtol=1e-12)


def test_from_mask_selects_observed_entries(x64):
    mask = jnp.array([[True, False], [False, True]])
    x_obs = jnp.array([[1.0, 9.0], [9.0, 2.0]])
    m = ss.LinearMeasurement.from_mask(mask, x_obs, 0.1)
    np.testing.assert_array_equal(m.y, [1.0, 2.0])
    x = jnp.array([[5.0, 6.0], [7.0, 8.0]])
    np.testing.assert_array_equal(m.apply(x), [5.0, 8.0])
    np.testing.assert_array_equal(m.transpose(jnp.array([1.0, 2.0]), x), [[1.0, 0.0], [0.0, 2.0]])
    assert m.dim_y == 2 and m.dim_x == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(A=np.ones(3), y=np.ones(3), noise_std=1.0), "A must be a"),
        (dict(A=np.ones((2, 3)), y=np.ones(3), noise_std=1.0), "y must have shape"),
        (dict(A=np.ones((2, 3)), y=np.ones(2), noise_std=0.0), "noise_std"),
        (dict(A=np.ones((2, 3)), y=np.ones(2), noise_std=-1.0), "noise_std"),
        (dict(A=np.ones((2, 3)), y=np.ones(2), noise_std=np.ones(3)), "noise_std"),
    ],
)
def test_bad_measurements_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ss.LinearMeasurement(**kwargs)


def test_bad_inputs_name_the_argument():
    m = ss.LinearMeasurement(np.ones((2, 3)), np.ones(2), 1.0)
    with pytest.raises(ValueError, match="A has width 3"):
        m.apply(jnp.ones(4))
    g = ss.analytic.Gaussian(jnp.zeros(4), jnp.eye(4))
    with pytest.raises(ValueError, match="A has width 3"):
        g.condition(m)
    with pytest.raises(TypeError, match="LinearMeasurement"):
        g.condition("not a measurement")
    with pytest.raises(ValueError, match="mask has shape"):
        ss.LinearMeasurement.from_mask(jnp.array([True, False]), jnp.ones(3), 0.1)
    with pytest.raises(TypeError, match="mask must be boolean"):
        ss.LinearMeasurement.from_mask(jnp.array([1, 0]), jnp.ones(2), 0.1)
    masked = ss.LinearMeasurement.from_mask(jnp.array([True, False, True, False]), jnp.ones(4), 1)
    with pytest.raises(ValueError, match="mask has shape"):
        masked.apply(jnp.ones((2, 2)))


# --- the exact posterior ----------------------------------------------------------------------


def test_gaussian_condition_matches_math_md(x64):
    """P = (S^-1 + A^T A / s^2)^-1, m = P (S^-1 mu + A^T y / s^2) (MATH.md), scalar noise."""
    g = random_gaussian(4, 3, jnp.float64)
    rng = np.random.default_rng(5)
    A, y, s = rng.normal(size=(2, 3)), rng.normal(size=2), 0.4
    post = g.condition(ss.LinearMeasurement(A, y, s))
    S = np.asarray(g.cov)
    P = np.linalg.inv(np.linalg.inv(S) + A.T @ A / s**2)
    mean = P @ (np.linalg.solve(S, np.asarray(g.mean)) + A.T @ y / s**2)
    assert isinstance(post, ss.analytic.Gaussian)
    np.testing.assert_allclose(post.cov, P, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(post.mean, mean, rtol=1e-10, atol=1e-12)


def _grid_1d(mixture, a, y, s, n=200001, lim=12.0):
    x = np.linspace(-lim, lim, n)
    log_prior = np.asarray(jax.vmap(mixture.log_prob)(jnp.asarray(x)[:, None]))
    log_lik = -0.5 * ((y - a * x) / s) ** 2 - 0.5 * np.log(2 * np.pi * s**2)
    joint = np.exp(log_prior + log_lik)
    dx = x[1] - x[0]
    evidence = joint.sum() * dx
    post = joint / evidence
    mean = (x * post).sum() * dx
    var = ((x - mean) ** 2 * post).sum() * dx
    return x, post, np.log(evidence), mean, var


def test_mixture_condition_and_evidence_match_quadrature(x64):
    mix = ss.analytic.GaussianMixture(
        jnp.array([0.3, 0.5, 0.2]),
        jnp.array([[-3.0], [0.5], [4.0]]),
        jnp.array([[[0.5]], [[1.0]], [[0.3]]]),
    )
    a, y, s = 0.8, 1.1, 0.7
    m = ss.LinearMeasurement(jnp.array([[a]]), jnp.array([y]), s)
    post = mix.condition(m)
    assert isinstance(post, ss.analytic.GaussianMixture)
    x, density, log_evidence, mean, var = _grid_1d(mix, a, y, s)
    np.testing.assert_allclose(mix.log_evidence(m), log_evidence, atol=1e-8)
    np.testing.assert_allclose(post.mean[0], mean, atol=1e-8)
    np.testing.assert_allclose(post.cov[0, 0], var, atol=1e-8)
    pts = jnp.asarray(x[::5000])[:, None]
    np.testing.assert_allclose(
        np.exp(jax.vmap(post.log_prob)(pts)), density[::5000], rtol=1e-7, atol=1e-12
    )
    # Negative control: the prior weights (no evidence re-weighting) miss the mean.
    unweighted = ss.analytic.GaussianMixture(mix.weights, post.means, post.covs)
    assert abs(float(unweighted.mean[0]) - mean) > 0.1


@pytest.mark.slow  # the quadrature test checks `condition` on mixtures in the default run
def test_mixture_condition_2d_importance_weights(x64):
    """2-D mixture, 1-D observation: posterior mean and covariance against self-normalised
    importance sampling from the prior (tolerance 5 standard errors)."""
    mix = random_mixture(7, 2, 3, jnp.float64)
    m = ss.LinearMeasurement(jnp.array([[1.0, 0.5]]), jnp.array([0.8]), 0.5)
    post = mix.condition(m)
    n = 200_000
    x = mix.sample(jr.key(0), n)
    logw = jax.vmap(m.log_likelihood)(x)
    w = np.asarray(jax.nn.softmax(logw))
    xs = np.asarray(x)
    mean = w @ xs
    ess = 1 / np.sum(w**2)
    sd = np.sqrt(np.diag(np.asarray(post.cov)))
    assert np.all(np.abs(mean - np.asarray(post.mean)) < 5 * sd / np.sqrt(ess))
    cov = (xs - mean).T @ ((xs - mean) * w[:, None])
    assert np.all(np.abs(cov - np.asarray(post.cov)) < 5 * np.outer(sd, sd) * np.sqrt(2 / ess))
    # log_evidence against plain Monte Carlo: ln mean exp(log-lik), 5 SE of the mean.
    assert stats.mean(np.exp(np.asarray(logw)), np.exp(float(mix.log_evidence(m)))).within(5)
    # Negative control: the prior's own mean is far outside the same bound.
    assert np.any(np.abs(np.asarray(mix.mean) - np.asarray(post.mean)) > 5 * sd / np.sqrt(ess))


# --- the identity: diffused posterior score = diffused prior score + noisy likelihood score ----


_IDENTITY_CASES = dict(
    seed=st.integers(0, 2**31 - 1),
    dim=st.integers(1, 3),
    d_y=st.integers(1, 3),
    k=st.integers(1, 3),
    u=st.floats(0.01, 1.0),
)


@settings(max_examples=2)  # 15 per SDE in test_posterior_score_identity_long (slow)
@given(**_IDENTITY_CASES)
def test_posterior_score_identity(x64, seed, dim, d_y, k, u):
    _check_identity(ss.VPSDE(), seed, dim, d_y, k, u)


@pytest.mark.slow
@settings(max_examples=15)
@given(**_IDENTITY_CASES)
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_posterior_score_identity_long(x64, sde, seed, dim, d_y, k, u):
    _check_identity(sde, seed, dim, d_y, k, u)


def _check_identity(sde, seed, dim, d_y, k, u):
    prior = (
        random_gaussian(seed, dim, jnp.float64)
        if k == 1
        else random_mixture(seed, dim, k, jnp.float64)
    )
    m = _measurement(seed + 1, dim, d_y)
    t = u * sde.T
    x = jnp.asarray(np.random.default_rng(seed + 2).normal(size=dim)) * (1 + sde.prior_std * u)
    lhs = ss.analytic.marginal_score(prior.condition(m), sde)(t, x)
    nls = ss.analytic.noisy_likelihood_score(prior, sde, m)(t, x)
    rhs = ss.analytic.marginal_score(prior, sde)(t, x) + nls
    scale = 1 + float(jnp.max(jnp.abs(lhs)))
    assert float(jnp.max(jnp.abs(lhs - rhs))) < 1e-8 * scale
    # Negative control: the clean likelihood's gradient at x_t is NOT the noisy one.
    clean = jax.grad(m.log_likelihood)(x)
    if u > 0.2:
        assert float(jnp.max(jnp.abs(clean - nls))) > 1e-6 * scale


def test_noisy_likelihood_score_checks_inputs():
    g = ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2))
    m = ss.LinearMeasurement(np.ones((1, 3)), np.ones(1), 1.0)
    with pytest.raises(ValueError, match="A has width 3"):
        ss.analytic.noisy_likelihood_score(g, ss.VPSDE(), m)
    with pytest.raises(TypeError, match="sde"):
        ss.analytic.noisy_likelihood_score(g, "vp", m)


def test_grayscale_measurement_is_the_channel_mean():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(3, 4, 5)), jnp.float32)
    gray = x.mean(0)
    m = ss.LinearMeasurement.grayscale(gray, 0.01)
    assert (m.dim_y, m.dim_x) == (20, 60)
    np.testing.assert_allclose(m.apply(x), gray.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(m.matrix @ x.reshape(-1), gray.reshape(-1), rtol=1e-5)
    # Rows orthogonal with squared norm 1 / C.
    np.testing.assert_allclose(m.matrix @ m.matrix.T, jnp.eye(20) / 3, atol=1e-7)
    assert ss.LinearMeasurement.grayscale(gray[None], 0.01, channels=2).dim_x == 40
    with pytest.raises(ValueError, match="A has width"):
        m.apply(jnp.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="channels"):
        ss.LinearMeasurement.grayscale(gray, 0.01, channels=0)
    with pytest.raises(ValueError, match="noise_std"):
        ss.LinearMeasurement.grayscale(gray, 0.0)
