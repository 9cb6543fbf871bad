"""The private diffrax pieces (`scoresde/_diffrax_private.py`) against diffrax itself."""

import inspect

import diffrax as dfx
import diffrax._integrate as integrate
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoresde import _diffrax_private as private


def _chain(x):
    for _ in range(private.CLIP_ULPS):
        x = eqxi.prevbefore(x)
    return x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prevbefore_n_is_the_chain_of_prevbefore(dtype, x64):
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.integers(-30, 30, 500)
    edges = [0.0, -0.0, 1.0, -1.0, 80.0, -80.0, 1e-5, -1e-5, 1e-3, -1e-3]
    x = np.concatenate([rng.standard_normal(500) * magnitudes, edges]).astype(dtype)
    expected = np.asarray(jax.jit(jax.vmap(_chain))(x))
    got = np.asarray(jax.jit(jax.vmap(private.clip_floor))(x))
    np.testing.assert_array_equal(got, expected)
    # negative control: one ULP fewer is told apart
    fewer = np.asarray(jax.jit(jax.vmap(lambda v: private.prevbefore_n(v, 99)))(x))
    assert np.all(fewer != expected)


def test_diffrax_loop_still_chains_prevbefore_once():
    """The one-step stand-in relies on `_integrate` calling `prevbefore` exactly in the
    `CLIP_ULPS`-long chain of `loop` and nowhere else (a diffrax upgrade is caught here)."""
    source = inspect.getsource(integrate)
    assert source.count("prevbefore") == 1 and source.count("nextafter") == 0
    assert f"for _ in range({private.CLIP_ULPS}):" in inspect.getsource(integrate.loop)


def test_diffeqsolve_matches_diffrax_bit_for_bit():
    """An adaptive solve ending on a step that lands within 100 ULPs of t1."""
    term = dfx.ODETerm(lambda t, y, args: -y * (1.0 + t))
    kwargs = dict(
        stepsize_controller=dfx.PIDController(rtol=1e-4, atol=1e-6),
        saveat=dfx.SaveAt(ts=jnp.linspace(-2.0, -1e-3, 7)),
    )

    def solve(fn):
        return jax.jit(lambda y0: fn(term, dfx.Tsit5(), -2.0, -1e-3, 0.1, y0, **kwargs))(
            jnp.ones(3)
        )

    ours, theirs = solve(private.diffeqsolve), solve(dfx.diffeqsolve)
    np.testing.assert_array_equal(ours.ys, theirs.ys)
    np.testing.assert_array_equal(ours.ts, theirs.ts)
    assert int(ours.stats["num_steps"]) == int(theirs.stats["num_steps"])
    assert integrate.eqxi is eqxi  # put back
