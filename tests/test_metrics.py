"""Sample-quality metrics: MMD, sliced Wasserstein and mode weights on cases with known answers."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats

import scoresde as ss


def test_mmd2_is_unbiased_for_one_distribution_and_grows_with_a_shift():
    n = 400
    vals = []
    for i in range(20):
        x = jr.normal(jr.key(2 * i), (n, 3))
        y = jr.normal(jr.key(2 * i + 1), (n, 3))
        vals.append(ss.mmd2(x, y, bandwidth=1.5))
    vals = np.asarray(vals)
    # unbiased: the mean over independent pairs lies within 4 standard errors of 0
    assert stats.mean(vals, 0.0, ddof=1).within(4)
    x, y = jr.normal(jr.key(0), (n, 3)), jr.normal(jr.key(1), (n, 3))
    shifts = [ss.mmd2(x, y + s, bandwidth=1.5) for s in (0.25, 0.5, 1.0)]
    assert 0 < shifts[0] < shifts[1] < shifts[2]
    assert shifts[0] > 5 * vals.std(ddof=1)


def test_mmd2_matches_a_direct_double_sum():
    x = np.asarray(jr.normal(jr.key(0), (7, 2)), np.float64)
    y = np.asarray(jr.normal(jr.key(1), (5, 2)), np.float64) + 0.3
    h = 0.8
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * h**2))
    sxx = sum(k(x[i], x[j]) for i in range(7) for j in range(7) if i != j) / 42
    syy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    sxy = sum(k(a, b) for a in x for b in y) / 35
    assert ss.mmd2(x, y, bandwidth=h) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-5)


def test_median_bandwidth_and_bad_input():
    y = jnp.asarray([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # distances 5, 5, 10
    assert ss.median_bandwidth(y) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="bandwidth"):
        ss.mmd2(y, y, bandwidth=0.0)
    with pytest.raises(ValueError, match="need"):
        ss.mmd2(y[:1], y, bandwidth=1.0)


def test_sliced_wasserstein_of_a_shift_and_mode_weights():
    x = jr.normal(jr.key(0), (2000, 2))
    # a shift by c along a direction: the projected W2 is |c . theta|; E_theta (c.theta)^2 = |c|^2/2
    sw = ss.sliced_wasserstein(x, x + jnp.asarray([[1.0, 0.0]]), key=jr.key(1))
    assert sw == pytest.approx(np.sqrt(0.5), rel=0.15)
    mix = ss.analytic.ring_mixture()
    samples = mix.sample(jr.key(2), 4000)
    err = ss.mode_weight_error(mix, samples)
    assert err < 4 * np.sqrt(0.2 * 0.8 / 4000)
    assert ss.mode_weights(mix, samples).sum() == pytest.approx(1.0)
