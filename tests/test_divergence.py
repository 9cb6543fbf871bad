"""Tests of the divergence estimators (exact, Hutchinson, orthogonal and eigen-Hutchinson): on
linear fields, where the trace is known, and inside log_likelihood on Gaussians."""

import math
import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import random_gaussian

import scoresde as ss
from scoresde._likelihood.divergence import EigenHutchinson, ExactDivergence, Hutchinson
from scoresde._likelihood.flow import log_likelihood

_gaussian = random_gaussian


def _linear_problem(dim=6):
    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(dim, dim)) + 2 * np.eye(dim), jnp.float32)
    a = 0.5 * (a + a.T)  # symmetric, so MATH.md's variance formulas apply
    return a, (lambda x: a @ x), jnp.zeros((dim,), jnp.float32)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_unbiased_on_linear_field(noise):
    a, fn, x = _linear_problem()
    div = Hutchinson(num_probes=1, noise=noise)
    n = 4000

    def one(i):
        probes = div.init(jr.fold_in(jr.key(0), i), fn, x)
        return div(fn, x, probes)[1][0]

    est = jax.vmap(one)(jnp.arange(n))
    assert stats.mean(est, jnp.trace(a)).within(4)
    # MATH.md's variances for a symmetric J.
    fro2 = float(jnp.sum(a**2))
    expected_var = (
        2 * (fro2 - float(jnp.sum(jnp.diag(a) ** 2))) if noise == "rademacher" else 2 * fro2
    )
    np.testing.assert_allclose(float(jnp.var(est)), expected_var, rtol=0.15)


def test_rademacher_variance_below_gaussian():
    a, fn, x = _linear_problem()
    variances = {}
    for noise in ("rademacher", "gaussian"):
        div = Hutchinson(noise=noise)
        keys = jax.vmap(lambda i: jr.fold_in(jr.key(1), i))(jnp.arange(2000))
        est = jax.vmap(lambda k, d=div: d(fn, x, d.init(k, fn, x))[1][0])(keys)
        variances[noise] = float(jnp.var(est))
    assert variances["rademacher"] < 0.8 * variances["gaussian"]


def _linear_estimates(div, fn, x, n, seed):
    keys = jax.vmap(lambda i: jr.fold_in(jr.key(seed), i))(jnp.arange(n))
    return jax.vmap(lambda k: jnp.mean(div(fn, x, div.init(k, fn, x))[1]))(keys)


def test_orthogonal_probes_are_rademacher_and_orthogonal():
    for size, num in [(8, 8), (6, 5), (3, 9), (1, 3)]:
        probes = Hutchinson(num, orthogonal=True).init(
            jr.key(size), None, jnp.zeros((size,), jnp.float32)
        )
        assert probes.shape == (num, size)
        np.testing.assert_array_equal(jnp.abs(probes), 1.0)
    # A full block (size a power of two) is an orthogonal basis: V V^T = size * I.
    full = Hutchinson(8, orthogonal=True).init(jr.key(0), None, jnp.zeros((8,), jnp.float32))
    np.testing.assert_array_equal(full @ full.T, 8 * jnp.eye(8))


def test_orthogonal_hutchinson_unbiased_exact_when_full_and_lower_variance():
    a, fn, _ = _linear_problem(dim=8)
    x = jnp.zeros((8,), jnp.float32)
    trace = float(jnp.trace(a))
    # Eight orthogonal probes of an 8-D field: the exact trace, for every key.
    full = _linear_estimates(Hutchinson(8, orthogonal=True), fn, x, 16, seed=0)
    np.testing.assert_allclose(full, trace, rtol=1e-5)
    # Three of them (and three on a 6-D field, not a power of two): unbiased.
    for dim in (8, 6):
        a, fn, _ = _linear_problem(dim=dim)
        x = jnp.zeros((dim,), jnp.float32)
        est = _linear_estimates(Hutchinson(3, orthogonal=True), fn, x, 4000, seed=1)
        se = float(jnp.std(est)) / math.sqrt(est.size)
        assert abs(float(jnp.mean(est)) - float(jnp.trace(a))) < 4 * se, dim
    # Four of eight: on average over the random rows, the variance is (8 - 4)/(8 - 1) = 4/7
    # of that of four independent probes (whose variance is exactly 2 sum_{i != j} a_ij^2 / 4).
    a, fn, _ = _linear_problem(dim=8)
    x = jnp.zeros((8,), jnp.float32)
    iid_var = 2 * float(jnp.sum(a**2) - jnp.sum(jnp.diag(a) ** 2)) / 4
    est = _linear_estimates(Hutchinson(4, orthogonal=True), fn, x, 4000, seed=2)
    # The variance of a sample variance over 4000 draws is ~ 2 var^2 / 4000 (a few percent).
    np.testing.assert_allclose(float(jnp.var(est)), 4 / 7 * iid_var, rtol=0.15)


def test_step_control_norm_bounds_the_mean_over_probes():
    from scoresde._likelihood.step_size_control import augmented_rms as _augmented_rms

    x_err = jnp.array([3.0, -4.0, 0.0])
    # One probe: the plain RMS over all entries.
    np.testing.assert_allclose(_augmented_rms((x_err, jnp.array([2.0]))), math.sqrt(29 / 4))
    # Several: per-probe errors that cancel in the mean do not count.
    np.testing.assert_allclose(_augmented_rms((x_err, jnp.array([2.0, -2.0]))), math.sqrt(25 / 4))
    grad = jax.grad(lambda e: _augmented_rms((e, jnp.zeros(2))))(jnp.zeros(3))
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_orthogonal_needs_rademacher():
    with pytest.raises(ValueError, match="rademacher"):
        Hutchinson(2, "gaussian", orthogonal=True)


def test_exact_and_eigen_divergence_on_linear_field():
    a, fn, x = _linear_problem()
    fx, est = ExactDivergence()(fn, x, None)
    np.testing.assert_allclose(est[0], jnp.trace(a), rtol=1e-5)
    # In the eigenbasis of a constant symmetric Jacobian, Rademacher probes are exact.
    div = EigenHutchinson(num_probes=2)
    probes = div.init(jr.key(0), fn, x)
    np.testing.assert_allclose(div(fn, x, probes)[1], jnp.full((2,), jnp.trace(a)), rtol=1e-4)


def _gaussian_case(n, dim=4):
    sde = ss.VPSDE()
    dist = _gaussian(7, dim, jnp.float32)
    x0 = dist.sample(jr.key(3), 1)
    x = jnp.broadcast_to(x0, (n, dim))  # the same point, a different probe per copy
    return sde, dist, ss.analytic.marginal_score(dist, sde), x


def test_hutchinson_unbiased_on_gaussian_and_stderr():
    n = 256
    sde, dist, score, x = _gaussian_case(n)
    prior = dist.marginal(sde, sde.T).log_prob
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = log_likelihood(
            sde, score, x[:1], divergence=ExactDivergence(), t_eps=1e-3, prior_log_prob=prior
        )
        results = {
            p: log_likelihood(
                sde,
                score,
                x,
                key=jr.key(5),
                divergence=Hutchinson(p),
                t_eps=1e-3,
                prior_log_prob=prior,
            )
            for p in (1, 4)
        }
    for p, result in results.items():
        assert stats.mean(result.log_prob, exact.log_prob[0]).within(4), p
    # The per-sample standard error follows the spread of single-probe estimates / sqrt(4).
    assert results[1].stderr is None
    single_sd = float(jnp.std(results[1].log_prob))
    np.testing.assert_allclose(float(jnp.mean(results[4].stderr)), single_sd / 2, rtol=0.2)
    np.testing.assert_allclose(float(jnp.std(results[4].log_prob)), single_sd / 2, rtol=0.2)


@pytest.mark.slow
def test_stderr_scales_as_inverse_sqrt_probes():
    n = 128
    sde, dist, score, x = _gaussian_case(n, dim=6)
    prior = dist.marginal(sde, sde.T).log_prob
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        se = {
            p: float(
                jnp.mean(
                    log_likelihood(
                        sde,
                        score,
                        x,
                        key=jr.key(2),
                        divergence=Hutchinson(p),
                        t_eps=1e-3,
                        prior_log_prob=prior,
                    ).stderr
                )
            )
            for p in (4, 16, 64)
        }
    np.testing.assert_allclose(se[4] / se[16], 2.0, rtol=0.2)
    np.testing.assert_allclose(se[16] / se[64], 2.0, rtol=0.2)


def test_eigen_hutchinson_reduces_error_on_rotated_gaussian():
    n = 64
    sde = ss.VPSDE()
    rng = np.random.default_rng(4)
    dim = 8
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = (q * np.geomspace(1e-3, 1.0, dim)) @ q.T
    dist = ss.analytic.Gaussian(jnp.zeros(dim), jnp.asarray(cov, jnp.float32))
    score = ss.analytic.marginal_score(dist, sde)
    x = dist.sample(jr.key(0), n)
    prior = dist.marginal(sde, sde.T).log_prob
    expected = jax.vmap(dist.marginal(sde, 1e-4).log_prob)(x)
    errors = {}
    for div in (Hutchinson(), EigenHutchinson()):
        r = log_likelihood(
            sde, score, x, key=jr.key(1), divergence=div, t_eps=1e-4, prior_log_prob=prior
        )
        errors[type(div).__name__] = float(jnp.sqrt(jnp.mean((r.log_prob - expected) ** 2)))
        if isinstance(div, EigenHutchinson):
            np.testing.assert_array_equal(r.nfe, 2 + 6 * r.num_steps)  # + the Jacobian at start
    assert errors["Hutchinson"] > 0.3  # a single plain probe is noisy here
    assert errors["EigenHutchinson"] < 0.1 * errors["Hutchinson"]


def _probe_law(make_probes, size, n_keys=4000):
    """Statistics of probe 0 over `n_keys` keys, each a z-score under an i.i.d. Rademacher law:
    the count of constant probes (all +1 or all -1, probability 2^(1 - size)), and the means of
    the elementary symmetric polynomials e_1, e_2, e_3 of the entries (E = 0, Var = C(size, r))."""
    keys = jax.vmap(lambda i: jr.fold_in(jr.key(11), i))(jnp.arange(n_keys))
    v = np.asarray(jax.vmap(lambda k: make_probes(k)[0].reshape(-1))(keys), np.float64)
    np.testing.assert_array_equal(np.abs(v), 1.0)
    p = 2.0 ** (1 - size)
    constant = np.sum(np.all(v == v[:, :1], axis=1))
    z = {"constant": (constant - n_keys * p) / math.sqrt(n_keys * p * (1 - p))}
    s = v.sum(axis=1)  # e_r of +-1 entries in terms of their sum s (v_i^2 = 1)
    e = {1: s, 2: (s**2 - size) / 2, 3: (s**3 - 3 * s * size + 2 * s) / 6}
    for r, e_r in e.items():
        z[f"e{r}"] = e_r.mean() / math.sqrt(math.comb(size, r) / n_keys)
    return z


@pytest.mark.parametrize("size", [8, 6])
@pytest.mark.parametrize("estimator", ["hutchinson", "eigen"])
def test_orthogonal_probe_is_exactly_rademacher(size, estimator):
    """Each orthogonal probe is i.i.d. Rademacher: constant probes as rare as 2^(1 - size) and no
    first-, second- (pairwise) or third-order moment (the sign flips do this; Hadamard columns
    alone include the all-ones column and products of three entries that are 1)."""
    x = jnp.zeros((size,), jnp.float32)
    if estimator == "hutchinson":
        div = Hutchinson(3, orthogonal=True)
        fn = None
    else:
        # A diagonal field with distinct entries: its eigenbasis is +-e_i, which flips the
        # probe's entries by fixed signs and so keeps the i.i.d. Rademacher law.
        div = EigenHutchinson(3)
        d = jnp.arange(1.0, size + 1.0, dtype=jnp.float32)
        fn = lambda y: d * y
    z = _probe_law(lambda k: div.init(k, fn, x), size)
    assert all(abs(value) < 5 for value in z.values()), z
