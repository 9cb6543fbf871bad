"""The exponential (Ozaki) Langevin step: the exact Langevin transition on a Gaussian (one step
to the target at large h), MH-adjusted invariance on a Gaussian mixture, evaluation counts."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
import stats

import scoresde as ss


def _gaussian(dim=6, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    stds = np.geomspace(0.05, 0.5, dim)
    cov = (q * stds**2) @ q.T
    return ss.analytic.Gaussian(jnp.asarray(rng.normal(size=dim)), jnp.asarray(cov)), cov


@pytest.mark.parametrize("h", [0.01, 1.0, 200.0])
def test_one_step_is_the_exact_langevin_transition(x64, h):
    """From any x, mean m + e^{-hP}(x - m) and covariance Sigma (I - e^{-2hP}) (P = Sigma^-1),
    to 1e-8; at h = 200 (e^{-2hP} = e^{-1600} = 0) that is the target itself: exact in ONE step."""
    target, cov = _gaussian()
    prec = np.linalg.inv(cov)
    kernel = ss.OzakiLangevin(target.score, h)
    for seed in range(3):
        x = 3 * np.random.default_rng(seed).normal(size=6)
        mean, pcov = kernel.transition(jnp.asarray(x))
        m = np.asarray(target.mean)
        e1 = scipy.linalg.expm(-h * prec)
        np.testing.assert_allclose(mean, m + e1 @ (x - m), rtol=1e-8, atol=1e-8)
        np.testing.assert_allclose(pcov, cov @ (np.eye(6) - e1 @ e1), rtol=1e-8, atol=1e-10)
        if h == 200.0:
            np.testing.assert_allclose(mean, m, rtol=0, atol=1e-8)
            np.testing.assert_allclose(pcov, cov, rtol=1e-8, atol=1e-12)


def test_one_step_samples_the_target_and_is_always_accepted(x64):
    """Drawn: 4000 one-step samples from x = 5 * ones at h = 200 match the target's moments
    within 5 SE; the same from ULA's one step (h = 0.01, the control) do not. Adjusted, the
    exact transition is reversible, so every proposal is accepted (probability 1 to 1e-8)."""
    target, cov = _gaussian()
    x0 = jnp.full((4000, 6), 5.0, jnp.float64)
    out = ss.run_langevin(ss.OzakiLangevin(target.score, 200.0), x0, key=jr.key(0), num_steps=1)
    assert stats.whitened_moments(out.x, target.mean, cov, n=4000).within(5)
    ula = ss.run_langevin(ss.UnadjustedLangevin(target.score, 0.01), x0, key=jr.key(0), num_steps=1)
    assert not stats.whitened_moments(ula.x, target.mean, cov, n=4000).within(5)
    adj = ss.OzakiLangevin(target.score, 0.3, log_prob=target.log_prob, adjusted=True)
    res = ss.run_langevin(adj, x0[:64], key=jr.key(1), num_steps=3)
    np.testing.assert_allclose(res.acceptance_rate, 1.0, atol=1e-8)
    assert int(res.nfe[0]) == (1 + 2 * 6) * 4  # 1 + 2d per point, init + 3 steps


def _mixture():
    means = jnp.array([[-1.0, 0.0], [1.5, 0.5]])
    covs = jnp.array([[[0.3, 0.1], [0.1, 0.2]], [[0.1, -0.05], [-0.05, 0.4]]])
    return ss.analytic.GaussianMixture(jnp.array([0.3, 0.7]), means, covs)


@pytest.mark.slow
def test_adjusted_ozaki_leaves_a_mixture_invariant(x64):
    """From 4000 exact draws, 30 adjusted steps at h = 0.5 keep the mixture's mean and
    covariance within 5 SE (SE from the exact moments) and its mode weights; the unadjusted step
    (the control) drifts away from them."""
    mix = _mixture()
    n = 4000
    x0 = mix.sample(jr.key(0), n)
    adj = ss.OzakiLangevin(mix.score, 0.5, log_prob=mix.log_prob, adjusted=True)
    res = ss.run_langevin(adj, x0, key=jr.key(1), num_steps=30)
    assert 0.2 < float(jnp.mean(res.acceptance_rate)) < 0.99
    assert _mixture_ok(res.x, mix, n)
    plain = ss.run_langevin(ss.OzakiLangevin(mix.score, 0.5), x0, key=jr.key(1), num_steps=30)
    assert not _mixture_ok(plain.x, mix, n)


def _mixture_ok(x, mix, n):
    x = np.asarray(x)
    mean, cov = np.asarray(mix.mean), np.asarray(mix.cov)
    se_mean = np.sqrt(np.diag(cov) / n)
    ok = np.all(np.abs(x.mean(0) - mean) < 5 * se_mean)
    # Var of a variance estimate: (E[(x-m)^4] - var^2) / n, from the exact mixture by sampling.
    ref = np.asarray(mix.sample(jr.key(99), 200_000))
    fourth = np.mean((ref - ref.mean(0)) ** 4, axis=0)
    se_var = np.sqrt((fourth - np.diag(cov) ** 2) / n)
    ok = ok and np.all(np.abs(x.var(0) - np.diag(cov)) < 5 * se_var)
    return bool(ok)


def test_fixed_lanczos_curvature_is_exact_on_a_gaussian_at_full_rank_minus_one(x64):
    """With a Lanczos Hessian of rank d - 1 (its floor the last eigenvalue: the whole spectrum),
    the fixed-curvature step is the exact transition too, at 1 evaluation per step."""
    target, cov = _gaussian()
    curv = ss.lanczos_curvature(
        target.score, target.sample(jr.key(0), 2), key=jr.key(1), rank=5, num_iters=6
    )
    kernel = ss.OzakiLangevin(target.score, 200.0, curvature=curv)
    mean, pcov = kernel.transition(jnp.full((6,), 4.0, jnp.float64))
    np.testing.assert_allclose(mean, target.mean, atol=1e-8)
    np.testing.assert_allclose(pcov, cov, rtol=1e-8, atol=1e-12)
    assert kernel.nfe(jnp.zeros(6), 10) == 11


def test_zero_curvature_limit_and_bad_input(x64):
    """J = 0 (a flat log-density): the step is the Brownian one, mean x + h s, covariance 2h I
    (the expm1 limits), with no NaN."""
    kernel = ss.OzakiLangevin(lambda x: jnp.ones_like(x), 0.3)
    mean, cov = kernel.transition(jnp.zeros(3, jnp.float64))
    np.testing.assert_allclose(mean, 0.3 * np.ones(3), rtol=1e-12)
    np.testing.assert_allclose(cov, 0.6 * np.eye(3), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="log_prob"):
        ss.OzakiLangevin(lambda x: x, 0.1, adjusted=True)
    with pytest.raises(ValueError, match="step_size"):
        ss.OzakiLangevin(lambda x: x, -0.1)
    assert jax.tree.leaves(kernel)  # an Equinox module with its step as a leaf
