"""The shared pieces are written once: sampling, the likelihood, encoding and the exponential
integrators run the very same probability-flow drift and Tweedie denoiser."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SDE_IDS, SDES, random_mixture

import scoresde as ss
from scoresde import _score_calls as _fields, _terms
from scoresde._likelihood import vector_fields as _likelihood
from scoresde._sampling import predictor_corrector as _pc, sample as _sample
from scoresde._solver.base import PFModel


def _inputs(sde, seed):
    rng = np.random.default_rng(seed)
    t = jnp.asarray(rng.uniform(0.05, 0.95) * sde.T, jnp.float32)
    x = jnp.asarray(rng.normal(size=3), jnp.float32)
    return t, x


def test_one_pf_drift_everywhere():
    assert _terms.pf_drift is _fields.pf_drift
    assert _likelihood.pf_drift is _fields.pf_drift


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_sampling_and_likelihood_vector_fields_agree_bitwise(sde):
    score = ss.analytic.marginal_score(random_mixture(0, 3, 2), sde)
    for seed in range(3):
        t, x = _inputs(sde, seed)
        drift = _fields.pf_drift(sde, score, t, x)
        # sample_ode's term runs in s = -t (origin 0): dx/ds = -F(t, x).
        sampling = ss.probability_flow_term(sde, score, origin=0.0).vf(-t, x, None)
        flow = _likelihood.Flow(sde, score, ss.TimeVariable(), 1)(t, x, None)
        augmented = _likelihood.AugmentedFlow(
            sde, score, ss.ExactDivergence(), ss.TimeVariable(), None
        )(t, (x, jnp.zeros((1,), x.dtype)), None)[0]
        np.testing.assert_array_equal(np.asarray(-sampling), np.asarray(drift))
        np.testing.assert_array_equal(np.asarray(flow), np.asarray(drift))
        np.testing.assert_array_equal(np.asarray(augmented), np.asarray(drift))


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_one_tweedie_denoiser(sde):
    assert _sample.tweedie_batch is _fields.tweedie_batch is _pc.tweedie_batch
    score = ss.analytic.marginal_score(random_mixture(1, 3, 2), sde)
    t, x = _inputs(sde, 7)
    alpha, sigma = sde.marginal(t)
    expected = (x + sigma**2 * score(t, x)) / alpha
    np.testing.assert_allclose(_fields.tweedie(sde, score, t, x), expected, rtol=1e-6)
    np.testing.assert_array_equal(
        np.asarray(PFModel(sde, score).data(t, x)), np.asarray(_fields.tweedie(sde, score, t, x))
    )


def test_denoised_samples_use_tweedie():
    """`sample_ode(denoise=True)` is the undenoised sample plus one Tweedie step (to rounding:
    the Tweedie step runs batched there)."""
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(random_mixture(2, 2, 2), sde)
    kw = dict(key=jr.key(0), shape=(8, 2), solver=ss.DPMSolverPP2M(), steps=6)
    raw = ss.sample_ode(sde, score, **kw)
    den = ss.sample_ode(sde, score, denoise=True, **kw)
    t_eps = jnp.asarray(sde.default_t_eps, jnp.float32)
    expected = jax.vmap(lambda xi: _fields.tweedie(sde, score, t_eps, xi))(raw.x)
    np.testing.assert_allclose(den.x, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(den.nfe), np.asarray(raw.nfe) + 1)
