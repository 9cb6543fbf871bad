"""`nats_tol=`: step-size control on delta's error in nats (x excluded from the norm).

Oracle as in test_likelihood.py: exact score, exact divergence, analytic p_T, so the error
against the analytic ln p_{t_eps}(x) is the solver's.
"""

import warnings

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SCORE_CALLS, CountingScore

import scoresde as ss
from scoresde._likelihood.divergence import ExactDivergence, Hutchinson
from scoresde._likelihood.flow import log_likelihood


def _problem():
    rng = np.random.default_rng(5)
    dim, k = 4, 2
    covs = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        covs.append((q * rng.uniform(0.05, 1.0, size=dim)) @ q.T)
    mix = ss.analytic.GaussianMixture(
        jnp.asarray([0.4, 0.6]), jnp.asarray(2 * rng.normal(size=(k, dim))), jnp.asarray(covs)
    )
    sde = ss.VPSDE()
    return sde, mix, ss.analytic.marginal_score(mix, sde), mix.sample(jr.key(2), 8)


def _errors(nats_tol, **kw):
    sde, mix, score, x = _problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = log_likelihood(
            sde,
            score,
            x,
            divergence=ExactDivergence(),
            prior_log_prob=mix.marginal(sde, sde.T).log_prob,
            nats_tol=nats_tol,
            **kw,
        )
    exact = jax.vmap(mix.marginal(sde, 1e-5).log_prob)(x)
    return np.abs(np.asarray(r.log_prob - exact)), np.asarray(r.nfe)


def test_nats_tol_error_shrinks_with_tolerance(x64):
    """Tighter nats_tol: smaller error against the analytic density, more NFE; the loosest one
    (a negative control) is visibly inaccurate, so the bound below is not vacuous."""
    loose, nfe_loose = _errors(1e-1)
    tight, nfe_tight = _errors(1e-5)
    assert np.sqrt(np.mean(tight**2)) < 1e-3
    assert np.sqrt(np.mean(loose**2)) > 10 * np.sqrt(np.mean(tight**2))
    assert nfe_tight.mean() > nfe_loose.mean()


@pytest.mark.slow
def test_nats_tol_ignores_rtol_atol(x64):
    a, nfe_a = _errors(1e-3, rtol=1e-2, atol=1e-2)
    b, nfe_b = _errors(1e-3, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert np.array_equal(nfe_a, nfe_b)


@pytest.mark.slow
def test_nats_tol_lanes_and_nfe_count():
    """Lanes drive the same controller; every score call is counted (one lane, no idle work)."""
    sde, mix, score, x = _problem()
    kw = dict(key=jr.key(0), divergence=Hutchinson(), t_eps=1e-3, nats_tol=1e-3)
    ref = log_likelihood(sde, score, x, **kw)
    counting = CountingScore(score)
    SCORE_CALLS.clear()
    res = log_likelihood(sde, counting, x[:3], lanes=1, **kw)
    jax.effects_barrier()
    assert int(jnp.sum(res.nfe)) == len(SCORE_CALLS) > 0
    np.testing.assert_allclose(res.log_prob, ref.log_prob[:3], rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_nats_tol_gradient(x64):
    sde, mix, score, x = _problem()

    def loss(shift):
        r = log_likelihood(
            sde, score, x[:2] + shift[None], divergence=ExactDivergence(), t_eps=1e-3, nats_tol=1e-6
        )
        return jnp.sum(r.log_prob)

    g = jax.grad(loss)(jnp.zeros(4))
    expected = jnp.sum(jax.vmap(jax.grad(mix.marginal(sde, 1e-3).log_prob))(x[:2]), axis=0)
    np.testing.assert_allclose(g, expected, rtol=0, atol=0.05 * float(jnp.max(jnp.abs(expected))))


def test_nats_tol_bad_values():
    sde, mix, score, x = _problem()
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="nats_tol"):
            log_likelihood(sde, score, x, divergence=ExactDivergence(), nats_tol=bad)
    with pytest.raises(ValueError, match="nats_tol"):
        log_likelihood(
            sde,
            score,
            x,
            divergence=ExactDivergence(),
            nats_tol=1e-3,
            stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-3),
        )
