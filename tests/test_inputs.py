"""Bad input to the entry points gives a clear error naming the argument, before any compile
where possible; `throw=False` reports failed solves instead of raising."""

import warnings

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss

SDE = ss.VPSDE()
SCORE = ss.analytic.marginal_score(ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2)), SDE)


@pytest.mark.parametrize("key", [None, 0, jnp.zeros(3, jnp.uint32)])
def test_a_bad_key_is_named(key):
    calls = [
        lambda: ss.sample_ode(SDE, SCORE, key=key, shape=(2, 2)),
        lambda: ss.sample_sde(SDE, SCORE, key=key, shape=(2, 2), steps=2),
        lambda: ss.sample_pc(SDE, SCORE, key=key, shape=(2, 2), steps=2),
        lambda: ss.sample_edm(ss.EDMSDE(), SCORE, key=key, shape=(2, 2), steps=2),
        lambda: ss.run_langevin(
            ss.UnadjustedLangevin(lambda x: -x, 0.1), jnp.zeros((2, 2)), key=key, num_steps=1
        ),
        lambda: ss.log_likelihood(SDE, SCORE, jnp.zeros((2, 2)), key=key),
    ]
    for call in calls:
        with pytest.raises((TypeError, ValueError), match="key"):
            call()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rtol=-1e-3), "rtol"),
        (dict(atol=-1e-3), "atol"),
        (dict(rtol=0.0, atol=0.0), "both 0"),
        (dict(max_steps=0), "max_steps"),
        (dict(max_steps=2.5), "max_steps"),
        (dict(denoise="yes"), "denoise"),
        (dict(throw=None), "throw"),
    ],
)
def test_sample_ode_validates_before_compiling(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ss.sample_ode(SDE, SCORE, key=jr.key(0), shape=(2, 2), **kwargs)


def test_likelihood_tolerances_and_max_steps():
    x = jnp.zeros((2, 2))
    for kwargs, match in [
        (dict(rtol=0.0), "rtol"),
        (dict(atol=-1.0), "atol"),
        (dict(max_steps=0), "max_steps"),
        (dict(lanes=0), "lanes"),
    ]:
        with pytest.raises(ValueError, match=match):
            ss.log_likelihood(SDE, SCORE, x, divergence=ss.ExactDivergence(), **kwargs)


def test_integer_data_is_refused_and_float64_downcast_is_said():
    with pytest.raises(TypeError, match="floating"):
        ss.log_likelihood(SDE, SCORE, jnp.zeros((2, 2), jnp.int32), divergence=ss.ExactDivergence())
    with pytest.raises(TypeError, match="x_T"):
        ss.sample_ode(SDE, SCORE, key=jr.key(0), shape=(2, 2), x_T=np.zeros((2, 2), np.int32))
    with pytest.warns(UserWarning, match="float64"):
        ss.sample_ode(
            SDE,
            SCORE,
            key=jr.key(0),
            shape=(2, 2),
            x_T=np.zeros((2, 2)),
            steps=2,
            solver=dfx.Euler(),
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # float32 input: no warning
        ss.sample_ode(
            SDE,
            SCORE,
            key=jr.key(0),
            shape=(2, 2),
            x_T=np.zeros((2, 2), np.float32),
            steps=2,
            solver=dfx.Euler(),
        )


def test_throw_false_reports_failed_samples():
    kw = dict(key=jr.key(0), shape=(3, 2), max_steps=2)
    with pytest.raises(RuntimeError, match="failed for 3 of 3"):
        ss.sample_ode(SDE, SCORE, **kw)
    r = ss.sample_ode(SDE, SCORE, throw=False, **kw)
    assert r.successful is not None and not bool(jnp.any(r.successful))
    assert bool(jnp.all(jnp.isnan(r.x)))
    ok = ss.sample_ode(SDE, SCORE, key=jr.key(0), shape=(3, 2), throw=False)
    assert bool(jnp.all(ok.successful)) and bool(jnp.all(jnp.isfinite(ok.x)))
