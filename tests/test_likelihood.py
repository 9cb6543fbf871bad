"""Tests of log_likelihood, bits_per_dim, encode and decode (estimators: test_divergence.py;
lanes: test_lanes.py).

The oracle (MATH.md): with the exact score, the exact divergence and the analytic p_T as prior, the
PF-ODE likelihood equals the analytic ln p_{t_eps}(x) up to the solver tolerance.
"""

import math
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import SCORE_CALLS, CountingScore, assert_no_recompile, slow_except
from hypothesis import given, settings, strategies as st

import scoresde as ss
from scoresde._likelihood.divergence import ExactDivergence, Hutchinson
from scoresde._likelihood.flow import bits_per_dim, decode, encode, log_likelihood

SDES = [ss.VPSDE(), ss.SubVPSDE(), ss.VESDE(), ss.EDMSDE()]
SDE_IDS = ["vp", "subvp", "ve", "edm"]
BATCH = 4


def _t_eps(sde):
    return 2e-3 if isinstance(sde, ss.EDMSDE) else 1e-5


def _random_spd(rng, dim, low, high):
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    return (q * rng.uniform(low, high, size=dim)) @ q.T


def _gaussian(seed, dim, dtype):
    rng = np.random.default_rng(seed)
    return ss.analytic.Gaussian(
        jnp.asarray(rng.normal(size=dim), dtype),
        jnp.asarray(_random_spd(rng, dim, 0.05, 2.0), dtype),
    )


def _mixture(seed, dim, k, dtype):
    rng = np.random.default_rng(seed)
    covs = np.stack([_random_spd(rng, dim, 0.05, 1.0) for _ in range(k)])
    return ss.analytic.GaussianMixture(
        jnp.asarray(rng.dirichlet(np.full(k, 2.0)), dtype),
        jnp.asarray(2 * rng.normal(size=(k, dim)), dtype),
        jnp.asarray(covs, dtype),
    )


def _exact_ll(dist, sde, x, *, t_eps, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = log_likelihood(
            sde,
            ss.analytic.marginal_score(dist, sde),
            x,
            divergence=ExactDivergence(),
            t_eps=t_eps,
            prior_log_prob=dist.marginal(sde, sde.T).log_prob,
            **kwargs,
        )
    expected = jax.vmap(dist.marginal(sde, t_eps).log_prob)(x)
    return result, expected


# ---------------------------------------------------------------- the analytic oracle


@settings(deadline=None, max_examples=2)  # more examples in test_exact_property_long (slow)
@given(
    dim=st.integers(1, 8),
    sde_index=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_exact_on_random_gaussians_float64(x64, dim, sde_index, seed):
    sde = SDES[sde_index]
    dist = _gaussian(seed, dim, jnp.float64)
    x = dist.sample(jr.key(seed), BATCH)
    result, expected = _exact_ll(dist, sde, x, t_eps=_t_eps(sde), rtol=1e-8, atol=1e-8)
    assert result.log_prob.dtype == jnp.float64
    np.testing.assert_allclose(result.log_prob, expected, rtol=0, atol=1e-4)
    # The latent is the exact PF-ODE flow map of the Gaussian.
    z = jax.vmap(lambda xi: dist.probability_flow(sde, _t_eps(sde), sde.T, xi))(x)
    np.testing.assert_allclose(result.z, z, rtol=1e-5, atol=1e-5 * sde.prior_std)


@settings(deadline=None, max_examples=2)
@given(
    dim=st.sampled_from([2, 5]),
    sde_index=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_exact_on_random_mixtures_float64(x64, dim, sde_index, seed):
    sde = SDES[sde_index]
    dist = _mixture(seed, dim, 3, jnp.float64)
    x = dist.sample(jr.key(seed), BATCH)
    result, expected = _exact_ll(dist, sde, x, t_eps=_t_eps(sde), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.log_prob, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("variable", [pytest.param("log_sigma", marks=pytest.mark.slow), "log_snr"])
def test_integration_variables_agree_float64(x64, variable):
    """Integrating in ln sigma or the log-SNR gives the same analytic answer (the change of
    variable dt/du enters both x and delta), for every SDE."""
    dist = _mixture(5, 3, 2, jnp.float64)
    for sde in SDES:
        x = dist.sample(jr.key(2), BATCH)
        result, expected = _exact_ll(
            dist, sde, x, t_eps=_t_eps(sde), rtol=1e-8, atol=1e-8, variable=variable
        )
        np.testing.assert_allclose(result.log_prob, expected, rtol=0, atol=1e-4, err_msg=repr(sde))


@pytest.mark.parametrize("sde", slow_except(SDES, SDE_IDS, fast=("vp",)))
def test_exact_float32_at_defaults(sde):
    dist = _mixture(3, 3, 2, jnp.float32)
    x = dist.sample(jr.key(1), BATCH)
    result, expected = _exact_ll(dist, sde, x, t_eps=_t_eps(sde))
    assert result.log_prob.dtype == jnp.float32
    np.testing.assert_allclose(result.log_prob, expected, rtol=0, atol=1e-2)
    np.testing.assert_allclose(
        result.log_prob, result.prior_log_prob + result.delta_log_prob, rtol=1e-6, atol=1e-4
    )
    assert result.stderr is None
    assert result.nfe.shape == (BATCH,) and bool(jnp.all(result.successful))
    # Dopri5 (the default) is FSAL: one evaluation at the start, then 6 per attempted step.
    np.testing.assert_array_equal(result.nfe, 1 + 6 * result.num_steps)


@pytest.mark.slow
@settings(deadline=None, max_examples=30)
@given(
    dim=st.integers(1, 8),
    sde_index=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
    mixture=st.booleans(),
)
def test_exact_property_long(x64, dim, sde_index, seed, mixture):
    sde = SDES[sde_index]
    dist = _mixture(seed, dim, 3, jnp.float64) if mixture else _gaussian(seed, dim, jnp.float64)
    x = dist.sample(jr.key(seed), BATCH)
    result, expected = _exact_ll(dist, sde, x, t_eps=_t_eps(sde), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(result.log_prob, expected, rtol=0, atol=1e-4)


def test_default_prior_differs_by_kl_for_vp():
    """ln N(z; 0, I) - ln p_T(z), z ~ p_T, has mean -KL(p_T || N(0, I)) (Gaussian formula)."""
    # A short schedule (alpha(1) ~ 0.28), so that p_T visibly differs from the prior.
    sde = ss.VPSDE(beta_max=5.0)
    dim, n = 2, 256
    dist = ss.analytic.Gaussian(jnp.full((dim,), 2.0), jnp.diag(jnp.array([9.0, 4.0])))
    x = dist.sample(jr.key(0), n)
    score = ss.analytic.marginal_score(dist, sde)
    pT = dist.marginal(sde, sde.T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analytic = log_likelihood(
            sde, score, x, divergence=ExactDivergence(), t_eps=1e-5, prior_log_prob=pT.log_prob
        )
        default = log_likelihood(sde, score, x, divergence=ExactDivergence(), t_eps=1e-5)
    diff = default.log_prob - analytic.log_prob
    np.testing.assert_allclose(
        diff,
        jax.vmap(sde.prior_log_prob)(default.z) - jax.vmap(pT.log_prob)(default.z),
        rtol=0,
        atol=1e-3,
    )
    v = pT.eigvals
    m = pT.eigvecs.T @ pT.mean
    kl = 0.5 * jnp.sum(v + m**2 - 1 - jnp.log(v))
    assert kl > 0.3  # the test is not vacuous
    assert stats.mean(diff, -kl).within(5)


# ---------------------------------------------------------------- errors, retracing, gradients


@pytest.fixture
def small():
    sde = ss.VPSDE()
    dist = _gaussian(0, 2, jnp.float32)
    return sde, ss.analytic.marginal_score(dist, sde), dist.sample(jr.key(0), 3)


def test_bad_inputs(small):
    sde, score, x = small
    exact = ExactDivergence()
    with pytest.raises(ValueError, match="key"):
        log_likelihood(sde, score, x)
    with pytest.raises(ValueError, match="non-finite"):
        log_likelihood(sde, score, x.at[0, 0].set(jnp.nan), divergence=exact)
    with pytest.raises(ValueError, match="batch"):
        log_likelihood(sde, score, x[0], divergence=exact)
    with pytest.raises(ValueError, match="shape"):
        log_likelihood(sde, score, jnp.zeros((3, 5)), divergence=exact)  # score is 2-D
    with pytest.raises(ValueError, match="rtol"):
        log_likelihood(sde, score, x, divergence=exact, rtol=0.0)
    with pytest.raises(ValueError, match="rtol"):
        log_likelihood(sde, score, x, divergence=exact, rtol=-1e-3)
    for t_eps in (0.0, -1e-3, 1.0, 2.0):
        with pytest.raises(ValueError, match="t_eps"):
            log_likelihood(sde, score, x, divergence=exact, t_eps=t_eps)
    with pytest.raises(ValueError, match="max_size"):
        log_likelihood(sde, score, x, divergence=ExactDivergence(max_size=1))
    with pytest.raises(ValueError, match="variable"):
        log_likelihood(sde, score, x, divergence=exact, variable="sigma")
    with pytest.raises(TypeError, match="divergence"):
        log_likelihood(sde, score, x, divergence="exact")
    with pytest.raises(ValueError, match="noise"):
        Hutchinson(noise="uniform")
    with pytest.raises(ValueError, match="num_probes"):
        Hutchinson(num_probes=0)
    with pytest.raises(ValueError, match="dequantization"):
        bits_per_dim(sde, score, jnp.zeros((2, 2)), key=jr.key(0), dequantization="gauss")
    with pytest.raises(ValueError, match="integers"):
        bits_per_dim(sde, score, jnp.full((2, 2), 256.0), key=jr.key(0))
    with pytest.raises(ValueError, match="key"):
        bits_per_dim(sde, score, jnp.zeros((2, 2)), divergence=exact)


def test_failed_solve_raises_or_gives_nan(small):
    sde, score, x = small
    kwargs = dict(divergence=ExactDivergence(), max_steps=2, t_eps=1e-3)
    with pytest.raises(RuntimeError, match="failed"):
        log_likelihood(sde, score, x, **kwargs)
    result = log_likelihood(sde, score, x, throw=False, **kwargs)
    assert bool(jnp.all(jnp.isnan(result.log_prob)))
    assert not bool(jnp.any(result.successful))
    assert bool(jnp.all(result.status != 0))


def test_float32_warns_below_the_default_t_eps_only(small):
    """The defaults never warn (t_eps = 1e-5 is measured accurate in float32:
    benchmarks/likelihood_precision.py); below them float32 is untested, and says so."""
    sde, score, x = small
    with pytest.warns(UserWarning, match="float32"):
        log_likelihood(sde, score, x, divergence=ExactDivergence(), t_eps=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_likelihood(sde, score, x, divergence=ExactDivergence())
        log_likelihood(sde, score, x, divergence=ExactDivergence(), t_eps=1e-3)


def test_no_retrace(small):
    sde, score, x = small
    log_likelihood(sde, score, x, key=jr.key(0), t_eps=1e-3)
    # New values of x, key, t_eps and tolerances, and a new score with the same structure.
    other = ss.analytic.marginal_score(_gaussian(9, 2, jnp.float32), sde)
    x1, key = x + 1.0, jr.key(1)
    with assert_no_recompile():
        log_likelihood(sde, other, x1, key=key, t_eps=2e-3, rtol=1e-4, atol=1e-6)
    encode(sde, score, x, t_eps=1e-3)
    with assert_no_recompile():
        encode(sde, other, x1, t_eps=2e-3)


class _ScaledScore(eqx.Module):
    """The exact score of N(0, s^2 I), s = exp(log_std): a model with one parameter."""

    log_std: jax.Array
    sde: ss.VPSDE

    def __call__(self, t, x):
        alpha, sigma = self.sde.marginal(t)
        return -x / (alpha**2 * jnp.exp(2 * self.log_std) + sigma**2)


def test_gradient_matches_finite_differences(x64):
    sde = ss.VPSDE()
    x = jr.normal(jr.key(0), (3, 2), jnp.float64) * 0.7

    def loss(model):
        return jnp.sum(
            log_likelihood(
                sde, model, x, divergence=ExactDivergence(), t_eps=1e-3, rtol=1e-10, atol=1e-10
            ).log_prob
        )

    model = _ScaledScore(jnp.asarray(0.1, jnp.float64), sde)
    grad = eqx.filter_grad(loss)(model).log_std
    h = 1e-5
    fd = (
        loss(_ScaledScore(model.log_std + h, sde)) - loss(_ScaledScore(model.log_std - h, sde))
    ) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5)
    assert abs(float(grad)) > 1e-2


# ---------------------------------------------------------------- bits/dim, encode, decode


@pytest.mark.slow  # test_bits_per_dim.py checks the same per `levels` in the default run
def test_bits_per_dim_matches_discrete_entropy(x64):
    """8-bit 1-D data from a discretised Gaussian whose entropy H(P) is computed exactly."""
    bits, s_w, m_w = 8, 8.0, 100.3  # in integer units w = k + u
    sde = ss.VPSDE()
    scale = 2 / 2**bits
    dist = ss.analytic.Gaussian(jnp.array([-1 + scale * m_w]), jnp.array([[(scale * s_w) ** 2]]))
    score = ss.analytic.marginal_score(dist, sde)
    t_eps = 1e-8  # p_{t_eps} is the model up to sigma(t_eps)^2 / s_x^2 ~ 1e-6
    k = jnp.arange(2**bits, dtype=jnp.float64)[:, None]
    from jax.scipy.stats import norm

    edges = jnp.arange(2**bits + 1, dtype=jnp.float64)
    cdf = norm.cdf(edges, m_w, s_w)
    p = jnp.diff(cdf)
    entropy_bits = float(
        -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)) / math.log(2)
    )
    kwargs = dict(
        divergence=ExactDivergence(),
        t_eps=t_eps,
        rtol=1e-9,
        atol=1e-9,
        prior_log_prob=dist.marginal(sde, sde.T).log_prob,
    )
    none = bits_per_dim(sde, score, k, dequantization="none", **kwargs)
    assert none.num_dims == 1
    np.testing.assert_allclose(none.log_det_jacobian, math.log(scale), rtol=1e-12)
    # The components add up, and 8 bits in [-1, 1] is MATH.md's -ln p_x / (D ln 2) + 7.
    np.testing.assert_allclose(none.bpd, -none.log_prob / math.log(2) + 7, rtol=1e-10)
    cross_entropy = float(jnp.sum(p * none.bpd))
    np.testing.assert_allclose(cross_entropy, entropy_bits, atol=2e-3)
    # Uniform dequantisation: E_u[-ln p_w(k + u)] = -ln p_w(k + 1/2) + 1/(24 s^2) exactly for a
    # Gaussian p_w, up to the Monte Carlo error of the repeats.
    unif = bits_per_dim(
        sde, score, k, key=jr.key(0), dequantization="uniform", num_repeats=16, **kwargs
    )
    gap = 1 / (24 * s_w**2) / math.log(2)
    err = jnp.abs(unif.bpd - none.bpd - gap)
    assert bool(jnp.all(err < 5 * unif.stderr + 1e-6))
    assert float(jnp.sum(p * unif.bpd)) >= entropy_bits - 1e-3


@pytest.mark.parametrize("sde", slow_except([ss.VPSDE(), ss.EDMSDE()], ["vp", "edm"], fast=("vp",)))
def test_reversible_heun_round_trip_is_exact(x64, sde):
    dist = _mixture(1, 3, 2, jnp.float64)
    score = ss.analytic.marginal_score(dist, sde)
    x = dist.sample(jr.key(0), BATCH)
    t_eps = _t_eps(sde)
    kwargs = dict(solver=dfx.ReversibleHeun(), steps=16, t_eps=t_eps, variable="log_snr")
    enc = encode(sde, score, x, **kwargs)
    dec = decode(sde, score, enc, **kwargs)
    np.testing.assert_allclose(dec.x, x, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(enc.nfe, 1 + 16)
    np.testing.assert_array_equal(dec.nfe, 16)
    # 16 steps are not converged: decoding z alone, without the solver state, is only approximate.
    plain = decode(sde, score, enc.z, **kwargs)
    assert float(jnp.max(jnp.abs(plain.x - x))) > 1e-7


def test_encode_matches_exact_flow_and_decode_inverts(x64):
    sde = ss.VPSDE()
    dist = _gaussian(2, 3, jnp.float64)
    score = ss.analytic.marginal_score(dist, sde)
    x = dist.sample(jr.key(1), BATCH)
    enc = encode(sde, score, x, t_eps=1e-3, rtol=1e-9, atol=1e-9)
    z = jax.vmap(lambda xi: dist.probability_flow(sde, 1e-3, sde.T, xi))(x)
    np.testing.assert_allclose(enc.z, z, rtol=0, atol=1e-7)
    assert enc.solver_state is None
    dec = decode(sde, score, enc.z, t_eps=1e-3, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(dec.x, x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("divergence", [ExactDivergence(), Hutchinson(2)], ids=["exact", "hutch2"])
def test_nfe_is_the_executed_score_calls(small, divergence):
    """The vmapped (default) path: `nfe` is the number of score evaluations really run."""
    sde, score, x = small
    counting = CountingScore(score)
    SCORE_CALLS.clear()
    r = log_likelihood(sde, counting, x[:1], key=jr.key(0), divergence=divergence, t_eps=1e-3)
    jax.effects_barrier()
    assert int(r.nfe[0]) == len(SCORE_CALLS) > 0
