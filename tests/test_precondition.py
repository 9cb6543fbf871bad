"""Preconditioners: the algebra against dense NumPy, and preconditioned kernels that leave the
target invariant (MALA exactly, ULA to its step-size bias) on a badly conditioned Gaussian."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import random_spd
from hypothesis import given, settings, strategies as st

import scoresde as ss


def _dense(kind, rng, dim, k=2):
    if kind == "identity":
        return ss.IdentityPreconditioner(), np.eye(dim)
    if kind == "diagonal":
        scale = rng.uniform(0.1, 3.0, size=dim)
        return ss.DiagonalPreconditioner(scale), np.diag(scale)
    if kind == "dense":
        cov = random_spd(rng, dim)
        return ss.DensePreconditioner(cov), cov
    diag = rng.uniform(0.1, 2.0, size=dim)
    factors = rng.normal(size=(dim, k))
    weights = rng.uniform(0.5, 4.0, size=k)
    return ss.LowRankPreconditioner(diag, factors, weights), np.diag(diag) + (
        factors * weights
    ) @ factors.T


@pytest.mark.parametrize("kind", ["identity", "diagonal", "dense", "lowrank"])
@settings(max_examples=8)
@given(dim=st.integers(3, 7), seed=st.integers(0, 2**16))
def test_algebra_matches_dense_numpy(x64, kind, dim, seed):
    rng = np.random.default_rng(seed)
    pre, m = _dense(kind, rng, dim)
    v = rng.normal(size=dim)
    np.testing.assert_allclose(pre.apply(jnp.asarray(v)), m @ v, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        pre.inverse_apply(jnp.asarray(v)), np.linalg.solve(m, v), rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(float(pre.log_det()), np.linalg.slogdet(m)[1], rtol=1e-9, atol=1e-10)
    # sqrt_apply is a square root: L L^T = M, column by column.
    cols = jax.vmap(pre.sqrt_apply)(jnp.eye(dim))  # rows are L e_j, i.e. the columns of L
    np.testing.assert_allclose(cols.T @ cols, m, rtol=1e-9, atol=1e-10)
    # Any sample shape: acts on the flattened sample.
    if dim == 6:
        img = jnp.asarray(v.reshape(2, 3))
        np.testing.assert_allclose(pre.apply(img).reshape(-1), m @ v, rtol=1e-9)


def test_bad_input():
    with pytest.raises(ValueError, match="scale"):
        ss.DiagonalPreconditioner(jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="cov"):
        ss.DensePreconditioner(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="positive definite"):
        ss.DensePreconditioner(jnp.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="weights"):
        ss.LowRankPreconditioner(jnp.ones(3), jnp.ones((3, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match="kind"):
        ss.estimate_preconditioner(None, jnp.zeros((4, 2)), kind="hessian")


def _ill_conditioned(dim=4, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    stds = np.geomspace(0.05, 1.0, dim)  # condition number 400
    cov = (q * stds**2) @ q.T
    return ss.analytic.Gaussian(jnp.asarray(rng.normal(size=dim)), jnp.asarray(cov)), cov


def test_preconditioned_mala_samples_the_target_and_mixes_faster(x64):
    """With M = the covariance, MALA with a large step samples an ill-conditioned Gaussian in 60
    steps; the same step without preconditioning is almost never accepted (negative control)."""
    target, cov = _ill_conditioned()
    x0 = jnp.zeros((2000, 4))
    pre = ss.DensePreconditioner(cov)
    good = ss.run_langevin(
        ss.MALA(target.log_prob, 0.5, preconditioner=pre), x0, key=jr.key(0), num_steps=60
    )
    assert float(jnp.mean(good.acceptance_rate)) > 0.5
    assert stats.whitened_moments(good.x, target.mean, cov, n=2000).within(5)
    plain = ss.run_langevin(ss.MALA(target.log_prob, 0.5), x0, key=jr.key(0), num_steps=60)
    assert float(jnp.mean(plain.acceptance_rate)) < 0.05
    assert not stats.whitened_moments(plain.x, target.mean, cov, n=2000).within(5)


def test_preconditioned_mala_leaves_the_target_invariant(x64):
    """Chains started from exact draws stay exact under MALA with any fixed metric (here a
    diagonal one, off the covariance's diagonal by factors 0.3 to 3, on a rotated target);
    ULA with the same metric and step drifts away from the target (its discretisation bias: the
    negative control)."""
    target, cov = _ill_conditioned(seed=1)
    pre = ss.DiagonalPreconditioner(jnp.asarray(np.diag(cov)) * jnp.array([0.3, 3.0, 1.0, 0.5]))
    x0 = target.sample(jr.key(2), 4000)
    mala = ss.run_langevin(
        ss.MALA(target.log_prob, 0.02, preconditioner=pre), x0, key=jr.key(3), num_steps=50
    )
    assert 0.3 < float(jnp.mean(mala.acceptance_rate)) < 0.8  # the chains do move
    assert stats.whitened_moments(mala.x, target.mean, cov, n=4000).within(5)
    ula = ss.run_langevin(
        ss.UnadjustedLangevin(target.score, 0.2, preconditioner=pre),
        x0,
        key=jr.key(3),
        num_steps=50,
    )
    assert not stats.whitened_moments(ula.x, target.mean, cov, n=4000).within(5)


def test_preconditioned_ula_step(x64):
    """ULA with M = Sigma: the step is x + eps Sigma s(x) + sqrt(2 eps) L z (one step, exact)."""
    target, cov = _ill_conditioned()
    pre = ss.DensePreconditioner(cov)
    kernel = ss.UnadjustedLangevin(target.score, 0.1, preconditioner=pre)
    x = jnp.ones(4)
    state, _ = kernel.step(jr.key(5), kernel.init(x))
    z = jr.normal(jr.key(5), (4,), x.dtype)
    expected = x + 0.1 * cov @ target.score(x) + np.sqrt(0.2) * np.linalg.cholesky(cov) @ z
    np.testing.assert_allclose(state.x, expected, rtol=1e-10)


def test_estimators_recover_a_gaussian(x64):
    target, cov = _ill_conditioned(seed=2)
    x = target.sample(jr.key(7), 20000)
    n = x.shape[0]
    for kind in ("covariance", "fisher"):
        est = ss.estimate_preconditioner(target.score, x, kind=kind)
        # Entrywise error of a sample covariance ~ sqrt((S_ii S_jj + S_ij^2) / n).
        se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
        if kind == "covariance":
            assert np.all(np.abs(np.asarray(est.cov) - cov) < 6 * se)
        else:  # the Fisher estimate inverts E[s s^T] = Sigma^-1: compare in the whitened frame
            white = np.linalg.cholesky(np.linalg.inv(cov))
            rel = white.T @ np.asarray(est.cov) @ white
            assert np.max(np.abs(rel - np.eye(4))) < 6 * np.sqrt(2 / n) * 4


def _dense_metric(pre, dim):
    return np.stack([np.asarray(pre.apply(e)) for e in np.eye(dim)], axis=1)


def test_fisher_divergence_fit_is_exact_for_gaussians_from_a_foreign_pilot(x64):
    # Scores of a Gaussian are linear, so the fit recovers the target from a pilot drawn from
    # N(0, I), far from the target: a diagonal Gaussian by rank=None, a spiked covariance
    # tau I + rank 2 by rank=2 (to float64 rounding, with no sampling error).
    rng = np.random.default_rng(0)
    dim = 6
    pilot = jr.normal(jr.key(1), (40, dim), jnp.float64)
    mean = jnp.asarray(rng.normal(size=dim))
    var = np.logspace(-2, 1, dim)
    diagonal = ss.analytic.Gaussian(mean, jnp.asarray(np.diag(var)))
    pre = ss.estimate_preconditioner(diagonal.score, pilot, kind="fisher_divergence")
    assert isinstance(pre, ss.DiagonalPreconditioner)
    np.testing.assert_allclose(np.asarray(pre.scale), var, rtol=1e-10)

    u = np.linalg.qr(rng.normal(size=(dim, 2)))[0]
    spiked = 0.3 * np.eye(dim) + u @ np.diag([25.0, 4.0]) @ u.T
    target = ss.analytic.Gaussian(mean, jnp.asarray(spiked))
    pre = ss.estimate_preconditioner(target.score, pilot, kind="fisher_divergence", rank=2)
    assert isinstance(pre, ss.LowRankPreconditioner)
    np.testing.assert_allclose(_dense_metric(pre, dim), spiked, atol=1e-9)
    # Negative control: the pilot's own covariance (a sample of N(0, I)) is far from it.
    est = ss.estimate_preconditioner(None, pilot, kind="covariance")
    assert np.max(np.abs(np.asarray(est.cov) - spiked)) > 1.0


def test_fisher_divergence_fit_keeps_the_diagonal_and_refuses_bad_input(x64):
    target, cov = _ill_conditioned(seed=3)
    x = target.sample(jr.key(2), 4000)
    pre = ss.estimate_preconditioner(target.score, x, kind="fisher_divergence", rank=1)
    dense = _dense_metric(pre, 4)
    # The projection keeps M's diagonal (here M = Sigma to sampling error) and its top direction.
    se = np.sqrt(2 / x.shape[0]) * np.diag(cov)
    assert np.all(np.abs(np.diag(dense) - np.diag(cov)) < 6 * se)
    top = np.linalg.eigh(cov)[1][:, -1]
    assert abs(top @ np.linalg.eigh(dense)[1][:, -1]) > 0.99
    with pytest.raises(ValueError, match="rank"):
        ss.estimate_preconditioner(target.score, x, kind="fisher_divergence", rank=4)
    with pytest.raises(TypeError, match="callable"):
        ss.estimate_preconditioner(None, x, kind="fisher_divergence")
    growing = lambda y: y  # the score of no density: the fit must not return a metric
    with pytest.raises(ValueError, match="positive definite"):
        ss.estimate_preconditioner(growing, x, kind="fisher_divergence")


def test_estimator_values_give_the_metrics_of_their_names(x64):
    target = ss.analytic.Gaussian(
        jnp.array([0.5, -1.0, 2.0]), jnp.asarray(random_spd(np.random.default_rng(1), 3))
    )
    x = target.sample(jr.key(0), 64)
    cases = [
        ("covariance", {}, ss.CovarianceEstimator()),
        ("fisher", {"jitter": 1e-3}, ss.FisherEstimator(jitter=1e-3)),
        ("fisher_divergence", {}, ss.FisherDivergenceEstimator()),
        ("fisher_divergence", {"rank": 1}, ss.FisherDivergenceEstimator(rank=1)),
        ("lanczos", {"rank": 1, "at": "points"}, ss.LanczosEstimator(rank=1, at=ss.PilotPoints())),
    ]
    for name, options, value in cases:
        by_name = ss.estimate_preconditioner(target.score, x, kind=name, key=jr.key(1), **options)
        by_value = ss.estimate_preconditioner(target.score, x, kind=value, key=jr.key(1))
        direct = value.estimate(target.score, x, key=jr.key(1))
        assert type(by_value) is type(by_name), name
        np.testing.assert_array_equal(_dense_metric(by_value, 3), _dense_metric(by_name, 3))
        np.testing.assert_array_equal(_dense_metric(direct, 3), _dense_metric(by_name, 3))


def test_bad_estimator_values_raise():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)))
    score = lambda y: -y
    with pytest.raises(ValueError, match="its own options"):
        ss.estimate_preconditioner(score, x, kind=ss.FisherDivergenceEstimator(), rank=2)
    with pytest.raises(ValueError, match="kind must be a metric estimator"):
        ss.estimate_preconditioner(score, x, kind=3)
    with pytest.raises(TypeError, match="key="):
        ss.LanczosEstimator(rank=1).estimate(score, x)
    with pytest.raises(ValueError, match="at"):
        ss.LanczosEstimator(rank=1, at="everywhere")
    with pytest.raises(ValueError, match="rank"):
        ss.FisherDivergenceEstimator(rank=0)
    with pytest.raises(ValueError, match="jitter"):
        ss.CovarianceEstimator(jitter=-1.0)
