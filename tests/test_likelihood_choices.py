"""The likelihood's choices are values: each value and its string alias give identical results
(and the same compiled program), and a bad value raises an error naming its argument.

Small 2-D problems, loose tolerances: the equality is exact, so accuracy does not matter.
"""

import warnings

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import assert_no_recompile

import scoresde as ss

T_EPS = 1e-3


def _problem():
    sde = ss.VPSDE()
    dist = ss.analytic.Gaussian(jnp.array([0.1, -0.2]), jnp.array([[0.09, 0.03], [0.03, 0.05]]))
    score = ss.analytic.marginal_score(dist, sde)
    x = dist.marginal(sde, T_EPS).sample(jr.key(0), 4).astype(jnp.float32)
    return sde, score, x


def _same(a, b):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize(
    "alias, value",
    [
        ("t", ss.TimeVariable()),
        ("log_snr", ss.LogSNRVariable()),
        ("log_sigma", ss.LogSigmaVariable()),
    ],
)
def test_integration_variable_value_and_alias_agree(alias, value):
    sde, score, x = _problem()
    kw = dict(divergence=ss.ExactDivergence(), t_eps=T_EPS, rtol=1e-3, atol=1e-3)
    by_name = ss.log_likelihood(sde, score, x, variable=alias, **kw)
    with assert_no_recompile():  # the alias becomes the value before anything is traced
        by_value = ss.log_likelihood(sde, score, x, variable=value, **kw)
    _same((by_name.log_prob, by_name.nfe), (by_value.log_prob, by_value.nfe))
    enc = dict(t_eps=T_EPS, steps=4, solver=dfx.Heun())
    _same(
        (ss.encode(sde, score, x, variable=alias, **enc).z,),
        (ss.encode(sde, score, x, variable=value, **enc).z,),
    )


def test_integration_variable_bad_values():
    sde, score, x = _problem()
    # A wrong type is a TypeError (from the library, or from the tests' runtime type checker),
    # an unknown alias a ValueError; both name the argument.
    for bad, error in (("sigma", ValueError), (1, TypeError), (ss.RademacherProbes(), TypeError)):
        with pytest.raises(error, match="variable"):
            ss.log_likelihood(sde, score, x, divergence=ss.ExactDivergence(), variable=bad)
        with pytest.raises(error, match="variable"):
            ss.encode(sde, score, x, variable=bad)


@pytest.mark.parametrize(
    "alias, value",
    [
        ("uniform", ss.UniformDequantization()),
        ("antithetic", ss.AntitheticDequantization()),
        ("none", ss.NoDequantization()),
    ],
)
def test_dequantization_value_and_alias_agree(alias, value):
    sde, score, _ = _problem()
    k = jnp.array([[3.0, 9.0], [8.0, 8.0], [12.0, 5.0]])
    kw = dict(key=jr.key(1), levels=17, num_repeats=2, t_eps=T_EPS, rtol=1e-3, atol=1e-3)
    by_name = ss.bits_per_dim(sde, score, k, dequantization=alias, **kw)
    by_value = ss.bits_per_dim(sde, score, k, dequantization=value, **kw)
    _same((by_name.bpd, by_name.nfe), (by_value.bpd, by_value.nfe))
    assert (by_name.stderr is None) == (by_value.stderr is None)


def test_dequantization_bad_values():
    sde, score, _ = _problem()
    k = jnp.zeros((2, 2))
    for bad, error in (("gauss", ValueError), (None, TypeError), (ss.GaussianProbes(), TypeError)):
        with pytest.raises(error, match="dequantization"):
            ss.bits_per_dim(sde, score, k, key=jr.key(0), dequantization=bad)
        with pytest.raises(error, match="dequantization"):
            ss.estimate_bits_per_dim(sde, score, k, key=jr.key(0), dequantization=bad)
    with pytest.raises(ValueError, match="even"):
        ss.bits_per_dim(sde, score, k, key=jr.key(0), dequantization=ss.AntitheticDequantization())


@pytest.mark.parametrize(
    "alias, value", [("rademacher", ss.RademacherProbes()), ("gaussian", ss.GaussianProbes())]
)
def test_probe_distribution_value_and_alias_agree(alias, value):
    assert ss.Hutchinson(2, noise=alias) == ss.Hutchinson(2, noise=value)
    sde, score, x = _problem()
    kw = dict(key=jr.key(2), t_eps=T_EPS, rtol=1e-3, atol=1e-3)
    by_name = ss.log_likelihood(sde, score, x, divergence=ss.Hutchinson(2, noise=alias), **kw)
    with assert_no_recompile():
        by_value = ss.log_likelihood(sde, score, x, divergence=ss.Hutchinson(2, value), **kw)
    _same((by_name.log_prob, by_name.stderr), (by_value.log_prob, by_value.stderr))


def test_probe_distribution_bad_values():
    for bad, error in (
        ("uniform", ValueError),
        (None, TypeError),
        (ss.UniformDequantization(), TypeError),
    ):
        with pytest.raises(error, match="noise"):
            ss.Hutchinson(noise=bad)
    with pytest.raises(ValueError, match="orthogonal.*noise"):
        ss.Hutchinson(2, ss.GaussianProbes(), orthogonal=True)


def _mean(tight, **kw):
    sde, score, x = _problem()
    x = jnp.concatenate([x, -x])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ss.estimate_mean_log_likelihood(
            sde, score, x, key=jr.key(3), divergence=ss.ExactDivergence(), t_eps=T_EPS,
            rtol=1e-2, atol=1e-2, num_tight=3, tight=tight, **kw,
        )  # fmt: skip


def test_solver_level_value_and_alias_agree():
    """The dict alias changes the cheap level's settings; the value names them all. The
    default `tight=None` is the float32 default level."""
    level = ss.SolverLevel(dfx.Dopri5(), rtol=1e-6, atol=1e-6, max_steps=4096)
    as_dict = _mean(dict(rtol=1e-6, atol=1e-6))
    as_value = _mean(level)
    default = _mean(None)
    explicit_default = _mean(ss.SolverLevel(dfx.Dopri5(), 1e-6, 1e-6))
    for a, b in ((as_dict, as_value), (default, explicit_default)):
        _same(
            (a.mean, a.stderr, a.tight_log_prob, a.total_nfe),
            (b.mean, b.stderr, b.tight_log_prob, b.total_nfe),
        )
    assert int(as_dict.total_nfe) > 0


def test_solver_level_bad_values():
    with pytest.raises(TypeError, match="tight"):
        _mean("dopri8")
    with pytest.raises(ValueError, match="tight.*divergence"):
        _mean(dict(rtol=1e-6, divergence=ss.Hutchinson()))
    with pytest.raises(TypeError, match="solver"):
        ss.SolverLevel("dopri5", 1e-6, 1e-6)
    with pytest.raises(ValueError, match="rtol"):
        ss.SolverLevel(dfx.Dopri5(), -1e-6, 1e-6)
    with pytest.raises(ValueError, match="nats_tol"):
        ss.SolverLevel(dfx.Dopri5(), 1e-6, 1e-6, nats_tol=0.0)
