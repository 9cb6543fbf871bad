"""Preconditioned annealed Langevin and Langevin correctors: with M the target's covariance they
sample an ill-conditioned Gaussian that the plain samplers at the same step cannot; the identity
metric reproduces the plain samplers bit for bit with the same key."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats

import scoresde as ss


def _ill_conditioned(dim=4, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    stds = np.geomspace(0.05, 1.0, dim)  # condition number 400
    cov = (q * stds**2) @ q.T
    return ss.analytic.Gaussian(jnp.asarray(rng.normal(size=dim)), jnp.asarray(cov))


SIGMAS = jnp.array([0.2, 0.1])


def _annealed(data, metric, step=0.05, steps_per_level=150):
    sde = ss.VESDE(sigma_min=0.01, sigma_max=1.0)
    score = ss.analytic.marginal_score(data, sde)
    return sde, ss.AnnealedLangevin(sde, score, SIGMAS, step, steps_per_level, metric)


@pytest.mark.parametrize("per_level", [False, True])
def test_annealed_langevin_with_the_covariance_samples_the_last_level(x64, per_level):
    """M = Cov(p_{t_L}) for every level (or M_i = Cov(p_{t_i}) per level): after 300 ULA steps
    (eps_L = 0.05, ULA's variance bias ~eps/2 = 2.5% < 5 SE = 11% at n = 4000) the samples
    match p_{t_L}'s moments; without a metric the same steps leave it far off (control)."""
    data = _ill_conditioned()
    sde, plain = _annealed(data, ss.IdentityPreconditioner())
    levels = [data.marginal(sde, t) for t in plain.times()]
    metric = (
        [ss.DensePreconditioner(lv.cov) for lv in levels]
        if per_level
        else ss.DensePreconditioner(levels[-1].cov)
    )
    _, kernel = _annealed(data, metric)
    n = 4000
    x0 = jr.normal(jr.key(0), (n, 4), jnp.float64)
    out = ss.run_langevin(kernel, x0, key=jr.key(1), num_steps=kernel.num_steps)
    last = levels[-1]
    assert stats.whitened_moments(out.x, last.mean, last.cov, n).within(5)
    base = ss.run_langevin(plain, x0, key=jr.key(1), num_steps=plain.num_steps)
    assert not stats.whitened_moments(base.x, last.mean, last.cov, n).within(5)


def test_identity_metric_reproduces_annealed_langevin_bit_for_bit():
    data = _ill_conditioned(seed=3)
    sde = ss.VESDE(sigma_min=0.01, sigma_max=1.0)
    score = ss.analytic.marginal_score(data, sde)
    x0 = jr.normal(jr.key(0), (16, 4))
    plain = ss.annealed_langevin(sde, score, x0, key=jr.key(5), sigmas=SIGMAS, steps_per_level=7)
    for metric in (
        ss.IdentityPreconditioner(),
        [ss.IdentityPreconditioner(), ss.IdentityPreconditioner()],
    ):
        out = ss.annealed_langevin(
            sde,
            score,
            x0,
            key=jr.key(5),
            sigmas=SIGMAS,
            steps_per_level=7,
            preconditioner=metric,
        )
        np.testing.assert_array_equal(out.x, plain.x)


def test_identity_metric_matches_the_unpreconditioned_annealed_formula(x64):
    """Against the annealed step as written before metrics, x + eps_i g + sqrt(2 eps_i) z, to
    rounding (eager NumPy-style loop against the jitted kernel)."""
    data = _ill_conditioned(seed=3)
    sde, kernel = _annealed(data, ss.IdentityPreconditioner(), steps_per_level=3)
    x = jr.normal(jr.key(0), (4,), jnp.float64)
    out = ss.run_langevin(kernel, x[None], key=jr.key(7), num_steps=6).x[0]
    key_0 = jr.fold_in(jr.key(7), 0)
    for j in range(6):
        level = j // 3
        t = kernel.times()[level].astype(x.dtype)
        eps = (kernel.step_size * (SIGMAS[level] / SIGMAS[-1]) ** 2).astype(x.dtype)
        z = jr.normal(jr.fold_in(key_0, j), x.shape, x.dtype)
        x = x + eps * kernel.score(t, x) + jnp.sqrt(2 * eps) * z
    np.testing.assert_allclose(out, x, rtol=1e-12, atol=1e-12)


def test_annealed_metric_bad_input():
    data = _ill_conditioned()
    with pytest.raises(ValueError, match="one preconditioner per noise level"):
        _annealed(data, [ss.IdentityPreconditioner()])
    with pytest.raises(ValueError, match="same kind"):
        _annealed(data, [ss.IdentityPreconditioner(), ss.DiagonalPreconditioner(jnp.ones(4))])
    with pytest.raises(TypeError, match="preconditioner"):
        _annealed(data, jnp.eye(4))


def _run_corrector(corrector, target_time, sde, score, x0, key):
    t = jnp.asarray(target_time, x0.dtype)
    keys = jr.split(key, x0.shape[0])
    return jax.vmap(lambda k, x: corrector(sde, score, k, x, t, t))(keys, x0)


@pytest.mark.parametrize("as_function", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_annealed_corrector_with_the_covariance_samples_p_t(x64, as_function):
    """AnnealedLangevinCorrector (a fixed step eps = 2 (snr sigma(t))^2 = 0.02 here) with
    M = Cov(p_t), fixed or as a function of t: 300 steps from p_t widened 2x match p_t's
    moments (ULA bias ~eps/2 = 1% < 5 SE = 11%); the plain corrector at the same step does not
    get there (control)."""
    data = _ill_conditioned(dim=8, seed=2)
    sde = ss.VESDE(sigma_min=0.01, sigma_max=1.0)
    score = ss.analytic.marginal_score(data, sde)
    t = 0.05
    p_t = data.marginal(sde, t)
    metric = (
        (lambda s: ss.DensePreconditioner(data.marginal(sde, s).cov))
        if as_function
        else ss.DensePreconditioner(p_t.cov)
    )
    n = 4000
    x0 = p_t.mean[None] + 2 * (p_t.sample(jr.key(0), n) - p_t.mean[None])
    snr = 0.1 / float(sde.marginal(t)[1])
    good = ss.AnnealedLangevinCorrector(snr=snr, n_steps=300, preconditioner=metric)
    x = _run_corrector(good, t, sde, score, x0, jr.key(1))
    assert stats.whitened_moments(x, p_t.mean, p_t.cov, n).within(5)
    plain = ss.AnnealedLangevinCorrector(snr=snr, n_steps=300)
    x = _run_corrector(plain, t, sde, score, x0, jr.key(1))
    assert not stats.whitened_moments(x, p_t.mean, p_t.cov, n).within(5)


def test_langevin_corrector_measures_the_score_in_the_metric(x64):
    """One LangevinCorrector step with metric M: eps = 2 (snr |z| / |g|_M)^2, |g|_M^2 = g^T M g,
    x' = x + eps M g + sqrt(2 eps) L z (a = 1 at s = t), against the formula in NumPy."""
    data = _ill_conditioned(seed=6)
    sde = ss.VESDE(sigma_min=0.01, sigma_max=1.0)
    score = ss.analytic.marginal_score(data, sde)
    m = ss.DensePreconditioner(data.cov)
    t = jnp.asarray(0.3)
    x = jr.normal(jr.key(0), (4,), jnp.float64)
    key = jr.key(3)
    out = ss.LangevinCorrector(0.2, 1, preconditioner=m)(sde, score, key, x, t, t)
    z = np.asarray(jr.normal(jr.split(key, 1)[0], (4,), jnp.float64))
    g = np.asarray(score(t, x))
    cov, chol = np.asarray(m.cov), np.asarray(m.chol)
    eps = 2 * (0.2 * np.linalg.norm(z)) ** 2 / (g @ cov @ g)
    expected = np.asarray(x) + eps * cov @ g + np.sqrt(2 * eps) * chol @ z
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(TypeError, match="must return a preconditioner"):
        ss.LangevinCorrector(0.2, 1, preconditioner=lambda s: jnp.eye(4))(sde, score, key, x, t, t)


def _old_langevin_corrector(snr, n_steps):
    """The corrector as it was before metrics: eps = 2 a^2 (snr |z| / |g|)^2, a = 1 at s = t."""

    def run(sde, score, key, x, s, t):
        def body(x, k):
            grad = score(s, x)
            z = jr.normal(k, x.shape, x.dtype)
            g_norm = jnp.maximum(jnp.sqrt(jnp.sum(grad**2)), jnp.finfo(x.dtype).tiny)
            eps = (2 * (snr * jnp.sqrt(jnp.sum(z**2)) / g_norm) ** 2).astype(x.dtype)
            return (x + eps * grad + jnp.sqrt(2 * eps) * z).astype(x.dtype), None

        return jax.lax.scan(body, x, jr.split(key, n_steps))[0]

    return run


def test_identity_metric_matches_the_unpreconditioned_corrector_formula(x64):
    """To rounding (XLA may fuse the two programs differently, so not bit for bit)."""
    data = _ill_conditioned(seed=5)
    sde = ss.VESDE(sigma_min=0.01, sigma_max=1.0)
    score = ss.analytic.marginal_score(data, sde)
    x0 = jr.normal(jr.key(0), (32, 4), jnp.float64)
    new = _run_corrector(ss.LangevinCorrector(0.1, 5), 0.3, sde, score, x0, jr.key(2))
    old = _run_corrector(_old_langevin_corrector(0.1, 5), 0.3, sde, score, x0, jr.key(2))
    np.testing.assert_allclose(new, old, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_identity_metric_reproduces_the_correctors_bit_for_bit():
    data = _ill_conditioned(seed=4)
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(data, sde)
    for cls in (ss.LangevinCorrector, ss.AnnealedLangevinCorrector):
        kw = dict(snr=0.1, n_steps=2)
        plain = ss.sample_pc(
            sde, score, key=jr.key(0), shape=(8, 4), steps=10, corrector=cls(**kw)
        ).x
        same = ss.sample_pc(
            sde,
            score,
            key=jr.key(0),
            shape=(8, 4),
            steps=10,
            corrector=cls(**kw, preconditioner=ss.IdentityPreconditioner()),
        ).x
        np.testing.assert_array_equal(same, plain)


def test_lanczos_per_level_recovers_each_levels_covariance_and_samples_with_it(x64):
    """On a Gaussian, Lanczos at rank dim - 1 with dim iterations is exact, so level i's metric is
    Cov(p_{t_i}) (to rounding) at 2 * dim evaluations a level; annealed Langevin with those
    metrics samples the last level (the identity metric with the same steps does not, as in the
    test above)."""
    data = _ill_conditioned()
    sde, plain = _annealed(data, ss.IdentityPreconditioner())
    pilot = jr.normal(jr.key(3), (16, 4), jnp.float64)
    curvs = ss.lanczos_per_level(plain, pilot, key=jr.key(4), rank=3, num_iters=4)
    assert [c.evals for c in curvs] == [8, 8]
    for curv, t in zip(curvs, plain.times(), strict=True):
        dense = np.stack([np.asarray(curv.preconditioner.apply(e)) for e in np.eye(4)], axis=1)
        np.testing.assert_allclose(dense, np.asarray(data.marginal(sde, t).cov), atol=1e-9)
    _, kernel = _annealed(data, [c.preconditioner for c in curvs])
    n = 4000
    out = ss.run_langevin(kernel, jr.normal(jr.key(0), (n, 4)), key=jr.key(1),
                          num_steps=kernel.num_steps)  # fmt: skip
    last = data.marginal(sde, plain.times()[-1])
    assert stats.whitened_moments(out.x, last.mean, last.cov, n).within(5)
    with pytest.raises(TypeError, match="AnnealedLangevin"):
        ss.lanczos_per_level(ss.UnadjustedLangevin(data.score, 0.1), pilot, key=jr.key(0), rank=2)
