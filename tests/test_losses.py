"""Score-matching objectives against analytic oracles (MATH.md, "Score matching objectives")."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats

import scoresde as ss


class FixedTime(ss.AbstractTimeSampler):
    """Every sample at the same time t (weight 1): DSM at one noise level."""

    t: float
    stratified: bool = False

    def from_uniform(self, sde, u, t_eps):
        return jnp.full_like(u, self.t), jnp.ones_like(u)


class Linear(eqx.Module):
    """score(t, x) = W x + b, ignoring t."""

    W: jax.Array
    b: jax.Array

    def __call__(self, t, x):
        return self.W @ x + self.b


MEAN = np.array([1.0, -0.5])
COV = np.array([[2.0, 0.6], [0.6, 0.5]])


def _gaussian():
    return ss.analytic.Gaussian(jnp.asarray(MEAN), jnp.asarray(COV))


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VESDE()], ids=lambda s: type(s).__name__)
def test_dsm_minimiser_over_linear_models_is_the_marginal_score(x64, sde):
    """The empirical DSM loss is quadratic in (W, b); its exact minimiser is least squares of
    -z/sigma on [x_t, 1], whose population value is W = -C^{-1}, b = C^{-1} alpha mu."""
    t = 0.3
    n = 100_000
    dist = _gaussian()
    x0 = dist.sample(jr.key(0), n)
    alpha, sigma = sde.marginal(t)
    C = alpha**2 * COV + sigma**2 * np.eye(2)
    C_inv = np.linalg.inv(C)

    def loss(theta):
        model = Linear(theta[:4].reshape(2, 2), theta[4:])
        return ss.dsm_loss(model, sde, x0, key=jr.key(1), time_sampler=FixedTime(t))

    theta0 = jnp.zeros(6)
    grad = jax.grad(loss)(theta0)
    hess = jax.hessian(loss)(theta0)
    theta = np.asarray(theta0 - jnp.linalg.solve(hess, grad))
    W, b = theta[:4].reshape(2, 2), theta[4:]
    W_true, b_true = -C_inv, C_inv @ (alpha * MEAN)
    # OLS standard errors: Var(theta) = Sigma_resid (x) E[phi phi^T]^{-1} / n with
    # phi = [x_t, 1] and Sigma_resid = Cov(score + z/sigma) = I/sigma^2 - C^{-1}.
    m = alpha * MEAN
    second = np.block([[C + np.outer(m, m), m[:, None]], [m[None, :], np.ones((1, 1))]])
    inv_second = np.linalg.inv(second)
    resid = np.eye(2) / sigma**2 - C_inv
    se_W = np.sqrt(np.outer(np.diag(resid), np.diag(inv_second)[:2]) / n)
    se_b = np.sqrt(np.diag(resid) * inv_second[2, 2] / n)
    assert np.all(np.abs(W - W_true) < 5 * se_W), (W, W_true, se_W)
    assert np.all(np.abs(b - b_true) < 5 * se_b), (b, b_true, se_b)


def test_dsm_loss_value_with_the_exact_score(x64):
    """E ||sigma s* + z||^2 = D - sigma^2 tr(C^{-1}) at a fixed t with the exact score."""
    sde, t, n = ss.VPSDE(), 0.2, 50_000
    dist = _gaussian()
    x0 = dist.sample(jr.key(0), n)
    exact = ss.analytic.marginal_score(dist, sde)
    alpha, sigma = sde.marginal(t)
    C = alpha**2 * COV + sigma**2 * np.eye(2)
    expected = 2 - sigma**2 * np.trace(np.linalg.inv(C))
    per_sample = jax.vmap(
        lambda x, k: ss.dsm_loss(exact, sde, x[None], key=k, time_sampler=FixedTime(t))
    )(x0, jr.split(jr.key(1), n))
    value = ss.dsm_loss(exact, sde, x0, key=jr.key(2), time_sampler=FixedTime(t))
    se = float(np.std(per_sample)) / math.sqrt(n)
    assert abs(float(jnp.mean(per_sample)) - expected) < 5 * se
    assert abs(float(value) - expected) < 5 * se


def test_dsm_and_explicit_gradients_agree_in_expectation(x64):
    """DSM and explicit SM (same weighting) differ by a constant: equal expected gradients."""
    sde, t, n = ss.VPSDE(), 0.4, 20_000
    dist = _gaussian()
    exact = ss.analytic.marginal_score(dist, sde)
    _, sigma = sde.marginal(t)
    model = Linear(jnp.array([[-0.3, 0.1], [0.2, -0.8]]), jnp.array([0.1, -0.2]))

    def dsm(m, x, k):
        return ss.dsm_loss(m, sde, x[None], key=k, time_sampler=FixedTime(t))

    def esm(m, x):
        score = lambda y: m(t, y)
        return sigma**2 * ss.explicit_score_matching_loss(score, x[None], lambda y: exact(t, y))

    flat = lambda g: jnp.concatenate([g.W.ravel(), g.b])
    x0 = dist.sample(jr.key(0), n)
    g_dsm = jax.vmap(lambda x, k: flat(jax.grad(dsm)(model, x, k)))(x0, jr.split(jr.key(1), n))
    xt = jax.vmap(lambda x, k: sde.perturb(k, x, t)[0])(
        dist.sample(jr.key(2), n), jr.split(jr.key(3), n)
    )
    g_esm = jax.vmap(lambda x: flat(jax.grad(esm)(model, x)))(xt)
    diff = jnp.mean(g_dsm, 0) - jnp.mean(g_esm, 0)
    se = jnp.sqrt(jnp.var(g_dsm, 0) / n + jnp.var(g_esm, 0) / n)
    assert jnp.all(jnp.abs(diff) < 5 * se), (diff, se)
    assert jnp.all(jnp.abs(jnp.mean(g_esm, 0)) > 5 * se)  # the gradient is not trivially 0


def _nonlinear_score(x):
    A = jnp.array([[1.2, 0.4], [-0.1, 0.7]])
    return -A @ x + jnp.array([0.3, -0.2]) + 0.5 * jnp.tanh(x[::-1]) * x


@pytest.mark.parametrize(
    "projection, vr",
    [("gaussian", False), pytest.param("rademacher", False, marks=pytest.mark.slow),
     pytest.param("sphere", False, marks=pytest.mark.slow), ("gaussian", True)],
)  # fmt: skip
def test_sliced_and_implicit_score_matching_agree_in_expectation(x64, projection, vr):
    n = 40_000
    dist = _gaussian()
    x_a, x_b = dist.sample(jr.key(0), n), dist.sample(jr.key(1), n)
    ism = jax.vmap(lambda x: ss.implicit_score_matching_loss(_nonlinear_score, x[None]))(x_a)
    ssm = jax.vmap(
        lambda x, k: ss.sliced_score_matching_loss(
            _nonlinear_score, x[None], key=k, projection=projection, variance_reduced=vr
        )
    )(x_b, jr.split(jr.key(2), n))
    se = math.sqrt(float(jnp.var(ism)) / n + float(jnp.var(ssm)) / n)
    assert abs(float(jnp.mean(ism) - jnp.mean(ssm))) < 5 * se
    # The batched call is the same estimator.
    batched = ss.sliced_score_matching_loss(
        _nonlinear_score, x_b, key=jr.key(3), projection=projection, variance_reduced=vr,
        num_projections=2,
    )  # fmt: skip
    assert abs(float(jnp.mean(ism) - batched)) < 5 * se


def test_implicit_is_half_explicit_up_to_a_constant(x64):
    """ISM(s1) - ISM(s2) = (ESM(s1) - ESM(s2)) / 2 on the same data."""
    n = 40_000
    dist = _gaussian()
    x = dist.sample(jr.key(0), n)
    s2 = lambda y: -y
    d_ism = jax.vmap(
        lambda y: (
            ss.implicit_score_matching_loss(_nonlinear_score, y[None])
            - ss.implicit_score_matching_loss(s2, y[None])
        )
    )(x)
    d_esm = jax.vmap(
        lambda y: (
            ss.explicit_score_matching_loss(_nonlinear_score, y[None], dist.score)
            - ss.explicit_score_matching_loss(s2, y[None], dist.score)
        )
    )(x)
    diff = d_ism - 0.5 * d_esm  # E[diff] = 0 by integration by parts
    assert stats.mean(diff, 0.0).within(5)


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.SubVPSDE(), ss.VESDE(), ss.EDMSDE()],
                         ids=lambda s: type(s).__name__)  # fmt: skip
def test_importance_time_is_unbiased_and_has_the_right_density(x64, sde):
    n, t_eps = 200_000, 1e-3
    t, w = ss.ImportanceTime().sample(jr.key(0), sde, n, t_eps)
    assert jnp.all((t >= t_eps) & (t <= sde.T))
    # E_q[w h(t)] = E_U[h(t)] for h(t) = t / T and h = 1.
    for h, expected in ((t / sde.T, 0.5 * (sde.T + t_eps) / sde.T), (jnp.ones_like(t), 1.0)):
        vals = w * h
        se = float(jnp.std(vals)) / math.sqrt(n)
        assert abs(float(jnp.mean(vals)) - expected) < 5 * se + 1e-12
    # The density is proportional to g^2 / sigma^2 = -2 lambda'(t): uniform in log-SNR.
    lam = sde.log_snr(t)
    lo, hi = sde.log_snr(jnp.asarray(t_eps)), sde.log_snr(jnp.asarray(sde.T))
    u = (lo - lam) / (lo - hi)
    assert abs(float(jnp.mean(u)) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    # g^2 w is bounded: the weight cancels the likelihood weighting's blow-up.
    lik = w * jax.vmap(ss.LikelihoodWeighting(), in_axes=(None, 0))(sde, t)
    assert jnp.all(jnp.isfinite(lik))


def test_stratified_times_cover_the_quantiles():
    n = 64
    for sampler in (ss.UniformTime(stratified=True), ss.ImportanceTime(stratified=True)):
        t, _ = sampler.sample(jr.key(0), ss.VPSDE(), n, 1e-3)
        t_sorted = jnp.sort(t)
        u = (t_sorted - 1e-3) / (1 - 1e-3) if isinstance(sampler, ss.UniformTime) else None
        if u is not None:
            # one point in each of the n strata
            np.testing.assert_array_equal(jnp.floor(u * n), jnp.arange(n))
    t1, _ = ss.UniformTime().sample(jr.key(0), ss.VPSDE(), n, 1e-3)
    assert not jnp.all(
        jnp.floor((jnp.sort(t1) - 1e-3) / (1 - 1e-3) * n) == jnp.arange(n, dtype=t1.dtype)
    )


def test_edm_time_is_lognormal_in_sigma(x64):
    n = 100_000
    t, w = ss.EDMTime(p_mean=-1.2, p_std=1.2).sample(jr.key(0), ss.EDMSDE(), n, 0.002)
    log_sigma = jnp.log(t)
    inside = (t > 0.002) & (t < 80.0)
    assert float(jnp.mean(inside)) > 0.99
    assert abs(float(jnp.median(log_sigma)) + 1.2) < 0.03
    assert jnp.all(w == 1)


def test_weightings():
    sde, t = ss.VPSDE(), jnp.asarray(0.3)
    alpha, sigma = sde.marginal(t)
    np.testing.assert_allclose(ss.SigmaSquared()(sde, t), sigma**2, rtol=1e-6)
    np.testing.assert_allclose(ss.LikelihoodWeighting()(sde, t), sde.diffusion(t) ** 2, rtol=1e-6)
    s_hat, sd = sigma / alpha, 0.5
    lam_edm = (s_hat**2 + sd**2) / (s_hat * sd) ** 2
    np.testing.assert_allclose(
        ss.EDMWeighting(sd)(sde, t), lam_edm * sigma**4 / alpha**2, rtol=1e-5
    )


def test_ncsn_loss_with_the_exact_score(x64):
    """For Gaussian data and the exact score: (1/L) sum_i (D - sigma_i^2 tr C_i^{-1}) / 2."""
    n = 50_000
    sigmas = ss.geometric_sigmas(3.0, 0.1, 5)
    dist = _gaussian()
    x0 = dist.sample(jr.key(0), n)
    sde = ss.EDMSDE(sigma_min=0.01, sigma_max=80.0)  # sigma(t) = t: score(sigma, x)
    exact = ss.analytic.marginal_score(dist, sde)
    expected = np.mean(
        [0.5 * (2 - s**2 * np.trace(np.linalg.inv(COV + s**2 * np.eye(2)))) for s in sigmas]
    )
    per = jax.vmap(lambda x, k: ss.ncsn_loss(exact, sigmas, x[None], key=k))(
        x0, jr.split(jr.key(1), n)
    )
    assert stats.mean(per, expected).within(5)
    np.testing.assert_allclose(sigmas[0], 3.0) and np.testing.assert_allclose(sigmas[-1], 0.1)


def test_losses_are_differentiable_and_scalar():
    sde = ss.VPSDE()
    model = ss.EpsPrediction(ss.MLPScoreNet(2, width=8, depth=1, key=jr.key(0)), sde)
    x0 = jr.normal(jr.key(1), (16, 2))
    for loss in (
        ss.DenoisingScoreMatching(sde),
        ss.DenoisingScoreMatching(sde, ss.LikelihoodWeighting(), ss.ImportanceTime(True), 1e-5),
        ss.DenoisingScoreMatching(sde, ss.EDMWeighting(), ss.EDMTime()),
    ):
        value, grads = eqx.filter_jit(eqx.filter_value_and_grad(loss))(model, x0, jr.key(2))
        assert value.shape == () and jnp.isfinite(value)
        assert jnp.all(jnp.isfinite(grads.net.input_layer.weight))


def test_losses_reject_bad_input():
    sde = ss.VPSDE()
    score = lambda t, x: -x
    x0 = jnp.ones((4, 2))
    with pytest.raises(ValueError, match="x0"):
        ss.dsm_loss(score, sde, jnp.ones(2), key=jr.key(0))
    with pytest.raises(TypeError, match="x0"):
        ss.dsm_loss(score, sde, jnp.ones((4, 2), int), key=jr.key(0))
    with pytest.raises(TypeError, match="weighting"):
        ss.dsm_loss(score, sde, x0, key=jr.key(0), weighting="sigma2")
    with pytest.raises(TypeError, match="time_sampler"):
        ss.dsm_loss(score, sde, x0, key=jr.key(0), time_sampler="uniform")
    with pytest.raises(ValueError, match="t_eps"):
        ss.dsm_loss(score, sde, x0, key=jr.key(0), t_eps=2.0)
    with pytest.raises(TypeError, match="sde"):
        ss.DenoisingScoreMatching("vp")
    with pytest.raises(ValueError, match="projection"):
        ss.sliced_score_matching_loss(lambda x: -x, x0, key=jr.key(0), projection="uniform")
    with pytest.raises(ValueError, match="num_projections"):
        ss.sliced_score_matching_loss(lambda x: -x, x0, key=jr.key(0), num_projections=0)
    with pytest.raises(ValueError, match="shape"):
        ss.dsm_loss(lambda t, x: x[:1], sde, x0, key=jr.key(0))
    with pytest.raises(ValueError, match="sigma_min"):
        ss.geometric_sigmas(1.0, 2.0, 5)


@pytest.mark.parametrize(
    "name, value",
    [("gaussian", ss.GaussianProjection()), ("rademacher", ss.RademacherProjection()),
     ("sphere", ss.SphereProjection())],
)  # fmt: skip
def test_projection_values_equal_their_string_aliases(name, value):
    x = jr.normal(jr.key(0), (5, 2))  # _nonlinear_score acts on 2-D samples
    loss = lambda p: ss.sliced_score_matching_loss(
        _nonlinear_score, x, key=jr.key(1), projection=p, num_projections=2
    )
    assert float(loss(name)) == float(loss(value))
    assert isinstance(value, ss.AbstractProjection)
    v = value.sample(jr.key(2), 4, (3,), jnp.float32)
    assert v.shape == (4, 3)
    if name == "sphere":
        np.testing.assert_allclose(jnp.sum(v**2, axis=1), 3.0, rtol=1e-5)
    if name == "rademacher":
        assert bool(jnp.all(jnp.abs(v) == 1))
    with pytest.raises(ValueError, match="got projection='uniform'"):
        loss("uniform")
