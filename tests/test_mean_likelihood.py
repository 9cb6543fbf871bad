"""`estimate_mean_log_likelihood`: the interval covers E[ln p_{t_eps}(x)] at its nominal rate.

Oracle: a Gaussian, exact score, analytic p_T as the prior; the target is minus the entropy of
the marginal at t_eps (analytic). Data are drawn from that marginal, so every source of error
(data, probes, solver) is in play.
"""

import warnings

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss
from scoresde._likelihood.divergence import ExactDivergence, Hutchinson

T_EPS = 1e-3


def _gaussian():
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    cov = (q * np.array([0.05, 0.4, 1.5])) @ q.T
    return ss.analytic.Gaussian(jnp.asarray(rng.normal(size=3)), jnp.asarray(cov))


def _estimate(key, n=64, steps=None, rtol=1e-4, divergence=Hutchinson(2), **kw):
    """Cheap level: Dopri5 at `rtol`, or `steps` fixed Heun steps (a visibly biased solve)."""
    if steps is not None:
        kw.update(
            solver=dfx.Heun(),
            stepsize_controller=dfx.ConstantStepSize(),
            dt0=(1.0 - T_EPS) / steps,
        )
    sde, dist = ss.VPSDE(), _gaussian()
    marginal = dist.marginal(sde, T_EPS)
    k_data, k_est = jr.split(key)
    x = marginal.sample(k_data, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ss.estimate_mean_log_likelihood(
            sde,
            ss.analytic.marginal_score(dist, sde),
            x,
            key=k_est,
            t_eps=T_EPS,
            rtol=rtol,
            atol=rtol,
            divergence=divergence,
            prior_log_prob=dist.marginal(sde, sde.T).log_prob,
            **kw,
        )
    return res, -float(marginal.entropy())


def _coverage(keys, **kw):
    hits, naive_hits = 0, 0
    for k in keys:
        res, target = _estimate(jr.key(k), **kw)
        hits += float(res.low) <= target <= float(res.high)
        # Negative control: the cheap mean with the data/probe error bar, no bias correction.
        half = 1.96 * float(jnp.sqrt(res.stderr_data**2 + jnp.nan_to_num(res.stderr_probes) ** 2))
        naive_hits += abs(float(res.cheap_mean) - target) <= half
    return hits, naive_hits


def test_mean_log_likelihood_parts_and_bias(x64):
    """Four Heun steps are biased by about 0.4 nats; the correction finds it, and its part of
    the error bar shrinks when the cheap solves are tightened (64 steps)."""
    loose, target = _estimate(jr.key(0), steps=4)
    tight, _ = _estimate(jr.key(0), steps=64)
    assert float(loose.low) <= target <= float(loose.high)
    assert float(loose.bias_correction) > 2 * float(loose.stderr_bias) > 0
    assert float(tight.stderr_bias) < 0.1 * float(loose.stderr_bias)
    assert abs(float(tight.bias_correction)) < 0.1 * abs(float(loose.bias_correction))
    for r in (loose, tight):
        assert float(r.stderr_probes) > 0 and float(r.stderr_data) > 0
        assert r.tight_indices.shape == (16,) and r.log_prob.shape == (64,)
        assert bool(jnp.all(r.nfe > 0)) and bool(jnp.all(r.tight_nfe > 0))
        np.testing.assert_allclose(r.high - r.mean, r.mean - r.low)
        np.testing.assert_allclose(r.high - r.mean, 1.959964 * r.stderr, rtol=1e-5)
    # Same probes in both levels: with an accurate cheap level the two solves agree per sample.
    exact, _ = _estimate(jr.key(0), rtol=1e-9)
    np.testing.assert_allclose(exact.tight_log_prob, exact.log_prob[exact.tight_indices], atol=1e-6)


def test_mean_log_likelihood_coverage_short(x64):
    hits, naive = _coverage(range(8), steps=3)
    assert hits >= 6  # P(X <= 5) = 0.6% for X ~ Bin(8, 0.95)
    assert naive <= 3  # negative control: the uncorrected interval misses


@pytest.mark.slow
def test_mean_log_likelihood_coverage_long(x64):
    """95 % over 40 keys: X ~ Bin(40, 0.95) has mean 38, sd 1.4; P(X <= 34) = 1.4 %. Measured:
    39 of 40, and 0 of 40 for the uncorrected interval."""
    hits, naive = _coverage(range(100, 140), steps=3)
    assert hits >= 35
    assert naive <= 10


def test_mean_log_likelihood_exact_divergence_and_bpd(x64):
    res, target = _estimate(jr.key(3), divergence=ExactDivergence(), rtol=1e-4)
    assert float(res.stderr_probes) == 0.0
    bpd, err = res.bits_per_dim(3)
    np.testing.assert_allclose(bpd, -res.mean / (3 * np.log(2)))
    np.testing.assert_allclose(err, res.stderr / (3 * np.log(2)))
    # One probe: the per-sample noise is measured by a second solve of the pilot block.
    one, _ = _estimate(jr.key(3), divergence=Hutchinson(), rtol=1e-4)
    assert float(one.stderr_probes) > 0


def test_mean_log_likelihood_bad_arguments():
    sde, dist = ss.VPSDE(), _gaussian()
    score = ss.analytic.marginal_score(dist, sde)
    x = dist.sample(jr.key(0), 8).astype(jnp.float32)
    call = lambda **kw: ss.estimate_mean_log_likelihood(  # noqa: E731
        sde, score, x, divergence=ExactDivergence(), t_eps=1e-3, **kw
    )
    with pytest.raises(ValueError, match="num_tight"):
        call(key=jr.key(0), num_tight=1)
    with pytest.raises(ValueError, match="num_tight"):
        call(key=jr.key(0), num_tight=9)
    with pytest.raises(ValueError, match="level"):
        call(key=jr.key(0), level=1.5)
    with pytest.raises(TypeError, match="tight"):
        call(key=jr.key(0), tight="dopri8")
    with pytest.raises((TypeError, ValueError), match="key"):
        call(key=None)
    jax.effects_barrier()


# --- planned estimates for a requested half-width -------------------------------------------


def _planned(key, x, half_width, *, population=False, **kw):
    sde, dist = ss.VPSDE(), _gaussian()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ss.estimate_mean_log_likelihood(
            sde,
            ss.analytic.marginal_score(dist, sde),
            x,
            key=key,
            t_eps=T_EPS,
            prior_log_prob=dist.marginal(sde, sde.T).log_prob,
            half_width=half_width,
            population=population,
            **kw,
        )


def test_planned_test_set_mean_covers_its_own_mean(x64):
    """A data set's own mean (population=False) to +-0.01 nats with the exact divergence: the
    interval covers (1/n) sum ln p(x_i) for at least 5 of 6 data sets (P(X <= 4) = 3.3 % for
    X ~ Bin(6, 0.95)) and comes out near the requested width. Negative control: the same
    intervals are far narrower than the data's spread (sd of ln p about 1.2, so about 0.1 for
    n = 128) and cover the POPULATION mean at most twice."""
    dist, sde = _gaussian(), ss.VPSDE()
    marginal = dist.marginal(sde, T_EPS)
    hits = population_hits = 0
    for seed in range(6):
        x = marginal.sample(jr.key(seed), 128)
        res = _planned(jr.key(seed + 50), x, 0.01, divergence=ExactDivergence(),
                       tolerances=(1e-1, 1e-2))  # fmt: skip
        own = float(jnp.mean(jax.vmap(marginal.log_prob)(x)))
        hits += float(res.low) <= own <= float(res.high)
        population_hits += float(res.low) <= -float(marginal.entropy()) <= float(res.high)
        assert float(res.high - res.mean) < 1.5 * 0.01
        assert float(res.stderr_data) == 0.0 and float(res.stderr_probes) == 0.0
        assert res.cheap_tol in (1e-1, 1e-2) and not res.population
    assert hits >= 5
    assert population_hits <= 2


def test_planned_bits_per_dim_covers_the_bin_averaged_truth(x64):
    """Quantised 2-D Gaussian data at 17 levels, one Rademacher probe, uniform dequantisation:
    the planned test-set interval covers the analytic mean bits/dim, -(E_u ln p(x_u) + D ln
    scale) / (D ln 2) with E_u ln p(x_u) = ln p(c) - tr(Sigma^-1) scale^2 / 24 for bin centres
    c, for at least 5 of 6 keys. Negative control: without its measured noise part (probes
    and dequantisation) the interval covers at most twice."""
    sde = ss.VPSDE()
    dist = ss.analytic.Gaussian(jnp.array([0.1, -0.2]), jnp.array([[0.09, 0.03], [0.03, 0.05]]))
    marginal = dist.marginal(sde, T_EPS)
    levels, scale = 17, 2.0 / 17
    quantise = lambda z: jnp.clip(jnp.floor((z + 1) / scale), 0, levels - 1)  # noqa: E731

    def analytic_bpd(k):
        c = -1 + scale * (k + 0.5)
        inv_trace = jnp.trace(jnp.linalg.inv(marginal.cov))
        log_p = jax.vmap(marginal.log_prob)(c) - inv_trace * scale**2 / 24
        return -(log_p + 2 * np.log(scale)) / (2 * np.log(2))

    hits = noiseless_hits = 0
    for seed in range(6):
        k = quantise(marginal.sample(jr.key(seed), 96))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ss.estimate_bits_per_dim(
                sde, ss.analytic.marginal_score(dist, sde), k, key=jr.key(seed + 7),
                levels=levels, t_eps=T_EPS, prior_log_prob=dist.marginal(sde, sde.T).log_prob,
                half_width=0.12, population=False, tolerances=(1e-1, 1e-2),
            )  # fmt: skip
        own = float(jnp.mean(analytic_bpd(k)))
        hits += float(res.low) <= own <= float(res.high)
        noiseless_hits += abs(float(res.bpd) - own) <= 1.96 * float(res.stderr_bias)
        assert float(res.stderr_probes) > 0 and float(res.stderr_data) == 0.0
        np.testing.assert_allclose(float(res.high - res.bpd), float(res.bpd - res.low))
        assert float(res.high - res.bpd) < 1.5 * 0.12
    assert hits >= 5
    assert noiseless_hits <= 2


def test_plan_trades_subset_size_for_width(x64):
    """One cheap level (Dopri5 at rtol 0.3, visibly biased): a narrower interval needs a larger
    tight subset, with a smaller bias error; `total_nfe` counts every evaluation (here the cheap
    and tight solves that are kept: one candidate, no noise solves)."""
    dist, sde = _gaussian(), ss.VPSDE()
    x = dist.marginal(sde, T_EPS).sample(jr.key(0), 128)
    wide = _planned(jr.key(1), x, 0.05, divergence=ExactDivergence(), tolerances=(0.3,),
                    num_pilot=8)  # fmt: skip
    narrow = _planned(jr.key(1), x, 0.002, divergence=ExactDivergence(), tolerances=(0.3,),
                      num_pilot=8)  # fmt: skip
    assert wide.tight_indices.shape[0] < narrow.tight_indices.shape[0]
    assert float(narrow.stderr_bias) < float(wide.stderr_bias)
    for res in (wide, narrow):
        spent = int(jnp.sum(res.nfe)) + int(jnp.sum(res.tight_nfe))
        assert int(res.total_nfe) == spent


def test_plan_refusals(x64):
    dist, sde = _gaussian(), ss.VPSDE()
    x = dist.marginal(sde, T_EPS).sample(jr.key(0), 64)
    with pytest.raises(ValueError, match="out of reach.*noise"):
        _planned(jr.key(1), x, 1e-3, divergence=Hutchinson())
    with pytest.raises(ValueError, match="out of reach.*spread"):
        _planned(jr.key(1), x, 1e-3, divergence=ExactDivergence(), population=True)
    with pytest.raises(ValueError, match="do not also pass rtol, num_tight"):
        _planned(jr.key(1), x, 0.1, divergence=ExactDivergence(), rtol=1e-3, num_tight=4)
    with pytest.raises(ValueError, match="num_pilot"):
        _planned(jr.key(1), x, 0.1, divergence=ExactDivergence(), num_pilot=65)
    with pytest.raises(ValueError, match="tolerances"):
        _planned(jr.key(1), x, 0.1, divergence=ExactDivergence(), tolerances=())
    with pytest.raises(ValueError, match="half_width"):
        _planned(jr.key(1), x, -0.1, divergence=ExactDivergence())
