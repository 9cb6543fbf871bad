"""`schedule=SharedSteps()`: one adaptive step sequence for the whole batch (scipy's semantics).

Oracle as in test_likelihood.py: exact score, exact divergence, the analytic p_T as the prior,
so the error against the analytic ln p_{t_eps}(x) is the solver's. Stochastic estimators are
checked against a tight per-sample Dopri8 solve with the same probes (same key).
"""

import warnings

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import SCORE_CALLS, SDE_IDS, SDES, CountingScore, random_gaussian, random_mixture
from hypothesis import given, settings, strategies as st

import scoresde as ss
from scoresde._likelihood.flow import bits_per_dim, log_likelihood

SHARED = ss.SharedSteps()
# The stated accuracy of the shared mode at rtol = atol = 1e-8 in float64 (as the per-sample
# mode's in test_likelihood.py): |log_prob - exact| <= 1e-4 nats for every sample.
TOL_NATS = 1e-4


def _t_eps(sde):
    return 2e-3 if isinstance(sde, ss.EDMSDE) else 1e-5


def _run(dist, sde, x, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = log_likelihood(
            sde,
            ss.analytic.marginal_score(dist, sde),
            x,
            t_eps=_t_eps(sde),
            prior_log_prob=dist.marginal(sde, sde.T).log_prob,
            **kwargs,
        )
    return result, jax.vmap(dist.marginal(sde, _t_eps(sde)).log_prob)(x)


def _mix(dim=2):
    return random_mixture(4, dim, 2, jnp.float64)


@settings(deadline=None, max_examples=3)
@given(seed=st.integers(0, 10_000))
def test_shared_matches_analytic_vp_mixtures(x64, seed):
    """Random 2-D two-component mixtures (one compile for all examples): within the stated
    tolerance at rtol = 1e-8; the same solve at rtol = 1e-2 (a negative control) is outside it,
    so the bound is not vacuous."""
    sde = ss.VPSDE()
    dist = random_mixture(seed, 2, 2, jnp.float64)
    x = dist.sample(jr.key(seed), 4)
    kw = dict(divergence=ss.ExactDivergence(), schedule=SHARED)
    tight, expected = _run(dist, sde, x, rtol=1e-8, atol=1e-8, **kw)
    loose, _ = _run(dist, sde, x, rtol=1e-2, atol=1e-2, **kw)
    np.testing.assert_allclose(tight.log_prob, expected, rtol=0, atol=TOL_NATS)
    assert float(jnp.max(jnp.abs(loose.log_prob - expected))) > TOL_NATS


@pytest.mark.slow
@settings(deadline=None, max_examples=8)
@given(
    dim=st.integers(1, 3),
    sde_index=st.integers(0, 3),
    seed=st.integers(0, 1000),
    mixture=st.booleans(),
)
def test_shared_matches_analytic_float64_long(x64, dim, sde_index, seed, mixture):
    """Gaussians and mixtures, 1 to 3 dimensions, every SDE."""
    sde = SDES[sde_index]
    dist = (
        random_mixture(seed, dim, 2, jnp.float64)
        if mixture
        else random_gaussian(seed, dim, jnp.float64)
    )
    x = dist.sample(jr.key(seed), 4)
    result, expected = _run(
        dist, sde, x, divergence=ss.ExactDivergence(), schedule=SHARED, rtol=1e-8, atol=1e-8
    )
    np.testing.assert_allclose(result.log_prob, expected, rtol=0, atol=TOL_NATS)


@pytest.mark.slow
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_shared_every_sde_and_loose_control(x64, sde):
    """Each SDE within the stated tolerance, and outside it at rtol = 1e-2 (negative control)."""
    dist = _mix(2)
    x = dist.sample(jr.key(1), 4)
    kw = dict(divergence=ss.ExactDivergence(), schedule=SHARED)
    tight, expected = _run(dist, sde, x, rtol=1e-8, atol=1e-8, **kw)
    loose, _ = _run(dist, sde, x, rtol=1e-2, atol=1e-2, **kw)
    np.testing.assert_allclose(tight.log_prob, expected, rtol=0, atol=TOL_NATS)
    assert float(jnp.max(jnp.abs(loose.log_prob - expected))) > TOL_NATS


def test_nfe_shared_and_exact():
    """Every sample reports the batch's NFE, which equals the score calls made (one wide call on
    the whole batch each: a vmapped `jax.debug.callback` runs once per batched call) and
    Dopri5's count: one first evaluation plus 6 per attempted step."""
    dist = random_mixture(4, 2, 2)
    sde = ss.VPSDE()
    score = CountingScore(ss.analytic.marginal_score(dist, sde))
    x = dist.sample(jr.key(0), 3)
    SCORE_CALLS.clear()
    res = log_likelihood(
        sde, score, x, key=jr.key(0), t_eps=1e-3, rtol=1e-4, atol=1e-4, schedule=SHARED
    )
    jax.effects_barrier()
    nfe = np.asarray(res.nfe)
    assert np.all(nfe == nfe[0]) and np.all(np.asarray(res.num_steps) == res.num_steps[0])
    assert nfe[0] == 1 + 6 * int(res.num_steps[0])
    assert int(nfe[0]) == len(SCORE_CALLS) > 0


@pytest.mark.parametrize(
    "divergence",
    [
        ss.Hutchinson(),
        pytest.param(ss.Hutchinson(4), marks=pytest.mark.slow),
        pytest.param(ss.EigenHutchinson(1, orthogonal=False), marks=pytest.mark.slow),
        pytest.param(ss.ExactDivergence(), marks=pytest.mark.slow),
    ],
    ids=["hutchinson", "hutchinson4", "eigen1", "exact"],
)
def test_fixed_probes_agree_with_tight_dopri8(x64, divergence):
    """Same key = same probes = the same result, and the shared solve at rtol = 1e-8 agrees with a per-sample Dopri8
    solve at 1e-10 to its solver error (1e-4 nats); a different key (other probes, a negative
    control for stochastic estimators) is far off."""
    dist = _mix()
    sde = ss.VPSDE()
    x = dist.sample(jr.key(2), 4)
    key = jr.key(7)
    ref, _ = _run(
        dist, sde, x, key=key, divergence=divergence, solver=dfx.Dopri8(), rtol=1e-10, atol=1e-10
    )
    ours, _ = _run(
        dist, sde, x, key=key, divergence=divergence, schedule=SHARED, rtol=1e-8, atol=1e-8
    )
    np.testing.assert_allclose(ours.log_prob, ref.log_prob, rtol=0, atol=TOL_NATS)
    again, _ = _run(
        dist, sde, x, key=key, divergence=divergence, schedule=SHARED, rtol=1e-8, atol=1e-8
    )
    assert np.array_equal(np.asarray(again.log_prob), np.asarray(ours.log_prob))  # same key
    if divergence.stochastic:
        other, _ = _run(
            dist,
            sde,
            x,
            key=jr.key(8),
            divergence=divergence,
            schedule=SHARED,
            rtol=1e-8,
            atol=1e-8,
        )
        assert float(jnp.max(jnp.abs(other.log_prob - ref.log_prob))) > 100 * TOL_NATS
        assert ours.stderr is None if divergence.num_estimates == 1 else ours.stderr.shape == (4,)


@pytest.mark.slow
def test_result_depends_on_the_batch_per_sample_does_not(x64):
    """What the docstring says plainly: in shared mode sample 0's value changes with the rest of
    the batch (its step sequence does); per-sample solves do not change."""
    dist = _mix()
    sde = ss.VPSDE()
    x = dist.sample(jr.key(0), 6)
    kw = dict(divergence=ss.ExactDivergence(), rtol=1e-4, atol=1e-4)
    s_all, _ = _run(dist, sde, x, schedule=SHARED, **kw)
    s_one, _ = _run(dist, sde, x[:1], schedule=SHARED, **kw)
    p_all, _ = _run(dist, sde, x, **kw)
    p_one, _ = _run(dist, sde, x[:1], **kw)
    assert float(jnp.abs(s_all.log_prob[0] - s_one.log_prob[0])) > 1e-9
    assert int(p_all.nfe[0]) == int(p_one.nfe[0])
    np.testing.assert_allclose(p_all.log_prob[0], p_one.log_prob[0], rtol=0, atol=1e-12)


@pytest.mark.slow
def test_gradient_through_adjoint(x64):
    """d/dshift sum_i ln p(x_i + shift) through the shared solve = the analytic score sum."""
    dist = _mix(2)
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(dist, sde)
    x = dist.sample(jr.key(0), 3)

    def loss(shift):
        r = log_likelihood(
            sde,
            score,
            x + shift[None],
            divergence=ss.ExactDivergence(),
            t_eps=1e-3,
            prior_log_prob=dist.marginal(sde, sde.T).log_prob,
            rtol=1e-8,
            atol=1e-8,
            schedule=SHARED,
        )
        return jnp.sum(r.log_prob)

    g = jax.grad(loss)(jnp.zeros(2))
    expected = jnp.sum(jax.vmap(jax.grad(dist.marginal(sde, 1e-3).log_prob))(x), axis=0)
    np.testing.assert_allclose(g, expected, rtol=0, atol=1e-4 * float(jnp.max(jnp.abs(expected))))


@pytest.mark.slow
def test_nats_tol_in_shared_mode(x64):
    """nats_tol with shared steps: the norm is the RMS over samples of delta's error; tighter
    is more accurate and costs more."""
    dist = _mix()
    sde = ss.VPSDE()
    x = dist.sample(jr.key(0), 4)
    kw = dict(divergence=ss.ExactDivergence(), schedule=SHARED)
    loose, expected = _run(dist, sde, x, nats_tol=1e-1, **kw)
    tight, _ = _run(dist, sde, x, nats_tol=1e-6, **kw)
    err_loose = float(jnp.sqrt(jnp.mean((loose.log_prob - expected) ** 2)))
    err_tight = float(jnp.sqrt(jnp.mean((tight.log_prob - expected) ** 2)))
    assert err_tight < 1e-4 < err_loose
    assert int(tight.nfe[0]) > int(loose.nfe[0])


@pytest.mark.slow
def test_lanes_int_is_a_synonym_and_bits_per_dim_forwards():
    dist = random_mixture(4, 2, 2)
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(dist, sde)
    x = dist.sample(jr.key(0), 5)
    kw = dict(key=jr.key(0), t_eps=1e-3)
    a = log_likelihood(sde, score, x, lanes=2, **kw)
    b = log_likelihood(sde, score, x, schedule=ss.Lanes(2), **kw)
    assert np.array_equal(np.asarray(a.log_prob), np.asarray(b.log_prob))
    k = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 2)))
    bpd = bits_per_dim(sde, score, k, key=jr.key(1), num_repeats=2, t_eps=1e-3, schedule=SHARED)
    assert bpd.bpd.shape == (3,) and bool(jnp.all(jnp.isfinite(bpd.bpd)))
    assert np.all(np.asarray(bpd.nfe) == bpd.nfe[0])  # 2 repeats x the batch's NFE each


def test_bad_schedules():
    dist = random_mixture(4, 2, 2)
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(dist, sde)
    x = dist.sample(jr.key(0), 3)
    exact = ss.ExactDivergence()
    with pytest.raises(ValueError, match="not both"):
        log_likelihood(sde, score, x, divergence=exact, lanes=2, schedule=ss.Lanes(2))
    with pytest.raises(TypeError, match="schedule"):
        log_likelihood(sde, score, x, divergence=exact, schedule="shared")
    with pytest.raises(ValueError, match="cannot be split"):
        log_likelihood(sde, score, x, divergence=exact, schedule=SHARED, chunk_size=2)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="lanes"):
            ss.Lanes(bad)
        with pytest.raises(ValueError, match="lanes"):
            log_likelihood(sde, score, x, divergence=exact, lanes=bad)
    with pytest.raises(RuntimeError, match="failed"):
        log_likelihood(sde, score, x, divergence=exact, t_eps=1e-3, max_steps=2, schedule=SHARED)
    res = log_likelihood(
        sde, score, x, divergence=exact, t_eps=1e-3, max_steps=2, schedule=SHARED, throw=False
    )
    assert bool(jnp.all(jnp.isnan(res.log_prob))) and not bool(jnp.any(res.successful))
