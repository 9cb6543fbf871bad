import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import SDE_IDS, SDES, random_gaussian, random_mixture, slow_except
from hypothesis import given, settings, strategies as st

import scoresde as ss

seeds = st.integers(0, 2**31 - 1)


@eqx.filter_jit
def _score_and_grad(dist, sde, t, key):
    """The oracle's score and autodiff of its log-density at 3 points drawn from p_t."""
    marginal = dist.marginal(sde, t)
    x = marginal.sample(key, 3)
    score = ss.analytic.marginal_score(dist, sde)
    return jax.vmap(lambda xi: score(t, xi))(x), jax.vmap(jax.grad(marginal.log_prob))(x)


@pytest.mark.parametrize("sde", slow_except(SDES, SDE_IDS, fast=("ve",)))
@settings(max_examples=10)
@given(seed=seeds, dim=st.sampled_from([1, 2, 5]), u=st.floats(0.0, 1.0))
def test_gaussian_marginal_score_is_grad_log_prob(x64, sde, seed, dim, u):
    dist = random_gaussian(seed, dim, jnp.float64)
    got, expected = _score_and_grad(dist, sde, jnp.asarray(u * sde.T), jr.key(seed))
    assert jnp.allclose(got, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sde", slow_except(SDES, SDE_IDS, fast=("vp",)))
@settings(max_examples=10)
@given(seed=seeds, dim=st.sampled_from([1, 3]), k=st.sampled_from([1, 4]), u=st.floats(0.0, 1.0))
def test_mixture_marginal_score_is_grad_log_prob(x64, sde, seed, dim, k, u):
    dist = random_mixture(seed, dim, k, jnp.float64)
    got, expected = _score_and_grad(dist, sde, jnp.asarray(u * sde.T), jr.key(seed))
    assert jnp.allclose(got, expected, rtol=1e-7, atol=1e-7)


def test_gaussian_log_prob_matches_scipy(x64):
    from scipy.stats import multivariate_normal

    dist = random_gaussian(3, 4, jnp.float64)
    x = dist.sample(jr.key(1), 5)
    expected = multivariate_normal(np.asarray(dist.mean), np.asarray(dist.cov)).logpdf(x)
    assert np.allclose(jax.vmap(dist.log_prob)(x), expected, rtol=1e-10)


def test_mixture_log_prob_matches_scipy(x64):
    from scipy.stats import multivariate_normal

    dist = random_mixture(5, 3, 3, jnp.float64)
    x = dist.sample(jr.key(2), 6)
    dens = sum(
        float(w) * multivariate_normal(np.asarray(m), np.asarray(c)).pdf(np.asarray(x))
        for w, m, c in zip(dist.weights, dist.means, dist.covs, strict=True)
    )
    assert np.allclose(jax.vmap(dist.log_prob)(x), np.log(dens), rtol=1e-10)


def test_mixture_sample_moments():
    dist = random_mixture(7, 2, 3)
    n = 40_000
    x, comp = dist.sample_with_components(jr.key(0), n)
    assert stats.mean(x, dist.mean, var=jnp.diag(dist.cov)).within(5)
    assert stats.frequencies(jnp.bincount(comp, length=3) / n, dist.weights, n).within(5)


def test_sampling_is_batch_independent():
    dist = random_mixture(1, 2, 2)
    a = dist.sample(jr.key(3), 10)
    b = dist.sample(jr.key(3), 4)
    assert jnp.array_equal(a[:4], b)


@pytest.mark.parametrize("sde", slow_except(SDES, SDE_IDS, fast=("edm",)))
def test_gaussian_flow_map_composes_and_pushes_forward(x64, sde):
    """The flow map composes and carries N at s to N at t (covariance transported exactly)."""
    dist = random_gaussian(11, 3, jnp.float64)
    t0, t1, t2 = 0.9 * sde.T, 0.4 * sde.T, 0.01 * sde.T
    x = dist.marginal(sde, t0).sample(jr.key(0), 4)
    direct = jax.vmap(lambda xi: dist.probability_flow(sde, t0, t2, xi))(x)
    composed = jax.vmap(
        lambda xi: dist.probability_flow(sde, t1, t2, dist.probability_flow(sde, t0, t1, xi))
    )(x)
    assert jnp.allclose(direct, composed, rtol=1e-10, atol=1e-10)
    jac = jax.jacfwd(lambda xi: dist.probability_flow(sde, t0, t2, xi))(x[0])
    c0, c2 = dist.marginal(sde, t0).cov, dist.marginal(sde, t2).cov
    assert jnp.allclose(jac @ c0 @ jac.T, c2, rtol=1e-8, atol=1e-10)


def test_ring_mixture_matches_benchmark_problem():
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "scoresde" / "_bench" / "data" / "ring2d.npz"
    ref = ss.analytic.GaussianMixture.from_npz(path)
    ring = ss.analytic.ring_mixture()
    for a, b in [(ring.weights, ref.weights), (ring.means, ref.means), (ring.eigvals, ref.eigvals)]:
        assert jnp.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(3)), "cov must have shape"),
        (lambda: ss.analytic.Gaussian(jnp.zeros(2), -jnp.eye(2)), "positive definite"),
        (
            lambda: ss.analytic.Gaussian(jnp.zeros(2), jnp.array([[1.0, 2.0], [0.0, 1.0]])),
            "symmetric",
        ),
        (lambda: ss.analytic.Gaussian(jnp.zeros(2)), "needs cov"),
        (
            lambda: ss.analytic.GaussianMixture(
                jnp.array([0.5, 0.6]), jnp.zeros((2, 1)), jnp.ones((2, 1, 1))
            ),
            "sum to 1",
        ),
        (
            lambda: ss.analytic.GaussianMixture(
                jnp.array([1.0]), jnp.zeros((1, 2)), jnp.ones((2, 2, 2))
            ),
            "covs must have shape",
        ),
    ],
)
def test_bad_distributions_raise(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_methods_reject_batches():
    dist = random_gaussian(0, 2)
    with pytest.raises(ValueError, match="ONE sample"):
        dist.log_prob(jnp.zeros((4, 2)))
    with pytest.raises(TypeError, match="sde"):
        ss.analytic.marginal_score(dist, "vp")


def test_oracles_compute_in_the_dtype_of_x(x64):
    """A float64-built oracle on float32 samples answers in float32 (and log_likelihood accepts
    its score: it used to raise "score must return x's dtype float32; got float64")."""
    sde = ss.VPSDE()
    for dist in (random_gaussian(0, 3, jnp.float64), random_mixture(1, 3, 2, jnp.float64)):
        x64_ = dist.sample(jr.key(0), 4)
        x32 = x64_.astype(jnp.float32)
        score = ss.analytic.marginal_score(dist, sde)
        for fn in (dist.score, dist.log_prob, lambda x, s=score: s(jnp.float32(0.5), x)):
            out = fn(x32[0])
            assert out.dtype == jnp.float32
            np.testing.assert_allclose(out, fn(x64_[0]), rtol=1e-4, atol=1e-4)
        r = ss.log_likelihood(sde, score, x32, key=jr.key(1), t_eps=1e-3)
        assert r.log_prob.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(r.log_prob)))
