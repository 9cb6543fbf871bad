"""`sample_sde_adaptive`: the "Gotta Go Fast" controller on exact scores (Gaussians, a 2-D
mixture), its evaluation count, batch independence, and its errors."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import SCORE_CALLS, CountingScore, assert_no_recompile, random_gaussian

import scoresde as ss
from scoresde._sampling.adaptive_sde import sample_sde_adaptive_with_stats

N = 800


def _gaussian_run(sde, dist, score_dist=None, **kw):
    """Adaptive samples started from the exact p_T, without denoising (they target p_{t_eps}),
    and their moments' z-scores against p_{t_eps}."""
    x_T = dist.marginal(sde, sde.T).sample(jr.key(0), N)
    score = ss.analytic.marginal_score(dist if score_dist is None else score_dist, sde)
    r = ss.sample_sde_adaptive(
        sde, score, key=jr.key(1), shape=x_T.shape, x_T=x_T, denoise=False, **kw
    )
    target = dist.marginal(sde, 1e-3)
    return r, stats.moments(r.x, target.mean, target.cov)


def test_vp_gaussian_moments_and_negative_controls():
    sde, dist = ss.VPSDE(), random_gaussian(2, 2)
    r, z = _gaussian_run(sde, dist)
    assert z.within(5)
    assert len(set(np.asarray(r.nfe).tolist())) > 1  # each sample took its own steps
    # A far too loose tolerance (a handful of huge steps) fails the same check...
    loose, z = _gaussian_run(sde, dist, rtol=100.0, atol=100.0)
    assert float(loose.nfe.mean()) < 10
    assert not z.within(5)
    # ...and so does the exact score of another Gaussian (same shapes: no recompile).
    _, z = _gaussian_run(sde, dist, score_dist=random_gaussian(3, 2))
    assert not z.within(5)


@pytest.mark.slow
def test_log_snr_steps_moments_negative_control_and_steps_differ():
    """`log_snr_steps=True` (steps in the half log-SNR): VP Gaussian moments within 5 SE; the
    exact score of another Gaussian fails the same check; its steps are not the default's."""
    sde, dist = ss.VPSDE(), random_gaussian(2, 2)
    r, z = _gaussian_run(sde, dist, log_snr_steps=True)
    assert z.within(5)
    _, z = _gaussian_run(sde, dist, score_dist=random_gaussian(3, 2), log_snr_steps=True)
    assert not z.within(5)
    default, _ = _gaussian_run(sde, dist)
    assert not np.array_equal(np.asarray(r.num_steps), np.asarray(default.num_steps))


@pytest.mark.slow
def test_vp_mixture_mode_weights_log_snr_steps():
    assert _mode_weights_ok(ss.VPSDE(), ss.analytic.ring_mixture(), log_snr_steps=True)


@pytest.mark.slow
def test_ve_gaussian_moments():
    _, z = _gaussian_run(ss.VESDE(), random_gaussian(2, 2))
    assert z.within(5)


def _mode_weights_ok(sde, dist, n_se=5.0, **kw):
    r = ss.sample_sde_adaptive(
        sde, ss.analytic.marginal_score(dist, sde), key=jr.key(0), shape=(N, 2), **kw
    )
    return stats.frequencies(ss.mode_weights(dist, r.x), dist.weights, N).within(n_se)


@pytest.mark.parametrize(
    "sde", [ss.VESDE(), pytest.param(ss.VPSDE(), marks=pytest.mark.slow)], ids=["ve", "vp"]
)
def test_mixture_mode_weights(sde):
    """ring_mixture (unequal weights): mode frequencies within 5 binomial SE; a score that
    ignores the weights (equal weights, same components) fails the same check."""
    dist = ss.analytic.ring_mixture()
    assert _mode_weights_ok(sde, dist)
    equal = ss.analytic.GaussianMixture(
        jnp.full_like(dist.weights, 1 / dist.num_components), dist.means, dist.covs
    )
    r = ss.sample_sde_adaptive(
        sde, ss.analytic.marginal_score(equal, sde), key=jr.key(0), shape=(N, 2)
    )
    assert not stats.frequencies(ss.mode_weights(dist, r.x), dist.weights, N).within(5)


def test_nfe_counts_every_score_call():
    """nfe = 2 per attempted step (rejected ones included) + 1 denoising call, checked against
    the score calls actually executed (one sample per run: under vmap a finished lane still
    executes the loop body while the others run)."""
    sde = ss.VPSDE()
    score = CountingScore(ss.analytic.marginal_score(random_gaussian(2, 2), sde))
    for seed in range(3):
        SCORE_CALLS.clear()
        r, stats = sample_sde_adaptive_with_stats(
            sde, score, key=jr.key(seed), shape=(1, 2), rtol=0.02, atol=0.005
        )
        jax.block_until_ready(r.x)
        jax.effects_barrier()
        assert int(r.nfe[0]) == len(SCORE_CALLS) == 2 * int(stats.attempted[0]) + 1
        assert int(stats.accepted[0]) < int(stats.attempted[0])  # rejections were counted
        assert int(r.num_steps[0]) == int(stats.attempted[0])


def test_sample_does_not_depend_on_its_batch(x64):
    """Sample i of a batch of 8 equals sample i of a batch of 3 (float64), step counts too."""
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(random_gaussian(2, 3, jnp.float64), sde)
    big = ss.sample_sde_adaptive(sde, score, key=jr.key(4), shape=(8, 3))
    small = ss.sample_sde_adaptive(sde, score, key=jr.key(4), shape=(3, 3))
    assert big.x.dtype == jnp.float64
    np.testing.assert_allclose(big.x[:3], small.x, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(big.nfe[:3], small.nfe)
    assert not np.allclose(big.x[3], big.x[4])  # different samples differ


def test_float32_samples_do_not_depend_on_the_batch_width():
    """Step ends on a grid of quanta: in float32, where a vmap of another width rounds the score
    differently, batches of 2, 3 and 8 still read the Brownian tree at the same times and give
    the same samples and step counts (unquantised step ends drifted apart: 0.04 here)."""
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(random_gaussian(2, 3), sde)
    runs = [ss.sample_sde_adaptive(sde, score, key=jr.key(4), shape=(n, 3)) for n in (2, 3, 8)]
    for r in runs[1:]:
        np.testing.assert_allclose(r.x[:2], runs[0].x, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(r.nfe[:2], runs[0].nfe)


@pytest.mark.slow  # 2 s of compiling; the default run's moment tests sample through the tree
def test_grid_tree_has_brownian_increments(x64):
    """The sampler's path (`grid_brownian`): W(c(0)) = 0 and, over 4000 keys, the increments
    between grid points are independent N(0, c(b) - c(a)), on the default clock c(n) = n and on
    a nonlinear one (moments within 5 SE); the default clock's draws against the nonlinear
    clock's variances fail the same check."""
    from scoresde._sampling.brownian import grid_brownian

    points = jnp.array([0, 1, 12345, 40000, 65535, 65536], jnp.int32)
    clock = lambda n: 3.0 * (n.astype(jnp.float64) / 2**16) ** 2  # noqa: E731

    @jax.jit
    def draws(keys):
        def read(key):
            one = lambda n, c: grid_brownian(key, n, 16, (), jnp.float64, c)  # noqa: E731
            return jax.vmap(lambda n: jnp.stack([one(n, None), one(n, clock)]))(points)

        return jax.vmap(read)(keys)

    w = np.asarray(draws(jr.split(jr.key(0), 4000)))  # (keys, points, clocks)
    assert np.all(w[:, 0] == 0)
    inc = np.diff(w, axis=1)
    for j, c in enumerate((np.asarray(points, np.float64), np.asarray(clock(points)))):
        assert stats.moments(inc[:, :, j], np.zeros(5), np.diag(np.diff(c))).within(5)
    assert not stats.moments(inc[:, :, 0], np.zeros(5), np.diag(np.diff(c))).within(5)


SMALL = (4, 2)  # one compile shared by the tests below (same shapes, score type, dtype)


def test_same_key_same_samples_and_no_retrace():
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(random_gaussian(2, 2), sde)
    a = ss.sample_sde_adaptive(sde, score, key=jr.key(3), shape=SMALL)
    b = ss.sample_sde_adaptive(sde, score, key=jr.key(3), shape=SMALL)
    np.testing.assert_array_equal(a.x, b.x)
    other = ss.analytic.marginal_score(random_gaussian(5, 2), sde)
    key = jr.key(7)
    with assert_no_recompile():  # new score values, tolerances, h_init and max_steps
        c = ss.sample_sde_adaptive(
            sde, other, key=key, shape=SMALL, rtol=0.1, atol=0.01, h_init=0.02, max_steps=999
        )
    assert not np.allclose(a.x, c.x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rtol=-0.1), "rtol"),
        (dict(atol=0.0), "atol"),
        (dict(atol=float("nan")), "atol"),
        (dict(h_init=0.0), "h_init"),
        (dict(h_init=1e-6), "h_init"),
        (dict(max_steps=0), "max_steps"),
        (dict(t_eps=2.0), "t_eps"),
        (dict(brownian_tol=-1.0), "brownian_tol"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(random_gaussian(2, 2), sde)
    with pytest.raises(ValueError, match=match):
        ss.sample_sde_adaptive(sde, score, key=jr.key(0), shape=(2, 2), **kwargs)


def test_exhausted_max_steps_raises_with_advice_or_returns_nan():
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(random_gaussian(2, 2), sde)
    kw = dict(key=jr.key(0), shape=SMALL, max_steps=5)
    with pytest.raises(RuntimeError, match=r"4 of 4 samples used all max_steps=5.*max_steps"):
        ss.sample_sde_adaptive(sde, score, **kw)
    r = ss.sample_sde_adaptive(sde, score, throw=False, **kw)
    assert not bool(jnp.any(r.successful))
    assert bool(jnp.all(jnp.isnan(r.x)))
    assert bool(jnp.all(r.nfe == 2 * 5 + 1))


def test_non_finite_score_raises():
    """A score returning NaN (the exact score of a Gaussian with a NaN mean) stops the loop at
    once and raises, instead of shrinking the step until max_steps."""
    sde = ss.VPSDE()
    nan = ss.analytic.Gaussian(jnp.array([jnp.nan, 0.0]), jnp.eye(2))
    score = ss.analytic.marginal_score(nan, sde)
    with pytest.raises(RuntimeError, match="4 of 4 samples met a non-finite"):
        ss.sample_sde_adaptive(sde, score, key=jr.key(0), shape=SMALL)
    r = ss.sample_sde_adaptive(sde, score, key=jr.key(0), shape=SMALL, throw=False)
    assert bool(jnp.all(r.nfe == 2 * 1 + 1))  # one attempted step


@pytest.mark.slow
def test_strong_convergence_on_its_own_brownian_path(x64):
    """As rtol shrinks, each sample converges to the reverse SDE's solution on ITS Brownian path
    (a fine fixed-step Heun solve on the same grid tree, every 16th grid point): rejected steps
    retried on the same path, not on new noise. A run on another path from the same x_T is far
    from it."""
    import diffrax as dfx

    from scoresde._keys import latents_and_noise_keys
    from scoresde._sampling.adaptive_sde import LEVELS, QUANTA
    from scoresde._sampling.brownian import grid_brownian

    sde, shape = ss.VPSDE(), (4, 2)
    score = ss.analytic.marginal_score(random_gaussian(2, 2, jnp.float64), sde)
    x_T, noise_keys = latents_and_noise_keys(sde, jr.key(5), shape, None, jnp.float64)
    s0, s1 = -1.0, -1e-3
    quantum = (s1 - s0) / QUANTA
    ts = (s0 + quantum * jnp.arange(0, QUANTA + 1, 16, dtype=jnp.float64)).at[-1].set(s1)

    class GridPath(dfx.AbstractBrownianPath):
        """The sampler's path: sqrt(quantum) B(n) at grid index n = (s - s0) / quantum."""

        key: jax.Array
        levy_area: type = dfx.BrownianIncrement

        @property
        def t0(self):
            return s0

        @property
        def t1(self):
            return s1

        def evaluate(self, t0, t1=None, left=True, use_levy=False):
            def w(t):
                n = jnp.round((t - s0) / quantum).astype(jnp.int32)
                return grid_brownian(self.key, n, LEVELS, shape[1:], jnp.float64)

            return jnp.sqrt(quantum) * (w(t1) - w(t0))

    @jax.jit
    @jax.vmap
    def reference(x0, noise_key):
        terms = ss.reverse_terms(sde, score, GridPath(noise_key), origin=0.0)
        stepto = dfx.StepTo(ts=ts)
        sol = dfx.diffeqsolve(
            terms, dfx.Heun(), s0, s1, None, x0, stepsize_controller=stepto, max_steps=ts.size
        )
        return sol.ys[0]

    ref = reference(x_T, noise_keys)
    errors = []
    for rtol in (0.1, 0.01, 0.001):
        r = ss.sample_sde_adaptive(
            sde, score, key=jr.key(5), shape=shape, rtol=rtol, atol=rtol / 10, denoise=False
        )
        errors.append(float(jnp.max(jnp.abs(r.x - ref))))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.01
    other = ss.sample_sde_adaptive(
        sde, score, key=jr.key(6), shape=shape, x_T=x_T, rtol=0.001, atol=0.0001, denoise=False
    )
    assert float(jnp.max(jnp.abs(other.x - ref))) > 0.1
