"""The classical bits/dim baselines of benchmarks/real_data.py (scoresde/_bench/baselines.py):
each density checked against an explicit formula, the conventions against exact values."""

import math

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from scoresde._bench import baselines as bl


def _data(n=400, d=6, seed=0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.linspace(3, 0.2, d)
    return rng.normal(size=(n, d)) @ mix.T + rng.normal(size=d)


def test_full_gaussian_is_the_sample_gaussian():
    w = _data()
    x = _data(50, seed=1)
    expected = multivariate_normal(w.mean(axis=0), np.cov(w, rowvar=False)).logpdf(x)
    np.testing.assert_allclose(bl.gaussian_log_density(w)(x), expected, rtol=1e-10)
    np.testing.assert_allclose(bl.gaussian_log_density(w, rank=6)(x), expected, rtol=1e-10)


@pytest.mark.parametrize("rank", [1, 3, 4])
def test_pca_gaussian_is_the_gaussian_of_its_covariance(rank):
    w = _data()
    x = _data(50, seed=1)
    vals, vecs = np.linalg.eigh(np.cov(w, rowvar=False))
    vals, vecs = vals[::-1], vecs[:, ::-1]
    kept = np.concatenate([vals[:rank], np.full(6 - rank, vals[rank:].mean())])
    cov = (vecs * kept) @ vecs.T
    expected = multivariate_normal(w.mean(axis=0), cov).logpdf(x)
    got = bl.gaussian_log_density(w, rank=rank)(x)
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    # Negative control: the full Gaussian is another density (rank < D - 1: not one eigenvalue).
    assert np.max(np.abs(bl.gaussian_log_density(w)(x) - got)) > 1e-2
    # Ranks that are not a rank, and a singular covariance, are refused.
    for bad in (0, 7):
        with pytest.raises(ValueError, match="rank must be"):
            bl.gaussian_log_density(w, rank=bad)
    with pytest.raises(ValueError, match="singular"):
        bl.gaussian_log_density(np.zeros((10, 6)), rank=rank)


def test_categorical_is_exact_and_smoothing_tends_to_uniform():
    v = np.array([[0, 2], [0, 1], [1, 1]])
    probs = bl.categorical_fit(v, 0.5, levels=3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    # Pixel 0: counts (2, 1, 0) -> (2.5, 1.5, 0.5) / 4.5; pixel 1: counts (0, 2, 1).
    np.testing.assert_allclose(probs, np.array([[2.5, 1.5, 0.5], [0.5, 2.5, 1.5]]) / 4.5)
    expected = -(math.log2(2.5 / 4.5) + math.log2(1.5 / 4.5)) / 2
    assert bl.categorical_bpd(probs, v[:1])[0] == pytest.approx(expected, rel=1e-12)
    flat = bl.categorical_fit(v, 1e9, levels=3)
    np.testing.assert_allclose(bl.categorical_bpd(flat, v), bl.uniform_bpd(3), rtol=1e-8)
    with pytest.raises(ValueError, match="levels in"):
        bl.categorical_fit(v, 0.5, levels=2)
    with pytest.raises(ValueError, match="alpha"):
        bl.categorical_fit(v, 0.0, levels=3)


def test_dequantised_uniform_density_costs_log2_levels():
    """The continuous convention: the uniform density on [0, L)^D scores log2 L bits/dim for
    every draw of u, the discrete uniform's exact figure."""
    levels, d = 256, 10
    rng = np.random.default_rng(0)
    v = rng.integers(0, levels, (30, d))
    per_image, draws = bl.dequantised_bpd(lambda w: np.full(len(w), -d * math.log(levels)), v,
                                          rng, repeats=3)  # fmt: skip
    np.testing.assert_allclose(per_image, 8.0)
    np.testing.assert_allclose(draws, 8.0)
    assert bl.uniform_bpd(levels) == 8.0
    # A density fitted to dequantised data: finite figures, and the draws differ (u is random).
    w = bl.dequantised(v, rng, copies=2)
    assert w.shape == (60, d) and np.all((w >= 0) & (w < levels))
    np.testing.assert_array_equal(np.floor(w[:30]), v)
    per_image, draws = bl.dequantised_bpd(bl.gaussian_log_density(w), v, rng, repeats=3)
    assert np.all(np.isfinite(per_image)) and np.ptp(draws) > 0


def test_row_standard_errors_and_validation_split():
    r = bl.row("x", np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 3.0]), k=1)
    assert r["bpd"] == 2.5 and r["k"] == 1
    assert r["stderr_test"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2)
    assert r["stderr_mc"] == pytest.approx(np.std([2, 3], ddof=1) / math.sqrt(2))
    v = np.arange(20).reshape(10, 2)
    fit, val = bl.split_validation(v, 3, seed=0)
    assert len(fit) == 7 and len(val) == 3
    np.testing.assert_array_equal(np.sort(np.concatenate([fit, val]), axis=0), v)
    with pytest.raises(ValueError, match="num_val"):
        bl.split_validation(v, 10, seed=0)
