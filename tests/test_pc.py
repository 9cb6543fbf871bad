"""Predictor-corrector sampling with the exact score of a Gaussian mixture."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import SCORE_CALLS, CountingScore, assert_no_recompile

import scoresde as ss

N = 2000


def _mixture():
    return ss.analytic.GaussianMixture(
        jnp.array([0.3, 0.7]),
        jnp.array([[-2.0, 0.0], [2.0, 1.0]]),
        jnp.stack([jnp.array([[0.5, 0.2], [0.2, 0.4]]), jnp.array([[0.3, -0.1], [-0.1, 0.6]])]),
    )


def _check_mixture_moments(x, mix, k=5.0):
    """Mean, covariance (standard errors from the samples' fourth moments) and mode weights
    within k standard errors (n = len(x))."""
    x = np.asarray(x, np.float64)
    stats.moments(x, mix.mean, mix.cov, cov_se="empirical").check(k)
    frac = np.mean(x[:, 0] < 0)  # the components are split by x_0 = 0
    stats.frequencies(frac, mix.weights[0], len(x)).check(k)


CASES = [
    (ss.VPSDE(), ss.ReverseDiffusion(), ss.LangevinCorrector(0.01, 1)),
    (ss.VESDE(sigma_max=20.0), ss.Ancestral(), ss.AnnealedLangevinCorrector(0.16, 1)),
    (ss.VPSDE(), ss.EulerMaruyama(), None),
]
SLOW_CASES = [
    (ss.VESDE(sigma_max=20.0), ss.ReverseDiffusion(), ss.LangevinCorrector(0.05, 1)),
    (ss.VPSDE(), ss.Ancestral(), ss.AnnealedLangevinCorrector(0.05, 2)),
    (ss.SubVPSDE(), ss.ReverseDiffusion(), None),
    (ss.EDMSDE(sigma_max=20.0), ss.Ancestral(), ss.LangevinCorrector(0.05, 1)),
]


def _run(sde, predictor, corrector, steps=200):
    mix = _mixture()
    x_T = mix.marginal(sde, sde.T).sample(jr.key(5), N)  # the exact p_T, not the prior
    r = ss.sample_pc(
        sde,
        ss.analytic.marginal_score(mix, sde),
        key=jr.key(0),
        shape=(N, 2),
        predictor=predictor,
        corrector=corrector,
        steps=steps,
        x_T=x_T,
        t_eps=1e-3 if not isinstance(sde, ss.EDMSDE) else 0.01,
    )
    return mix, r


@pytest.mark.parametrize("sde,predictor,corrector", CASES, ids=["vp-rd-l", "ve-anc-al", "vp-em"])
def test_pc_reproduces_mixture(sde, predictor, corrector):
    mix, r = _run(sde, predictor, corrector)
    _check_mixture_moments(r.x, mix)
    per_step = 1 + (corrector.n_steps if corrector is not None else 0)
    assert np.all(np.asarray(r.nfe) == 200 * per_step + 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sde,predictor,corrector", SLOW_CASES, ids=["ve-rd-l", "vp-anc-al2", "subvp-rd", "edm-anc-l"]
)
def test_pc_reproduces_mixture_slow(sde, predictor, corrector):
    mix, r = _run(sde, predictor, corrector, steps=400)
    _check_mixture_moments(r.x, mix)


def test_nfe_is_exact():
    sde = ss.VESDE()
    score = CountingScore(ss.analytic.marginal_score(_mixture(), sde))
    SCORE_CALLS.clear()
    r = ss.sample_pc(
        sde, score, key=jr.key(0), shape=(1, 2), steps=3, corrector=ss.LangevinCorrector(0.1, 2)
    )
    jax.effects_barrier()
    assert int(r.nfe[0]) == len(SCORE_CALLS) == 3 * 3 + 1


def test_samples_do_not_depend_on_the_batch():
    """Per-sample corrector step sizes: sample i is the same in any batch."""
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(_mixture(), sde)
    kw = dict(key=jr.key(3), steps=20, corrector=ss.LangevinCorrector(0.05, 2))
    a = ss.sample_pc(sde, score, shape=(16, 2), **kw)
    b = ss.sample_pc(sde, score, shape=(3, 2), **kw)
    np.testing.assert_allclose(a.x[:3], b.x, rtol=1e-5, atol=1e-5)


def test_bad_input():
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(_mixture(), sde)
    for make in [
        lambda: ss.LangevinCorrector(0.0),
        lambda: ss.LangevinCorrector(-0.1),
        lambda: ss.AnnealedLangevinCorrector(0.0),
    ]:
        with pytest.raises(ValueError, match="snr"):
            make()
    with pytest.raises(ValueError, match="n_steps"):
        ss.LangevinCorrector(0.1, 0)
    with pytest.raises(TypeError, match="predictor"):
        ss.sample_pc(sde, score, key=jr.key(0), shape=(2, 2), predictor="euler")
    with pytest.raises(TypeError, match="corrector"):
        ss.sample_pc(sde, score, key=jr.key(0), shape=(2, 2), corrector=ss.EulerMaruyama())
    with pytest.raises(ValueError, match="steps"):
        ss.sample_pc(sde, score, key=jr.key(0), shape=(2, 2), steps=0)
    with pytest.raises(ValueError, match="t_eps"):
        ss.sample_pc(sde, score, key=jr.key(0), shape=(2, 2), t_eps=2.0)
    with pytest.raises(ValueError, match="grid"):
        ss.sample_pc(sde, score, key=jr.key(0), shape=(2, 2), grid="cosine")
    with pytest.raises(ValueError, match="x_T"):
        ss.sample_pc(sde, score, key=jr.key(0), shape=(2, 2), x_T=jnp.zeros((3, 2)))


def test_no_retrace():
    sde = ss.VESDE()

    def make(shift):
        mix = _mixture()
        return ss.analytic.marginal_score(
            eqx.tree_at(lambda m: m.means, mix, mix.means + shift), sde
        )

    corrector = ss.LangevinCorrector(jnp.asarray(0.1), 1)
    ss.sample_pc(
        sde, make(0.0), key=jr.key(0), shape=(4, 2), steps=5, corrector=corrector, t_eps=1e-3
    )
    corrector = ss.LangevinCorrector(jnp.asarray(0.2), 1)
    score, key = make(1.0), jr.key(1)
    with assert_no_recompile():
        ss.sample_pc(sde, score, key=key, shape=(4, 2), steps=5, corrector=corrector, t_eps=2e-3)


class _PlainAnnealedCorrector(ss.AbstractCorrector):
    """AnnealedLangevinCorrector's step without the preconditioner capability: moves in M = I."""

    snr: float = 0.1
    n_steps: int = eqx.field(static=True, default=1)

    def step_size(self, sde, s, t, x, grad, z, metric):
        a = sde.marginal(s)[0] / sde.marginal(t)[0]
        return 2 * a**2 * (self.snr * sde.marginal(s)[1]) ** 2


def test_a_corrector_without_a_preconditioner_moves_in_the_identity_metric():
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(_mixture(), sde)
    kw = dict(key=jr.key(5), shape=(4, 2), steps=4, grid=ss.LogSNRGrid())
    plain = ss.sample_pc(sde, score, corrector=_PlainAnnealedCorrector(), **kw)
    assert not isinstance(_PlainAnnealedCorrector(), ss.AbstractPreconditionedCorrector)
    assert isinstance(ss.AnnealedLangevinCorrector(), ss.AbstractPreconditionedCorrector)
    named = ss.sample_pc(sde, score, corrector=ss.AnnealedLangevinCorrector(0.1), **kw)
    np.testing.assert_allclose(plain.x, named.x, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="grid"):
        ss.sample_pc(sde, score, key=jr.key(0), shape=(2, 2), grid=7)
