"""Lanczos curvature from score JVPs: the top eigenpairs of the Hessian of -ln p on a float64
Gaussian, the inverse-Hessian metric it builds, its cost, and negative (downdate) weights in
LowRankPreconditioner."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss


def _gaussian(dim, seed=0, lo=0.02, hi=0.5):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    stds = np.geomspace(lo, hi, dim)
    cov = (q * stds**2) @ q.T
    return ss.analytic.Gaussian(jnp.asarray(rng.normal(size=dim)), jnp.asarray(cov)), cov


@pytest.mark.parametrize("at", ["mean", "points"])
def test_top_eigenvalues_of_a_gaussian_hessian(x64, at):
    """H = Sigma^-1 everywhere; 20 Lanczos steps on a 20-D Gaussian (the full Krylov space) give
    its top-4 eigenvalues to 1e-6 (relative) and their eigenvectors; cost 2 m (2 n m at the
    points)."""
    target, cov = _gaussian(20)
    x = target.sample(jr.key(0), 3)
    out = ss.lanczos_curvature(target.score, x, key=jr.key(1), rank=4, num_iters=20, at=at)
    exact = np.sort(np.linalg.eigvalsh(np.linalg.inv(cov)))[::-1]
    np.testing.assert_allclose(out.eigvals, exact[:4], rtol=1e-6)
    np.testing.assert_allclose(out.floor, exact[4], rtol=1e-6)
    h = np.linalg.inv(cov)
    vecs = np.asarray(out.eigvecs)
    np.testing.assert_allclose(h @ vecs, vecs * exact[:4], rtol=1e-6, atol=1e-6 * exact[0])
    assert out.evals == (40 if at == "mean" else 120)


@pytest.mark.slow
def test_few_iterations_on_a_log_spaced_spectrum(x64):
    """64-D, condition number 625, log-spaced: the default 2k + 10 = 18 steps already give the
    top-4 eigenvalues to 1e-6; 6 steps do not (control: the accuracy comes from the Krylov
    space, not from the test)."""
    target, cov = _gaussian(64, seed=1)
    exact = np.sort(np.linalg.eigvalsh(np.linalg.inv(cov)))[::-1]
    x = target.sample(jr.key(0), 2)
    out = ss.lanczos_curvature(target.score, x, key=jr.key(1), rank=4)
    np.testing.assert_allclose(out.eigvals, exact[:4], rtol=1e-6)
    assert out.evals == 36
    short = ss.lanczos_curvature(target.score, x, key=jr.key(1), rank=4, num_iters=6)
    assert not np.allclose(short.eigvals, exact[:4], rtol=1e-6)


def test_metric_is_the_inverse_hessian_on_the_top_directions(x64):
    """M = floor^-1 (I - U U^T) + U diag(1/theta) U^T, so M H has eigenvalue 1 on the top-k
    directions and lambda_j / theta_{k+1} <= 1 elsewhere (k = 5 of 20, default 20 steps: exact
    Ritz values, so 1 also on the 6th direction)."""
    target, cov = _gaussian(20, seed=2)
    h = np.linalg.inv(cov)
    pre = ss.estimate_preconditioner(
        target.score, target.sample(jr.key(0), 4), kind="lanczos", rank=5, key=jr.key(1)
    )
    assert isinstance(pre, ss.LowRankPreconditioner)
    m = np.asarray(jax.vmap(pre.apply)(jnp.eye(20)))
    ev = np.sort(np.linalg.eigvals(m @ h).real)[::-1]
    exact = np.sort(np.linalg.eigvalsh(h))[::-1]
    np.testing.assert_allclose(ev[:6], 1.0, rtol=1e-6)
    np.testing.assert_allclose(ev[6:], exact[6:] / exact[5], rtol=1e-6)


def test_low_rank_downdate_algebra(x64):
    """Negative weights: D + U diag(s) U^T against dense NumPy; a weight that makes M indefinite
    is refused."""
    rng = np.random.default_rng(3)
    diag = rng.uniform(0.5, 2.0, size=6)
    u, _ = np.linalg.qr(rng.normal(size=(6, 2)))
    s = np.array([-0.2, 1.5]) * diag.min()
    pre = ss.LowRankPreconditioner(diag, u, s)
    dense = np.diag(diag) + (u * s) @ u.T
    v = rng.normal(size=6)
    np.testing.assert_allclose(pre.apply(jnp.asarray(v)), dense @ v, rtol=1e-10)
    np.testing.assert_allclose(pre.inverse_apply(jnp.asarray(v)), np.linalg.solve(dense, v))
    np.testing.assert_allclose(float(pre.log_det()), np.linalg.slogdet(dense)[1], rtol=1e-10)
    cols = np.asarray(jax.vmap(pre.sqrt_apply)(jnp.eye(6)))
    np.testing.assert_allclose(cols.T @ cols, dense, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="positive definite"):
        ss.LowRankPreconditioner(np.ones(6), u, np.array([-1.5, 0.0]))


def test_bad_input():
    target, _ = _gaussian(6)
    x = target.sample(jr.key(0), 2)
    with pytest.raises(ValueError, match="rank"):
        ss.lanczos_curvature(target.score, x, key=jr.key(1), rank=6)
    with pytest.raises(ValueError, match="num_iters"):
        ss.lanczos_curvature(target.score, x, key=jr.key(1), rank=3, num_iters=3)
    with pytest.raises(ValueError, match="at"):
        ss.lanczos_curvature(target.score, x, key=jr.key(1), rank=3, at="everywhere")
    with pytest.raises(TypeError, match="rank= and key="):
        ss.estimate_preconditioner(target.score, x, kind="lanczos")
    # A concave-up direction only: -ln p of a "Gaussian" with negative precision has no
    # positive curvature to precondition by.
    with pytest.raises(ValueError, match="no positive curvature"):
        ss.lanczos_curvature(lambda y: y, x, key=jr.key(1), rank=2)


@pytest.mark.parametrize("name, value", [("mean", ss.PilotMean()), ("points", ss.PilotPoints())])
def test_evaluation_point_values_match_their_names(x64, name, value):
    target, _ = _gaussian(5)
    x = target.sample(jr.key(0), 3)
    by_name = ss.lanczos_curvature(target.score, x, key=jr.key(1), rank=2, at=name)
    by_value = ss.lanczos_curvature(target.score, x, key=jr.key(1), rank=2, at=value)
    np.testing.assert_array_equal(np.asarray(by_value.eigvals), np.asarray(by_name.eigvals))
    assert by_value.evals == by_name.evals == 2 * 5 * (1 if name == "mean" else 3)
