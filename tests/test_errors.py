"""Every failure names its cause (issue 26, item 6): a non-finite score or input is named as such
before any tolerance advice, and each bad argument is refused up front, naming it. One test per
case, each on a 2-D problem with a few steps (most raise before anything compiles)."""

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr
import pytest

import scoresde as ss

SDE = ss.VPSDE()
SCORE = ss.analytic.marginal_score(ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2)), SDE)
X = jnp.ones((2, 2))


def nan_score(t, x):
    return jnp.full_like(x, jnp.nan)


ADVICE_WORDS = ("looser", "larger", "more steps", "snr")

NAN_SCORE_CALLS = {
    "sample_ode_steps": lambda: ss.sample_ode(
        SDE, nan_score, key=jr.key(0), shape=(2, 2), steps=2, solver=dfx.Euler()
    ),
    "log_likelihood": lambda: ss.log_likelihood(
        SDE,
        nan_score,
        X,
        divergence=ss.ExactDivergence(),
        solver=dfx.Heun(),
        schedule=ss.SharedSteps(),  # the cheapest adaptive solve to compile
        max_steps=8,
    ),
    "sample_ode_adaptive": lambda: ss.sample_ode(
        SDE, nan_score, key=jr.key(0), shape=(2, 2), max_steps=8
    ),
}


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(call, id=name, marks=pytest.mark.slow if "adaptive" in name else ())
        for name, call in NAN_SCORE_CALLS.items()
    ],
)
def test_a_nan_score_is_named_before_any_tolerance_advice(call):
    with pytest.raises((RuntimeError, FloatingPointError), match="score returned NaN") as info:
        call()
    message = str(info.value)
    assert not any(word in message for word in ADVICE_WORDS), message


@pytest.mark.parametrize(
    "x, error, match",
    [
        (X.at[0, 1].set(jnp.nan), ValueError, "x contains non-finite"),
        (X.astype(jnp.bfloat16), TypeError, "bfloat16.*float32"),
    ],
    ids=["nan", "bfloat16"],
)
def test_a_bad_likelihood_input_is_named_before_the_solve(x, error, match):
    with pytest.raises(error, match=match):
        ss.log_likelihood(SDE, SCORE, x, divergence=ss.ExactDivergence())


@pytest.mark.parametrize("solver", [dfx.ShARK(), dfx.SRA1(), dfx.SEA(), dfx.EulerHeun()])
def test_an_sde_solver_is_refused_by_the_ode_entry_points(solver):
    name = type(solver).__name__
    with pytest.raises(TypeError, match=f"{name} is a solver for SDEs.*sample_sde"):
        ss.sample_ode(SDE, SCORE, key=jr.key(0), shape=(2, 2), solver=solver, steps=2)
    with pytest.raises(TypeError, match=f"{name} is a solver for SDEs"):
        ss.log_likelihood(SDE, SCORE, X, solver=solver, divergence=ss.ExactDivergence())
