"""Tests of log_likelihood's lanes (the refilled work queue): per-sample results equal the vmapped
solve's, and no score evaluation is wasted."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SCORE_CALLS, CountingScore, random_gaussian, random_spd

import scoresde as ss
from scoresde._likelihood.divergence import EigenHutchinson, ExactDivergence, Hutchinson
from scoresde._likelihood.flow import log_likelihood


def _mixture(seed, dim, k, dtype):
    rng = np.random.default_rng(seed)
    covs = np.stack([random_spd(rng, dim, 0.05, 1.0) for _ in range(k)])
    return ss.analytic.GaussianMixture(
        jnp.asarray(rng.dirichlet(np.full(k, 2.0)), dtype),
        jnp.asarray(2 * rng.normal(size=(k, dim)), dtype),
        jnp.asarray(covs, dtype),
    )


@pytest.fixture
def small():
    sde = ss.VPSDE()
    dist = random_gaussian(0, 2, jnp.float32)
    return sde, ss.analytic.marginal_score(dist, sde), dist.sample(jr.key(0), 3)


def _lanes_problem(dtype=jnp.float64):
    sde = ss.VPSDE()
    dist = _mixture(3, 3, 3, dtype)
    return sde, ss.analytic.marginal_score(dist, sde), dist.sample(jr.key(4), 9)


def _check_lanes_match_vmapped(divergence, configs):
    sde, score, x = _lanes_problem()
    kw = dict(key=jr.key(1), divergence=divergence, t_eps=1e-3, rtol=1e-6, atol=1e-6)
    ref = log_likelihood(sde, score, x, **kw)
    for lanes, batch in configs:
        res = log_likelihood(sde, score, x[:batch], lanes=lanes, **kw)
        np.testing.assert_allclose(res.log_prob, ref.log_prob[:batch], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(res.z, ref.z[:batch], rtol=1e-9, atol=1e-9)
        assert jnp.array_equal(res.nfe, ref.nfe[:batch])
        assert jnp.array_equal(res.num_steps, ref.num_steps[:batch])
        assert bool(jnp.all(res.successful)) and bool(jnp.all(res.status == 0))
        if divergence.num_estimates > 1:
            np.testing.assert_allclose(res.stderr, ref.stderr[:batch], rtol=1e-7, atol=1e-9)


def test_lanes_match_vmapped_per_sample(x64):
    """Same per-sample steps, NFE and log-density as the vmapped solve, whatever lanes/batch."""
    _check_lanes_match_vmapped(Hutchinson(), [(4, 9)])


@pytest.mark.slow
@pytest.mark.parametrize("divergence", [Hutchinson(3), EigenHutchinson(2), ExactDivergence()])
def test_lanes_match_vmapped_per_sample_long(x64, divergence):
    _check_lanes_match_vmapped(divergence, [(4, 9), (1, 3), (16, 9), (2, 5)])


@pytest.mark.parametrize(
    "solver",
    [dfx.Dopri5()] + [pytest.param(s, marks=pytest.mark.slow) for s in (dfx.Tsit5(), dfx.Heun())],
)
def test_lanes_nfe_counts_every_score_call(solver):
    """With one lane no evaluation is wasted on idle lanes: the calls made are exactly sum(nfe)."""
    sde, score, x = _lanes_problem(jnp.float32)
    counting = CountingScore(score)
    SCORE_CALLS.clear()
    kw = dict(key=jr.key(0), t_eps=1e-3, rtol=1e-4, atol=1e-4, solver=solver, lanes=1)
    res = log_likelihood(sde, counting, x[:3], **kw)
    jax.effects_barrier()
    assert int(jnp.sum(res.nfe)) == len(SCORE_CALLS) > 0
    assert bool(jnp.all(res.num_steps > 1))


def test_lanes_failed_solve_raises_or_gives_nan(small):
    sde, score, x = small
    kwargs = dict(divergence=ExactDivergence(), max_steps=2, t_eps=1e-3, lanes=2)
    with pytest.raises(RuntimeError, match="failed"):
        log_likelihood(sde, score, x, **kwargs)
    result = log_likelihood(sde, score, x, throw=False, **kwargs)
    assert bool(jnp.all(jnp.isnan(result.log_prob)))
    assert not bool(jnp.any(result.successful))
    assert bool(jnp.all(result.status == int(dfx.RESULTS.max_steps_reached._value)))
    assert bool(jnp.all(result.num_steps == 2))


def test_lanes_bad_values(small):
    sde, score, x = small
    for lanes in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="lanes"):
            log_likelihood(sde, score, x, divergence=ExactDivergence(), lanes=lanes)
