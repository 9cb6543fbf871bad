import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import stats
from helpers import (
    EXTRA_SDE_IDS,
    EXTRA_SDES,
    SCORE_CALLS,
    SDE_IDS,
    SDE_SOLVER_IDS,
    SDE_SOLVERS,
    SDES,
    CountingScore,
    assert_no_recompile,
    random_gaussian,
    slow_except,
)

import scoresde as ss

# ----------------------------------------------------------------------------- PF-ODE accuracy


# VP and DDPM (its jump_ts) by default; the other SDEs in the slow run.
@pytest.mark.parametrize(
    "sde", slow_except(SDES + EXTRA_SDES, SDE_IDS + EXTRA_SDE_IDS, fast=("vp", "ddpm"))
)
def test_pf_ode_matches_exact_gaussian_flow(x64, sde):
    """Tsit5 at rtol 1e-7 in float64 reproduces the exact flow map to 1e-5.

    DDPMSDE's beta jumps at every t_n = n/N, so the controller steps onto those jumps
    (`jump_ts` in sample_ode's solver time s = -t)."""
    jump_ts = None
    if isinstance(sde, ss.DDPMSDE):
        jump_ts = -jnp.arange(sde.num_steps, -1, -1, dtype=jnp.float64) / sde.num_steps
    dist = random_gaussian(0, 3, jnp.float64)
    t_eps = 1e-3 * sde.T
    x_T = dist.marginal(sde, sde.T).sample(jr.key(1), 16)
    result = ss.sample_ode(
        sde,
        ss.analytic.marginal_score(dist, sde),
        key=jr.key(2),
        shape=x_T.shape,
        x_T=x_T,
        t_eps=t_eps,
        stepsize_controller=dfx.PIDController(rtol=1e-7, atol=1e-7, jump_ts=jump_ts),
    )
    expected = jax.vmap(lambda x: dist.probability_flow(sde, sde.T, t_eps, x))(x_T)
    assert result.x.dtype == jnp.float64
    assert jnp.max(jnp.abs(result.x - expected)) < 1e-5


def test_pf_ode_fixed_grids_converge(x64):
    """More steps on each grid bring the fixed-step solution closer to the exact map."""
    sde = ss.VPSDE()
    dist = random_gaussian(1, 2, jnp.float64)
    score = ss.analytic.marginal_score(dist, sde)
    x_T = dist.marginal(sde, sde.T).sample(jr.key(0), 8)
    expected = jax.vmap(lambda x: dist.probability_flow(sde, sde.T, 1e-3, x))(x_T)
    for grid in ["uniform", "log_snr", "karras"]:
        errs = []
        for steps in [10, 40]:
            r = ss.sample_ode(
                sde,
                score,
                key=jr.key(0),
                shape=x_T.shape,
                x_T=x_T,
                t_eps=1e-3,
                solver=dfx.Heun(),
                steps=steps,
                grid=grid,
            )
            errs.append(float(jnp.max(jnp.abs(r.x - expected))))
        assert errs[1] < errs[0] / 8, (grid, errs)  # second order: 16x in theory


# ----------------------------------------------------------------------------- reverse SDE statistics


SDE_STEPS = {"euler": 500, "heun": 200, "reversible_heun": 200, "sra1": 200, "shark": 200}


# Euler by default; every solver (and every SDE) in the slow run.
@pytest.mark.parametrize("solver", slow_except(SDE_SOLVERS, SDE_SOLVER_IDS, fast=("euler",)))
def test_reverse_sde_reproduces_gaussian_moments(solver, request):
    sde = ss.VPSDE()
    dist = random_gaussian(2, 2)
    n, t_eps = 4000, 1e-3
    x_T = dist.marginal(sde, sde.T).sample(jr.key(0), n)
    steps = SDE_STEPS[request.node.callspec.id]
    r = ss.sample_sde(
        sde,
        ss.analytic.marginal_score(dist, sde),
        key=jr.key(1),
        shape=x_T.shape,
        x_T=x_T,
        solver=solver,
        steps=steps,
        t_eps=t_eps,
        denoise=False,
    )
    target = dist.marginal(sde, t_eps)
    assert stats.moments(r.x, target.mean, target.cov).within(5)


def test_negative_control_pf_drift_without_half_fails():
    """Integrating dx = [f x - g^2 score] dt with NO noise (the PF-ODE without its 1/2)
    collapses the spread: the same moment check must reject it."""
    sde = ss.VPSDE()
    dist = random_gaussian(2, 2)
    n, t_eps = 4000, 1e-3
    x_T = dist.marginal(sde, sde.T).sample(jr.key(0), n)
    score = ss.analytic.marginal_score(dist, sde)
    wrong = ss._terms.ReverseDrift(sde, ss._terms.BatchedScore(score))  # drift with g^2, no 1/2
    s_grid = sde.T - ss.time_grid(sde, 200, t_eps=t_eps)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(wrong),
        dfx.Heun(),
        s_grid[0],
        s_grid[-1],
        None,
        x_T,
        stepsize_controller=dfx.StepTo(ts=s_grid),
        max_steps=200,
    )
    target = dist.marginal(sde, t_eps)
    assert not stats.moments(sol.ys[0], target.mean, target.cov).within(5)
    # ...while the correct PF-ODE on the same grid passes it.
    r = ss.sample_ode(
        sde,
        score,
        key=jr.key(1),
        shape=x_T.shape,
        x_T=x_T,
        solver=dfx.Heun(),
        steps=200,
        t_eps=t_eps,
    )
    assert stats.moments(r.x, target.mean, target.cov).within(5)


@pytest.mark.parametrize("sde", [ss.VPSDE(), ss.VESDE()], ids=["vp", "ve"])
def test_reverse_sde_recovers_mixture_mode_weights(sde):
    dist = ss.analytic.ring_mixture()
    n = 4000
    r = ss.sample_sde(
        sde,
        ss.analytic.marginal_score(dist, sde),
        key=jr.key(0),
        shape=(n, 2),
        solver=dfx.Euler(),
        steps=500,
        grid="log_snr",
    )
    comp = jnp.argmax(jax.vmap(dist.responsibilities)(r.x), axis=1)
    freq = jnp.bincount(comp, length=dist.num_components) / n
    assert jnp.max(jnp.abs(freq - dist.weights)) < 0.03


@pytest.mark.slow
@pytest.mark.parametrize("solver", SDE_SOLVERS, ids=SDE_SOLVER_IDS)
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_reverse_sde_moments_every_sde_and_solver(sde, solver):
    """All SDE x solver pairs on a log-SNR grid (EDM's span needs it)."""
    dist = random_gaussian(4, 2)
    n, t_eps = 4000, sde.default_t_eps
    x_T = dist.marginal(sde, sde.T).sample(jr.key(0), n)
    r = ss.sample_sde(
        sde,
        ss.analytic.marginal_score(dist, sde),
        key=jr.key(1),
        shape=x_T.shape,
        x_T=x_T,
        solver=solver,
        steps=500,
        t_eps=t_eps,
        grid="log_snr",
        denoise=False,
    )
    target = dist.marginal(sde, t_eps)
    assert stats.moments(r.x, target.mean, target.cov).within(5)


@pytest.mark.slow
def test_adaptive_sde_sampling_with_shark(x64):
    sde = ss.VPSDE()
    dist = random_gaussian(2, 2, jnp.float64)
    n = 1000
    x_T = dist.marginal(sde, sde.T).sample(jr.key(0), n)
    r = ss.sample_sde(
        sde,
        ss.analytic.marginal_score(dist, sde),
        key=jr.key(1),
        shape=x_T.shape,
        x_T=x_T,
        solver=dfx.ShARK(),
        steps=50,
        denoise=False,
        stepsize_controller=dfx.PIDController(rtol=1e-2, atol=1e-2),
    )
    target = dist.marginal(sde, 1e-3)
    assert stats.moments(r.x, target.mean, target.cov).within(5)
    assert len(set(np.asarray(r.num_steps).tolist())) > 1  # each sample took its own steps


# ----------------------------------------------------------------------------- strong order


@pytest.mark.slow
def test_euler_maruyama_strong_order_one(x64):
    """EM on the reverse VP SDE (additive noise) has strong order 1: log-log slope of the
    RMS error against a fine solution on the same Brownian path."""
    sde = ss.VPSDE()
    dist = random_gaussian(5, 2, jnp.float64)
    score = ss.analytic.marginal_score(dist, sde)
    s_end = sde.T - 0.05

    @jax.jit
    def solve(key, x0, dt):
        path = dfx.VirtualBrownianTree(0.0, s_end, 1e-5, (2,), key)
        terms = ss.reverse_terms(sde, score, path)
        sol = dfx.diffeqsolve(terms, dfx.Euler(), 0.0, s_end, dt, x0, max_steps=2**14)
        return sol.ys[0]

    keys = jr.split(jr.key(0), 100)
    x0s = dist.marginal(sde, sde.T).sample(jr.key(1), 100)

    def errs_for(dt):
        return jax.vmap(lambda k, x: solve(k, x, dt))(keys, x0s)

    reference = errs_for(s_end / 2**11)
    hs = np.array([s_end / 2**k for k in range(3, 8)])
    errors = np.array(
        [float(jnp.sqrt(jnp.mean(jnp.sum((errs_for(h) - reference) ** 2, -1)))) for h in hs]
    )
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert 0.85 < slope < 1.2, (slope, errors)


# ----------------------------------------------------------------------------- determinism, nfe


@pytest.mark.parametrize(
    "dtype, tol",
    [(jnp.float32, 1e-4), pytest.param(jnp.float64, 1e-12, marks=pytest.mark.slow)],
)
def test_same_key_same_samples_and_batch_independence(dtype, tol):
    """Sample i depends on fold_in(key, i) only: up to rounding (batched matmuls may sum
    in another order), the first 5 of 12 samples are the 5 of a batch of 5."""
    if dtype == jnp.float64:
        jax.config.update("jax_enable_x64", True)
    try:
        _check_batch_independence(dtype, tol)
    finally:
        jax.config.update("jax_enable_x64", False)


def _check_batch_independence(dtype, tol):
    sde = ss.VPSDE()
    dist = random_gaussian(6, 2, dtype)
    score = ss.analytic.marginal_score(dist, sde)
    for sampler, kw in [
        (ss.sample_sde, dict(steps=50)),
        (ss.sample_ode, dict(steps=20)),
        (ss.sample_ode, dict()),
    ]:
        a = sampler(sde, score, key=jr.key(3), shape=(12, 2), **kw).x
        b = sampler(sde, score, key=jr.key(3), shape=(12, 2), **kw).x
        c = sampler(sde, score, key=jr.key(3), shape=(5, 2), **kw).x
        assert jnp.array_equal(a, b)
        assert jnp.allclose(a[:5], c, rtol=tol, atol=tol)
        assert not jnp.allclose(a[0], a[1])


@pytest.mark.parametrize(
    "sampler, kw",
    [
        (ss.sample_ode, dict(solver=dfx.Tsit5())),
        pytest.param(
            ss.sample_ode,
            dict(solver=dfx.Dopri5(), stepsize_controller=dfx.PIDController(rtol=1e-6, atol=1e-6)),
            marks=pytest.mark.slow,
        ),
        pytest.param(ss.sample_ode, dict(solver=dfx.Heun(), steps=7), marks=pytest.mark.slow),
        (ss.sample_ode, dict(solver=dfx.Bosh3(), steps=5, denoise=True)),
        pytest.param(
            ss.sample_ode, dict(solver=dfx.ReversibleHeun(), steps=6), marks=pytest.mark.slow
        ),
        (ss.sample_sde, dict(solver=dfx.Euler(), steps=9)),
        pytest.param(ss.sample_sde, dict(solver=dfx.ShARK(), steps=4), marks=pytest.mark.slow),
        pytest.param(
            ss.sample_sde,
            dict(
                solver=dfx.SRA1(),
                steps=50,
                stepsize_controller=dfx.PIDController(rtol=1e-2, atol=1e-2),
            ),
            marks=pytest.mark.slow,
        ),
    ],
)  # by default: adaptive and fixed-step (FSAL, denoised) ODE, fixed-step SDE
def test_nfe_counts_every_score_evaluation(sampler, kw):
    """`nfe` equals the number of score calls actually executed (rejected steps included)."""
    sde = ss.VPSDE()
    score = CountingScore(ss.analytic.marginal_score(random_gaussian(0, 2), sde))
    SCORE_CALLS.clear()
    r = sampler(sde, score, key=jr.key(0), shape=(1, 2), **kw)
    jax.effects_barrier()
    assert int(r.nfe[0]) == len(SCORE_CALLS) > 0


def test_no_retrace_for_new_values():
    sde = ss.VPSDE()

    def make(seed):
        return ss.analytic.marginal_score(random_gaussian(seed, 2), sde)

    for sampler, kw in [(ss.sample_sde, dict(steps=10)), (ss.sample_ode, dict())]:
        sampler(sde, make(0), key=jr.key(0), shape=(4, 2), t_eps=1e-3, **kw)
        score, key = make(1), jr.key(1)
        with assert_no_recompile():  # new key, new t_eps, new score parameters: no retrace
            sampler(sde, score, key=key, shape=(4, 2), t_eps=2e-3, **kw)
        x_T = jnp.ones((4, 2))
        sampler(sde, make(2), key=jr.key(2), shape=(4, 2), t_eps=3e-3, x_T=x_T, **kw)
        score, key, x_T = make(3), jr.key(3), 2 * x_T
        with assert_no_recompile():
            sampler(sde, score, key=key, shape=(4, 2), t_eps=4e-3, x_T=x_T, **kw)


# ----------------------------------------------------------------------------- bad input


def _score(sde):
    return ss.analytic.marginal_score(random_gaussian(0, 2), sde)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(t_eps=0.0), ValueError, "t_eps"),
        (dict(t_eps=1.5), ValueError, "t_eps"),
        (dict(steps=0), ValueError, "steps"),
        (dict(steps=2.5), TypeError, "steps"),
        (dict(shape=(4,)), ValueError, "shape"),
        (dict(x_T=jnp.full((4, 2), jnp.nan)), ValueError, "x_T"),
        (dict(x_T=jnp.ones((3, 2))), ValueError, "x_T"),
        (dict(grid="cosine"), ValueError, "grid"),
        (dict(solver="euler"), TypeError, "solver"),
    ],
)
@pytest.mark.parametrize("sampler", [ss.sample_ode, ss.sample_sde], ids=["ode", "sde"])
def test_bad_arguments_raise(sampler, kwargs, exc, match):
    sde = ss.VPSDE()
    base = dict(key=jr.key(0), shape=(4, 2), steps=5)
    base.update(kwargs)
    with pytest.raises(exc, match=match):
        sampler(sde, _score(sde), **base)


def test_score_with_wrong_shape_raises():
    sde = ss.VPSDE()
    with pytest.raises(ValueError, match="score"):
        ss.sample_ode(sde, lambda t, x: x[:1], key=jr.key(0), shape=(4, 2), steps=3)
    with pytest.raises(TypeError, match="dtype"):
        ss.sample_sde(sde, lambda t, x: x.astype(jnp.int32), key=jr.key(0), shape=(4, 2), steps=3)


def test_failed_solve_raises_with_advice():
    sde = ss.VPSDE()
    with pytest.raises(RuntimeError, match="t_eps"):
        ss.sample_ode(
            sde,
            _score(sde),
            key=jr.key(0),
            shape=(2, 2),
            max_steps=3,
            stepsize_controller=dfx.PIDController(rtol=1e-9, atol=1e-9),
        )


def test_unstable_fixed_steps_raise_instead_of_nan():
    sde = ss.VPSDE()
    with pytest.raises(FloatingPointError, match="not finite"):
        ss.sample_ode(
            sde, lambda t, x: 1e30 * x**3, key=jr.key(0), shape=(2, 2), steps=3, solver=dfx.Euler()
        )


def test_per_sample_conditioning_reaches_the_score():
    """`cond=` hands sample i its own conditioning: a score shifted by a per-sample offset c_i
    (the data N(c_i, I)) gives samples whose mean follows c_i, identically to sampling each
    offset alone; a cond of the wrong length is refused."""
    sde = ss.VPSDE()

    def score(t, x, c):
        alpha, sigma = sde.marginal(t)
        return -(x - alpha * c) / (alpha**2 + sigma**2)

    cond = jnp.array([[-3.0, 0.0], [3.0, 1.0]], jnp.float32)
    kw = dict(key=jr.key(0), shape=(2, 2), steps=8, solver=ss.DPMSolverPP2M())
    both = ss.sample_ode(sde, score, cond=cond, **kw)
    # Sample i with cond_i equals sample i of an unconditional run whose score has c_i built in.
    for i in range(2):
        fixed = ss.sample_ode(sde, lambda t, x, c=cond[i]: score(t, x, c), **kw)
        np.testing.assert_allclose(both.x[i], fixed.x[i], rtol=1e-5, atol=1e-5)
    assert float(both.x[0, 0]) < -1 and float(both.x[1, 0]) > 1
    for sampler in (
        lambda: ss.sample_sde(sde, score, key=jr.key(1), shape=(2, 2), steps=4, cond=cond),
        lambda: ss.sample_pc(sde, score, key=jr.key(1), shape=(2, 2), steps=4, cond=cond),
        lambda: ss.sample_edm(ss.EDMSDE(), score, key=jr.key(1), shape=(2, 2), steps=4, cond=cond),
        lambda: ss.sample_ode(sde, score, key=jr.key(1), shape=(2, 2), cond=cond),
    ):
        assert bool(jnp.all(jnp.isfinite(sampler().x)))
    with pytest.raises(ValueError, match="cond"):
        ss.sample_ode(sde, score, cond=cond[:1], **kw)


# ----------------------------------------------------------------------------- batch guarantee

_BATCH_SAMPLERS = [
    (ss.sample_sde, dict(solver=dfx.Euler(), steps=20)),
    (ss.sample_sde, dict(solver=dfx.ShARK(), steps=10)),
    (ss.sample_ode, dict(solver=dfx.Heun(), steps=10)),
    (ss.sample_ode, dict()),  # adaptive Tsit5
]
_BATCH_IDS = ["sde-euler", "sde-shark", "ode-heun", "ode-adaptive"]


@pytest.mark.parametrize(
    "sampler, kw",
    [pytest.param(*p, id=i, marks=pytest.mark.slow if i in ("sde-shark", "ode-heun") else ())
     for p, i in zip(_BATCH_SAMPLERS, _BATCH_IDS, strict=True)],
)  # fmt: skip
def test_sample_does_not_depend_on_its_batch(sampler, kw):
    """The documented guarantee: sample `i` draws from `fold_in(key, i)` only, and the samplers
    themselves (draws, solver steps, step-size control) treat it the same in any batch.

    The score `-x` (the exact score of N(0, I) data, constant under VP) is elementwise, so its
    batched evaluation rounds like the unbatched one: sample `i`, its NFE included, is then
    bitwise identical in batches of 1, 4 and 9, fixed or adaptive steps. Any other index than `i`
    for `fold_in` (or `split(key, num)`) changes the draws and fails.
    """
    sde = ss.VPSDE()
    results = [sampler(sde, lambda t, x: -x, key=jr.key(5), shape=(n, 3), **kw) for n in (1, 4, 9)]
    for small, large in zip(results[:-1], results[1:], strict=True):
        n = small.x.shape[0]
        assert jnp.array_equal(large.x[:n], small.x)
        assert jnp.array_equal(large.nfe[:n], small.nfe)
    assert not jnp.allclose(results[-1].x[0], results[-1].x[1])


@pytest.mark.parametrize(
    "sampler, kw",
    [pytest.param(*_BATCH_SAMPLERS[2], id="ode-heun", marks=pytest.mark.slow),
     pytest.param(*_BATCH_SAMPLERS[3], id="ode-adaptive")],
)  # fmt: skip
def test_sample_depends_on_its_batch_only_through_rounding(x64, sampler, kw):
    """With a score that reduces over its input (a mixture's log-sum-exp), XLA may round its
    batched evaluation differently for another batch size (batch 1 is lowered differently), so
    sample `i` is equal across batch sizes only up to floating-point rounding. In float64 the
    difference here is ~1e-15 (a few ulps, grown over the solve); 1e-12 leaves room for that
    growth while a wrong `fold_in` index moves a sample by O(1). Fixed steps keep the NFE;
    adaptive steps may not in general (a rounding difference can flip an accept/reject decision,
    as in float32), but with these keys in float64 they do.
    """
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(ss.analytic.ring_mixture(), sde)
    small, large = (sampler(sde, score, key=jr.key(5), shape=(n, 2), **kw) for n in (1, 9))
    assert large.x.dtype == jnp.float64
    assert jnp.allclose(large.x[:1], small.x, rtol=0, atol=1e-12)
    assert jnp.array_equal(large.nfe[:1], small.nfe)
    assert not jnp.allclose(large.x[0], large.x[1])


def test_grid_values_names_and_given_times_agree():
    """`grid=ss.LogSNRGrid()`, `grid="log_snr"` and the same times as an array (steps and t_eps
    implied) give the same samples; a grid of given times refuses an adaptive controller."""
    sde = ss.VPSDE()
    kw = dict(key=jr.key(0), shape=(4, 2), solver=dfx.Euler())
    by_value = ss.sample_ode(sde, _score(sde), steps=5, grid=ss.LogSNRGrid(), **kw)
    by_name = ss.sample_ode(sde, _score(sde), steps=5, grid="log_snr", **kw)
    times = ss.time_grid(sde, 5, t_eps=sde.default_t_eps, kind="log_snr")
    given = ss.sample_ode(sde, _score(sde), grid=times, **kw)
    np.testing.assert_array_equal(np.asarray(by_value.x), np.asarray(by_name.x))
    np.testing.assert_allclose(given.x, by_name.x, rtol=1e-6, atol=1e-6)
    assert int(given.num_steps[0]) == 5
    with pytest.raises(ValueError, match="stepsize_controller"):
        ss.sample_ode(
            sde, _score(sde), grid=times, stepsize_controller=dfx.PIDController(1e-3, 1e-3), **kw
        )
    with pytest.raises(ValueError, match="steps=4 disagrees"):
        ss.sample_ode(sde, _score(sde), grid=times, steps=4, **kw)
    with pytest.raises(TypeError, match="grid must be a time grid"):
        ss.sample_sde(sde, _score(sde), steps=5, grid=object(), **kw)
