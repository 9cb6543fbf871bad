"""`progress=True` shows a progress bar on stderr (and `False`, the default, prints nothing)."""

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr
import pytest

import scoresde as ss

SDE = ss.VPSDE()
SCORE = ss.analytic.marginal_score(ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2)), SDE)
KW = dict(key=jr.key(0), shape=(4, 2))


_SLOW = pytest.mark.slow


# By default one entry point per kind of bar: diffrax's meter (ode) and the loop's own (pc).
@pytest.mark.parametrize(
    "call, marker",
    [
        pytest.param(lambda p: ss.sample_ode(SDE, SCORE, progress=p, **KW), "%", id="ode"),
        pytest.param(
            lambda p: ss.sample_sde(SDE, SCORE, steps=5, solver=dfx.Euler(), progress=p, **KW),
            "%",
            id="sde",
            marks=_SLOW,
        ),
        pytest.param(
            lambda p: ss.sample_pc(SDE, SCORE, steps=5, progress=p, **KW), "sample_pc", id="pc"
        ),
        pytest.param(
            lambda p: ss.sample_edm(ss.EDMSDE(), SCORE, steps=5, progress=p, **KW),
            "sample_edm",
            id="edm",
            marks=_SLOW,
        ),
        pytest.param(
            lambda p: ss.log_likelihood(
                SDE, SCORE, jnp.zeros((3, 2)), divergence=ss.ExactDivergence(), progress=p
            ),
            "%",
            id="likelihood",
            marks=_SLOW,
        ),
    ],
)
def test_progress_bar(call, marker, capfd):
    call(False)
    assert capfd.readouterr().err == ""
    call(True)
    err = capfd.readouterr().err
    assert marker in err and "100" in err, err
