r"""bits_per_dim's data convention: `levels=` (any L >= 2), `bits=` as its shorthand, bad input.

The oracle: an analytic Gaussian model with its exact score and exact prior, so the PF-ODE
log-density equals the model's marginal $\ln p_{t_\varepsilon}(x)$ to solver tolerance, and
bits/dim can be computed directly from the documented convention,
$\text{bpd} = -(\ln p_x(x) + D \ln((\text{high} - \text{low})/L)) / (D \ln 2)$ with
$x = \text{low} + (\text{high} - \text{low})(k + u)/L$.
"""

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss

D = 4
T_EPS = 1e-6


def _model(dtype, mean_level=8.0, std_level=3.0, levels=17, low=-1.0, high=1.0):
    """A correlated Gaussian centred on level `mean_level` with std ~ `std_level` levels."""
    scale = (high - low) / levels
    mean = low + scale * (mean_level + 0.5 + jnp.arange(D, dtype=dtype) * 0.25)
    a = jnp.eye(D, dtype=dtype) + 0.3 * jnp.ones((D, D), dtype) / D
    cov = (scale * std_level) ** 2 * (a @ a.T)
    dist = ss.analytic.Gaussian(mean, cov)
    sde = ss.VPSDE()
    kwargs = dict(
        divergence=ss.ExactDivergence(),
        t_eps=T_EPS,
        rtol=1e-9,
        atol=1e-9,
        prior_log_prob=dist.marginal(sde, sde.T).log_prob,
    )
    return sde, ss.analytic.marginal_score(dist, sde), dist, kwargs


def _digit_like(key, num, levels):
    return jr.randint(key, (num, D), 2, levels - 2).astype(jnp.float64)


def _direct_bpd(dist, sde, k, u, levels, low=-1.0, high=1.0):
    """The convention computed by hand from the model's marginal density at t_eps."""
    x = low + (high - low) * (k + u) / levels
    log_px = jax.vmap(dist.marginal(sde, T_EPS).log_prob)(x)
    return -(log_px + D * math.log((high - low) / levels)) / (D * math.log(2))


def test_levels_17_matches_direct_computation_bin_centres(x64):
    levels = 17
    sde, score, dist, kwargs = _model(jnp.float64)
    k = _digit_like(jr.key(0), 6, levels)
    r = ss.bits_per_dim(sde, score, k, levels=levels, dequantization="none", **kwargs)
    direct = _direct_bpd(dist, sde, k, 0.5, levels)
    np.testing.assert_allclose(r.bpd, direct, rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.log_det_jacobian, D * math.log(2 / 17), rtol=1e-12)
    assert r.num_dims == D
    # Negative control: the 8-bit Jacobian on the same densities is off by log2(256/17) bits.
    wrong = -(r.log_prob + D * math.log(2 / 256)) / (D * math.log(2))
    assert float(jnp.min(jnp.abs(wrong - direct))) > 3.9


def test_levels_uniform_dequantisation_matches_direct_computation(x64):
    """Uniform noise reproduced from the documented keys: repeat r of sample i uses
    fold_in(fold_in(k1, i), r) with k1 the first half of split(key); non-default [low, high]."""
    levels, low, high, repeats = 17, 0.0, 3.0, 3
    sde, score, dist, kwargs = _model(jnp.float64, levels=levels, low=low, high=high)
    k = _digit_like(jr.key(1), 4, levels)
    key = jr.key(5)
    r = ss.bits_per_dim(
        sde, score, k, key=key, levels=levels, low=low, high=high, num_repeats=repeats, **kwargs
    )
    k1 = jr.split(key)[0]
    direct = np.zeros((k.shape[0], repeats))
    for i in range(k.shape[0]):
        for rep in range(repeats):
            u = jr.uniform(jr.fold_in(jr.fold_in(k1, i), rep), (D,), jnp.float64)
            direct[i, rep] = _direct_bpd(dist, sde, k[i : i + 1], u[None], levels, low, high)[0]
    np.testing.assert_allclose(r.bpd, direct.mean(axis=1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.stderr, direct.std(axis=1, ddof=1) / math.sqrt(repeats), atol=1e-6)


def test_levels_17_cross_entropy_of_discretised_gaussian(x64):
    r"""1-D data k ~ P(k) = mass of N(m, s^2) (in level units) on [k, k+1), truncated to 17 levels.

    Uniform dequantisation bounds the cross-entropy above: E_P E_u[-log2 p_w] >= H(P) (the
    density p_w is the untruncated Gaussian, so it also loses the tails' mass), and for a
    Gaussian E_u[-ln p_w(k + u)] = -ln p_w(k + 1/2) + 1/(24 s^2) exactly."""
    from jax.scipy.stats import norm

    levels, m_w, s_w = 17, 8.3, 2.5
    scale = 2 / levels
    dist = ss.analytic.Gaussian(jnp.array([-1 + scale * m_w]), jnp.array([[(scale * s_w) ** 2]]))
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(dist, sde)
    kwargs = dict(
        divergence=ss.ExactDivergence(),
        t_eps=1e-8,
        rtol=1e-9,
        atol=1e-9,
        prior_log_prob=dist.marginal(sde, sde.T).log_prob,
    )
    k = jnp.arange(levels, dtype=jnp.float64)[:, None]
    p = jnp.diff(norm.cdf(jnp.arange(levels + 1, dtype=jnp.float64), m_w, s_w))
    p = p / jnp.sum(p)
    entropy = float(-jnp.sum(p * jnp.log2(p)))
    none = ss.bits_per_dim(sde, score, k, levels=levels, dequantization="none", **kwargs)
    unif = ss.bits_per_dim(sde, score, k, key=jr.key(0), levels=levels, num_repeats=32, **kwargs)
    gap = 1 / (24 * s_w**2) / math.log(2)
    assert bool(jnp.all(jnp.abs(unif.bpd - none.bpd - gap) < 5 * unif.stderr + 1e-6))
    # The exact expectation over u (the Monte Carlo repeats are checked against it above).
    bound = float(jnp.sum(p * (none.bpd + gap)))
    assert bound >= entropy
    # Not vacuous: within 0.05 bits of H(P) here, and well below the uniform code log2(17).
    assert bound < entropy + 0.05
    assert bound < math.log2(levels) - 0.5


def test_antithetic_dequantisation_pairs_u_with_one_minus_u(x64):
    """Repeats 2j and 2j + 1 of sample i use u and 1 - u, u from fold_in(fold_in(k1, i), j);
    `stderr` is the spread of the pairs' means."""
    levels, repeats = 17, 4
    sde, score, dist, kwargs = _model(jnp.float64, levels=levels)
    k = _digit_like(jr.key(1), 3, levels)
    key = jr.key(5)
    r = ss.bits_per_dim(sde, score, k, key=key, levels=levels, num_repeats=repeats,
                        dequantization="antithetic", **kwargs)  # fmt: skip
    k1 = jr.split(key)[0]
    pairs = np.zeros((k.shape[0], repeats // 2))
    for i in range(k.shape[0]):
        for j in range(repeats // 2):
            u = jr.uniform(jr.fold_in(jr.fold_in(k1, i), j), (D,), jnp.float64)
            both = [_direct_bpd(dist, sde, k[i : i + 1], v[None], levels)[0] for v in (u, 1 - u)]
            pairs[i, j] = np.mean(both)
    np.testing.assert_allclose(r.bpd, pairs.mean(axis=1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(r.stderr, pairs.std(axis=1, ddof=1) / math.sqrt(2), atol=1e-6)
    for bad in (1, 3):
        with pytest.raises(ValueError, match="even"):
            ss.bits_per_dim(sde, score, k, key=key, levels=levels, num_repeats=bad,
                            dequantization="antithetic", **kwargs)  # fmt: skip


def test_antithetic_dequantisation_is_unbiased_with_less_spread(x64):
    """On a 1-D Gaussian, E_u[-ln p_w(k + u)] = -ln p_w(k + 1/2) + 1/(24 s^2): the antithetic
    mean of 8 draws hits it within 5 standard errors, with a standard error under a third of
    that of 8 independent draws (negative control: the independent draws' is not)."""
    levels, m_w, s_w = 17, 8.3, 2.5
    scale = 2 / levels
    dist = ss.analytic.Gaussian(jnp.array([-1 + scale * m_w]), jnp.array([[(scale * s_w) ** 2]]))
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(dist, sde)
    kwargs = dict(divergence=ss.ExactDivergence(), t_eps=1e-8, rtol=1e-9, atol=1e-9,
                  prior_log_prob=dist.marginal(sde, sde.T).log_prob, levels=levels)  # fmt: skip
    k = jnp.arange(2, 15, dtype=jnp.float64)[:, None]
    none = ss.bits_per_dim(sde, score, k, dequantization="none", **kwargs)
    gap = 1 / (24 * s_w**2) / math.log(2)
    spread = {}
    for how in ("uniform", "antithetic"):
        r = ss.bits_per_dim(sde, score, k, key=jr.key(0), num_repeats=8, dequantization=how,
                            **kwargs)  # fmt: skip
        assert bool(jnp.all(jnp.abs(r.bpd - none.bpd - gap) < 5 * r.stderr + 1e-6)), how
        spread[how] = float(jnp.mean(r.stderr))
    assert spread["antithetic"] < spread["uniform"] / 3


def test_levels_256_equals_bits_8_exactly():
    sde, score, _, kwargs = _model(jnp.float32, mean_level=120.0, std_level=30.0, levels=256)
    kwargs = dict(kwargs, divergence=ss.Hutchinson(), rtol=1e-5, atol=1e-5, t_eps=1e-3)
    k = jr.randint(jr.key(2), (3, D), 0, 256)
    key = jr.key(3)
    by_levels = ss.bits_per_dim(sde, score, k, key=key, levels=256, **kwargs)
    by_bits = ss.bits_per_dim(sde, score, k, key=key, bits=8, **kwargs)
    both = ss.bits_per_dim(sde, score, k, key=key, bits=8, levels=256, **kwargs)
    default = ss.bits_per_dim(sde, score, k, key=key, **kwargs)
    for other in (by_bits, both, default):
        np.testing.assert_array_equal(by_levels.bpd, other.bpd)
        np.testing.assert_array_equal(by_levels.log_det_jacobian, other.log_det_jacobian)
    # A different convention on the same integers does change the figure.
    by_9 = ss.bits_per_dim(sde, score, k, key=key, bits=9, **kwargs)
    assert not np.allclose(by_levels.bpd, by_9.bpd)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(levels=1), "levels must be an int >= 2; got levels=1"),
        (dict(levels=2.5), "levels must be an int >= 2; got levels=2.5"),
        (dict(levels=True), "levels must be an int"),
        (dict(levels=17.0), "levels must be an int"),
        (dict(bits=0), "bits must be an int in"),
        (dict(bits=3, levels=9), "bits=3 means levels=8, but levels=9"),
    ],
)
def test_bad_levels_raise(kwargs, match):
    sde, score, _, lk = _model(jnp.float32)
    lk = dict(lk, t_eps=1e-3)
    with pytest.raises(ValueError, match=match):
        ss.bits_per_dim(sde, score, jnp.zeros((2, D)), key=jr.key(0), **kwargs, **lk)


@pytest.mark.parametrize(
    "value, match",
    [
        (17.0, r"k must hold integers in \[0, 16\] for levels=17; got entries in \[0, 17\]"),
        (-1.0, r"k must hold integers in \[0, 16\] for levels=17; got entries in \[-1, 0\]"),
        (2.5, "k must hold integers; got non-integer"),
        (float("nan"), "k must hold integers; got non-integer or non-finite"),
    ],
)
def test_k_out_of_range_raises(value, match):
    sde, score, _, lk = _model(jnp.float32)
    lk = dict(lk, t_eps=1e-3)
    k = jnp.zeros((2, D)).at[0, 1].set(value)
    with pytest.raises(ValueError, match=match):
        ss.bits_per_dim(sde, score, k, key=jr.key(0), levels=17, **lk)
    # Negative control: the largest valid level passes the check.
    ok = ss.bits_per_dim(sde, score, jnp.full((1, D), 16.0), levels=17, dequantization="none", **lk)
    assert bool(jnp.all(jnp.isfinite(ok.bpd)))
