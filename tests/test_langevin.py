"""Langevin kernels: MALA invariance, ULA's exact stationary law, annealed Langevin, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import SCORE_CALLS, CountingScore, assert_no_recompile

import scoresde as ss

MEAN = np.array([1.0, -2.0])
COV = np.array([[2.0, 0.6], [0.6, 1.0]])


def _target():
    return ss.analytic.Gaussian(jnp.asarray(MEAN, jnp.float32), jnp.asarray(COV, jnp.float32))


def test_mala_leaves_a_gaussian_invariant():
    """From a point mass, after 300 steps of burn-in, moments match to 5 standard errors."""
    x0 = jnp.zeros((4000, 2))
    r = ss.run_langevin(ss.MALA(_target().log_prob, 0.5), x0, key=jr.key(0), num_steps=300)
    stats.moments(r.x, MEAN, COV).check(5)
    assert 0.3 < float(r.acceptance_rate.mean()) < 1.0
    assert np.all(np.asarray(r.nfe) == 301)


def test_mala_acceptance_goes_to_one():
    target = _target()
    x0 = target.sample(jr.key(1), 512)
    rates = []
    for eps in [1.0, 0.1, 0.01, 0.001]:
        kernel = ss.MALA(target.log_prob, jnp.asarray(eps))
        r = ss.run_langevin(kernel, x0, key=jr.key(2), num_steps=20)
        rates.append(float(r.acceptance_rate.mean()))
    assert all(a < b for a, b in zip(rates[:-1], rates[1:], strict=True)), rates
    assert rates[-1] > 0.99


@pytest.mark.slow
def test_mala_with_explicit_score_matches_autodiff():
    target = _target()
    x0 = target.sample(jr.key(3), 16)
    a = ss.run_langevin(ss.MALA(target.log_prob, 0.3), x0, key=jr.key(4), num_steps=10)
    b = ss.run_langevin(
        ss.MALA(target.log_prob, 0.3, score=target.score), x0, key=jr.key(4), num_steps=10
    )
    np.testing.assert_allclose(a.x, b.x, rtol=1e-5, atol=1e-5)


def test_ula_stationary_law_is_the_known_biased_gaussian():
    r"""ULA on N(mu, S) is stationary at N(mu, S (I - eps S^{-1}/2)^{-1}) exactly."""
    eps = 0.2
    target = _target()
    x0 = target.sample(jr.key(5), 4000)
    r = ss.run_langevin(ss.UnadjustedLangevin(target.score, eps), x0, key=jr.key(6), num_steps=200)
    lam, u = np.linalg.eigh(COV)
    biased = (u * (lam / (1 - eps / (2 * lam)))) @ u.T
    stats.moments(r.x, MEAN, biased).check(5)
    # ... and the bias is detectable: the unbiased covariance is rejected.
    assert not np.allclose(np.cov(np.asarray(r.x).T), COV, atol=0.05)


def test_chains_do_not_depend_on_the_batch():
    target = _target()
    x0 = target.sample(jr.key(7), 8)
    kernel = ss.MALA(target.log_prob, 0.4)
    a = ss.run_langevin(kernel, x0, key=jr.key(8), num_steps=15)
    b = ss.run_langevin(kernel, x0[:3], key=jr.key(8), num_steps=15)
    np.testing.assert_allclose(a.x[:3], b.x, rtol=1e-6, atol=1e-6)


def test_kernels_are_jittable_and_vmappable():
    target = _target()
    kernel = ss.UnadjustedLangevin(target.score, 0.1)

    @jax.jit
    def two_steps(key, x):
        state = kernel.init(x)
        state, info = kernel.step(key, state)
        state, info = kernel.step(jr.fold_in(key, 1), state)
        return state, info

    keys = jr.split(jr.key(0), 5)
    state, info = jax.vmap(two_steps)(keys, jnp.zeros((5, 2)))
    assert isinstance(state, ss.LangevinState) and isinstance(info, ss.LangevinInfo)
    assert state.x.shape == (5, 2) and state.score.shape == (5, 2)
    np.testing.assert_allclose(state.score, jax.vmap(target.score)(state.x), rtol=1e-5)
    mstate = ss.MALA(target.log_prob, 0.1).init(jnp.zeros(2))
    assert isinstance(mstate, ss.MALAState)


def test_annealed_langevin_recovers_mode_weights():
    """NCSN on 0.2 N((-5,-5), I) + 0.8 N((5,5), I) from uniform points: weights 0.2 / 0.8."""
    mix = ss.analytic.GaussianMixture(
        jnp.array([0.2, 0.8]), jnp.array([[-5.0, -5.0], [5.0, 5.0]]), jnp.stack([jnp.eye(2)] * 2)
    )
    sde = ss.EDMSDE(0.01, 20.0)
    n = 2000
    x = jr.uniform(jr.key(0), (n, 2), minval=-8.0, maxval=8.0)
    r = ss.annealed_langevin(
        sde,
        ss.analytic.marginal_score(mix, sde),
        x,
        key=jr.key(1),
        sigmas=ss.geometric_sigmas(20.0, 1.0, 10),
        step_size=0.1,
        steps_per_level=50,
    )
    frac = float(jnp.mean(r.x.sum(axis=1) < 0))
    assert abs(frac - 0.2) < 5 * np.sqrt(0.2 * 0.8 / n)
    assert np.all(np.asarray(r.nfe) == 10 * 50 + 1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ss.UnadjustedLangevin(_target().score, 0.0),
        lambda: ss.UnadjustedLangevin(_target().score, -0.1),
        lambda: ss.MALA(_target().log_prob, -1.0),
        lambda: ss.AnnealedLangevin(ss.EDMSDE(), lambda t, x: -x, jnp.array([1.0, 0.5]), 0.0, 5),
    ],
)
def test_non_positive_step_size_raises(make):
    with pytest.raises(ValueError, match="step_size"):
        make()


@pytest.mark.parametrize(
    "sigmas",
    [[1.0, 2.0, 0.5], [1.0, 1.0], [1.0, 0.0], [1.0, -0.5]],
    ids=["increasing", "flat", "zero", "negative"],
)
def test_bad_sigma_ladder_raises(sigmas):
    with pytest.raises(ValueError, match="sigmas"):
        ss.AnnealedLangevin(ss.EDMSDE(), lambda t, x: -x, jnp.asarray(sigmas), 0.1, 5)


def test_other_bad_input():
    score = lambda t, x: -x
    with pytest.raises(ValueError, match="steps_per_level"):
        ss.AnnealedLangevin(ss.EDMSDE(), score, jnp.array([2.0, 1.0]), 0.1, 0)
    with pytest.raises(TypeError, match="sde"):
        ss.AnnealedLangevin("ve", score, jnp.array([2.0, 1.0]), 0.1, 1)
    kernel = ss.UnadjustedLangevin(_target().score, 0.1)
    with pytest.raises(ValueError, match="num_steps"):
        ss.run_langevin(kernel, jnp.zeros((2, 2)), key=jr.key(0), num_steps=-1)
    with pytest.raises(ValueError, match="batch"):
        ss.run_langevin(kernel, jnp.zeros(2), key=jr.key(0), num_steps=1)
    with pytest.raises(TypeError, match="kernel"):
        ss.run_langevin(object(), jnp.zeros((2, 2)), key=jr.key(0), num_steps=1)
    with pytest.raises(ValueError, match="shape"):
        ss.run_langevin(
            ss.UnadjustedLangevin(lambda x: x[:1], 0.1),
            jnp.zeros((2, 2)),
            key=jr.key(0),
            num_steps=1,
        )


def test_no_retrace():
    """New step sizes, targets, starts and keys reuse the compiled kernels."""
    target = _target()
    x0 = jnp.zeros((4, 2))
    ss.run_langevin(ss.MALA(target.log_prob, 0.1), x0, key=jr.key(0), num_steps=5)
    other = ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2))
    kernel, x1, key1 = ss.MALA(other.log_prob, 0.3), x0 + 1, jr.key(1)
    with assert_no_recompile():
        ss.run_langevin(kernel, x1, key=key1, num_steps=5)

    sde = ss.EDMSDE()

    class Score(eqx.Module):
        def __call__(self, t, x):
            return -x / (1 + t**2)

    kw = dict(step_size=0.1, steps_per_level=2)
    ss.annealed_langevin(sde, Score(), x0, key=jr.key(0), sigmas=jnp.array([3.0, 1.0]), **kw)
    sigmas, key2 = jnp.array([5.0, 2.0]), jr.key(2)
    with assert_no_recompile():
        ss.annealed_langevin(sde, Score(), x1, key=key2, sigmas=sigmas, **kw)


def test_example_annealed_langevin(tmp_path):
    """The classic experiment: Langevin misplaces the weights, annealed Langevin and the reverse
    SDE recover 0.2 / 0.8 (5 standard errors)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "examples" / "annealed_langevin.py"
    spec = importlib.util.spec_from_file_location("annealed_langevin_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    n = 2000
    out = tmp_path / "al.png"
    res = example.main(num=n, langevin_steps=300, steps_per_level=50, sde_steps=200, out=str(out))
    se = np.sqrt(0.2 * 0.8 / n)
    assert abs(res["annealed_langevin"] - 0.2) < 5 * se
    assert abs(res["reverse_sde"] - 0.2) < 5 * se
    assert res["langevin"] > 0.2 + 10 * se  # stuck in the starting basins: about 0.5
    assert out.exists() and out.stat().st_size > 0


def test_nfe_is_the_executed_score_calls():
    """ULA: one evaluation at init and one per step; annealed Langevin: one per step plus the
    denoising step. Counted by real executions."""
    g = ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2))
    counting = CountingScore(lambda t, x: g.score(x))
    SCORE_CALLS.clear()
    kernel = ss.UnadjustedLangevin(lambda x: counting(None, x), 0.1)
    r = ss.run_langevin(kernel, jnp.zeros((1, 2)), key=jr.key(0), num_steps=4)
    jax.effects_barrier()
    assert int(r.nfe[0]) == len(SCORE_CALLS) == 1 + 4
    sde = ss.VESDE()
    score = CountingScore(ss.analytic.marginal_score(g, sde))
    SCORE_CALLS.clear()
    r = ss.annealed_langevin(
        sde, score, jnp.zeros((1, 2)), key=jr.key(0), sigmas=[1.0, 0.5, 0.1], steps_per_level=2
    )
    jax.effects_barrier()
    assert int(r.nfe[0]) == len(SCORE_CALLS) == 3 * 2 + 1
