"""Exponential integrators and EDM's Heun as diffrax solvers, checked on exact Gaussian flow maps."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import (
    PF_SOLVER_IDS,
    PF_SOLVERS,
    SCORE_CALLS,
    CountingScore,
    assert_no_recompile,
    pf_solvers,
)

import scoresde as ss

GAUSS_MEAN = [0.5, -1.0, 2.0]
GAUSS_VARS = [0.05, 1.0, 4.0]


def _gaussian(dtype=None):
    return ss.analytic.Gaussian(
        jnp.asarray(GAUSS_MEAN, dtype), jnp.diag(jnp.asarray(GAUSS_VARS, dtype))
    )


@eqx.filter_jit
def _solve_constant(solver, sde, score, x_T, t_eps, dt0):
    """PF-ODE from T to t_eps with constant steps in s = T - t (one compile for every dt0)."""
    term = ss.probability_flow_term(sde, score)
    sol = dfx.diffeqsolve(
        term,
        solver,
        0.0,
        sde.T - t_eps,
        dt0,
        x_T,
        stepsize_controller=dfx.ConstantStepSize(),
        max_steps=256,
    )
    return sol.ys[0]


def _observed_order(solver, sde, t_eps, steps=(16, 32, 64)):
    dist = _gaussian()
    score = ss.analytic.marginal_score(dist, sde)
    x_T = dist.marginal(sde, sde.T).sample(jr.key(0), 1)[0]
    exact = dist.probability_flow(sde, sde.T, t_eps, x_T)
    errs = []
    for n in steps:
        x = _solve_constant(
            solver, sde, score, x_T, jnp.asarray(t_eps), jnp.asarray((sde.T - t_eps) / n)
        )
        errs.append(float(jnp.linalg.norm(x - exact)))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    return slope, errs


# VP stops at t = 0.1 and VE at t = 0.2: constant steps in t are then nearly uniform in the
# log-SNR, so the asymptotic regime starts at a few steps.
CASES = [(ss.VPSDE(), 0.1), (ss.VESDE(), 0.2)]


_FAST = ["dpm1", "dpm2", "dpm3", "dpmpp2m"]


@pytest.mark.parametrize("sde,t_eps", CASES, ids=["vp", "ve"])
@pytest.mark.parametrize("solver,order", pf_solvers(*_FAST), ids=_FAST)
def test_convergence_order(x64, sde, t_eps, solver, order):
    slope, errs = _observed_order(solver, sde, t_eps)
    assert errs[-1] < errs[0]
    assert abs(slope - order) < 0.3, (slope, errs)


@pytest.mark.slow
@pytest.mark.parametrize(
    "sde,t_eps",
    CASES + [(ss.SubVPSDE(), 0.1), (ss.EDMSDE(), 1.0)],
    ids=["vp", "ve", "subvp", "edm"],
)
@pytest.mark.parametrize("solver,order", pf_solvers(), ids=PF_SOLVER_IDS)
def test_convergence_order_all(x64, sde, t_eps, solver, order):
    slope, errs = _observed_order(solver, sde, t_eps, steps=(8, 16, 32, 64))
    assert slope > order - 0.35, (slope, errs)


@pytest.mark.slow
def test_unipc_corrector_raises_order(x64):
    slope, _ = _observed_order(ss.UniPC(3), ss.VESDE(), 0.2, steps=(16, 32, 64))
    assert slope > 3.6


_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "solver,per_step",
    [
        pytest.param(ss.DPMSolver1(), 1, marks=_SLOW),
        pytest.param(ss.DPMSolver2(), 2, marks=_SLOW),
        (ss.DPMSolver3(), 3),
        pytest.param(ss.DPMSolverPP2M(), 1, marks=_SLOW),
        pytest.param(ss.DPMSolverPP3M(), 1, marks=_SLOW),
        (ss.UniPC(), 1),
        pytest.param(ss.EDMHeun(), 2, marks=_SLOW),
    ],
    ids=["dpm1", "dpm2", "dpm3", "dpmpp2m", "dpmpp3m", "unipc", "heun"],
)
def test_sample_ode_fixed_steps_nfe_and_accuracy(solver, per_step):
    """In sample_ode's batched fixed-step path: exact nfe, close to the exact flow map."""
    sde = ss.VPSDE()
    dist = _gaussian()
    x_T = dist.marginal(sde, sde.T).sample(jr.key(1), 8)
    t_eps = 1e-2
    r = ss.sample_ode(
        sde,
        ss.analytic.marginal_score(dist, sde),
        key=jr.key(0),
        shape=x_T.shape,
        solver=solver,
        steps=30,
        grid="log_snr",
        t_eps=t_eps,
        x_T=x_T,
    )
    exact = jax.vmap(lambda x: dist.probability_flow(sde, sde.T, t_eps, x))(x_T)
    assert r.x.shape == x_T.shape
    assert np.all(np.asarray(r.nfe) == 30 * per_step)
    assert float(jnp.max(jnp.abs(r.x - exact))) < 0.2 / per_step


# Score evaluations per step, from each method's definition: single-step DPM-Solver-k takes k;
# the multistep solvers reuse past evaluations (UniPC's corrector reuses the next step's
# evaluation and skips the last step), one each; Heun takes two.
_EVALS_PER_STEP = {
    "dpm1": 1,
    "dpm2": 2,
    "dpm3": 3,
    "dpmpp2m": 1,
    "dpmpp3m": 1,
    "unipc2": 1,
    "unipc3_nocorr": 1,
    "heun": 2,
}


@pytest.mark.parametrize("solver,_order", pf_solvers(), ids=PF_SOLVER_IDS)
def test_sample_ode_nfe_is_the_executed_score_calls(solver, _order):
    """Every probability-flow solver, counted by real executions (a cheap default-run check)."""
    assert set(_EVALS_PER_STEP) == {name for _, _, name in PF_SOLVERS}
    name = PF_SOLVER_IDS[[s for s, _, _ in PF_SOLVERS].index(solver)]
    sde = ss.VPSDE()
    score = CountingScore(ss.analytic.marginal_score(_gaussian(), sde))
    SCORE_CALLS.clear()
    r = ss.sample_ode(sde, score, key=jr.key(0), shape=(1, 3), solver=solver, steps=3)
    jax.effects_barrier()
    assert int(r.nfe[0]) == len(SCORE_CALLS) == 3 * _EVALS_PER_STEP[name]


def test_sample_edm_nfe_is_the_executed_score_calls():
    """EDM's sampler: two evaluations per Heun step and one for the final denoising step."""
    sde = ss.EDMSDE()
    score = CountingScore(ss.analytic.marginal_score(_gaussian(), sde))
    SCORE_CALLS.clear()
    r = ss.sample_edm(sde, score, key=jr.key(0), shape=(1, 3), steps=3, churn=1.0)
    jax.effects_barrier()
    assert int(r.nfe[0]) == len(SCORE_CALLS) == 2 * 3 + 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver,cost", [(ss.DPMSolver2(), 2), (ss.DPMSolver3(), 3)], ids=["dpm12", "dpm23"]
)
def test_adaptive_single_step(solver, cost):
    """DPM-Solver-12/23 under a PIDController (per-sample adaptive path of sample_ode)."""
    sde = ss.EDMSDE()
    dist = _gaussian()
    x_T = dist.marginal(sde, sde.T).sample(jr.key(2), 4)
    r = ss.sample_ode(
        sde,
        ss.analytic.marginal_score(dist, sde),
        key=jr.key(0),
        shape=x_T.shape,
        solver=solver,
        rtol=1e-4,
        atol=1e-4,
        x_T=x_T,
    )
    exact = jax.vmap(lambda x: dist.probability_flow(sde, sde.T, sde.sigma_min, x))(x_T)
    assert float(jnp.max(jnp.abs(r.x - exact))) < 1e-2
    assert np.all(np.asarray(r.nfe) == cost * np.asarray(r.num_steps))


def test_dpmpp2m_matches_the_reference_formula():
    """Two steps of DPM-Solver++ 2M by hand (EDM: alpha = 1, sigma = t)."""
    sde = ss.EDMSDE()
    dist = _gaussian()
    score = ss.analytic.marginal_score(dist, sde)
    ts = jnp.asarray([80.0, 10.0, 1.0])
    x = jnp.asarray([30.0, -20.0, 50.0])
    sol = dfx.diffeqsolve(
        ss.probability_flow_term(sde, score),
        ss.DPMSolverPP2M(),
        0.0,
        sde.T - 1.0,
        None,
        x,
        stepsize_controller=dfx.StepTo(ts=sde.T - ts),
        max_steps=2,
    )

    def denoise(t, y):
        return y + t**2 * score(t, y)

    d0 = denoise(ts[0], x)
    h0 = jnp.log(ts[0] / ts[1])
    x1 = (ts[1] / ts[0]) * x - jnp.expm1(-h0) * d0
    d1 = denoise(ts[1], x1)
    h1 = jnp.log(ts[1] / ts[2])
    r = h0 / h1
    d = (1 + 1 / (2 * r)) * d1 - d0 / (2 * r)
    x2 = (ts[2] / ts[1]) * x1 - jnp.expm1(-h1) * d
    assert jnp.allclose(sol.ys[0], x2, rtol=1e-5, atol=1e-5)


def test_works_on_unbatched_and_image_shaped_states():
    sde = ss.VESDE()
    score = lambda t, x: -x / (1 + sde.marginal(t)[1] ** 2)  # N(0, I) data, any shape
    for shape in [(2, 4, 4)]:
        x = jnp.ones(shape)
        sol = dfx.diffeqsolve(
            ss.probability_flow_term(sde, score),
            ss.UniPC(),
            0.0,
            0.9,
            0.1,
            x,
            stepsize_controller=dfx.ConstantStepSize(),
        )
        assert sol.ys[0].shape == shape and bool(jnp.all(jnp.isfinite(sol.ys[0])))


def test_unsupported_terms_raise():
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(_gaussian(), sde)
    with pytest.raises(TypeError, match="probability-flow ODE only"):
        ss.sample_sde(sde, score, key=jr.key(0), shape=(2, 3), solver=ss.DPMSolver2(), steps=4)
    with pytest.raises(TypeError, match="probability-flow ODE only"):
        dfx.diffeqsolve(
            dfx.ODETerm(lambda t, y, args: -y), ss.DPMSolverPP2M(), 0.0, 1.0, 0.1, jnp.ones(3)
        )


def test_unipc_bad_order():
    with pytest.raises(ValueError, match="order"):
        ss.UniPC(order=4)


def test_clipped_log_snr_grid():
    for sde, t_eps in [(ss.EDMSDE(), 0.002), (ss.VPSDE(), 1e-3), (ss.VESDE(), 1e-3)]:
        for steps in (1, 9):
            ts = np.asarray(ss.clipped_log_snr_grid(sde, steps, t_eps=t_eps))
            assert ts.shape == (steps + 1,)
            assert ts[0] == pytest.approx(sde.T) and ts[-1] == pytest.approx(t_eps)
            assert np.all(np.diff(ts) < 0)
    ts = np.asarray(ss.clipped_log_snr_grid(ss.EDMSDE(), 9, t_eps=0.002))
    assert ts[1] == pytest.approx(4.0, rel=1e-5) and 0.005 < ts[-2] <= 0.01
    # Many steps: the end steps shrink with the inner ones (no error floor).
    lam = -np.log(np.asarray(ss.clipped_log_snr_grid(ss.EDMSDE(), 99, t_eps=0.002), np.float64))
    h = np.diff(lam)
    inner = np.median(h)
    assert h[0] <= 4 * inner * (1 + 1e-3) and h[-1] <= 1.7 * inner * (1 + 1e-3)
    np.testing.assert_allclose(h[1:-1], inner, rtol=1e-3)
    with pytest.raises(ValueError, match="sigma_hi"):
        ss.clipped_log_snr_grid(ss.EDMSDE(), 9, t_eps=0.002, sigma_hi=-1.0)


def test_sample_edm_without_churn_is_edm_heun(x64):
    # float64: in float32 the reversed time s = T - t of sample_ode rounds t near t_eps
    # (ulp(80) ~ 8e-6 against sigma_min = 2e-3), so the two paths differ by ~1e-3.
    sde = ss.EDMSDE()
    dist = _gaussian()
    score = ss.analytic.marginal_score(dist, sde)
    r = ss.sample_edm(sde, score, key=jr.key(0), shape=(16, 3), steps=12)
    r_ode = ss.sample_ode(
        sde,
        score,
        key=jr.key(0),
        shape=(16, 3),
        solver=ss.EDMHeun(),
        steps=12,
        grid="karras",
        denoise=True,
    )
    assert np.all(np.asarray(r.nfe) == 25) and np.all(np.asarray(r_ode.nfe) == 25)
    np.testing.assert_allclose(r.x, r_ode.x, rtol=1e-4, atol=1e-4)


def test_sample_edm_with_churn_and_bad_input():
    sde = ss.VPSDE()
    dist = _gaussian()
    score = ss.analytic.marginal_score(dist, sde)
    r = ss.sample_edm(sde, score, key=jr.key(0), shape=(256, 3), steps=20, churn=10.0)
    r_small = ss.sample_edm(sde, score, key=jr.key(0), shape=(8, 3), steps=20, churn=10.0)
    np.testing.assert_allclose(r.x[:8], r_small.x, rtol=1e-5, atol=1e-5)  # batch-independent
    assert bool(jnp.all(jnp.isfinite(r.x)))
    # Means are right to a few standard errors (stochastic sampler, exact score).
    se = np.sqrt(np.asarray(GAUSS_VARS) / 256)
    assert np.all(np.abs(np.asarray(r.x.mean(0)) - np.asarray(GAUSS_MEAN)) < 5 * se + 0.05)
    for kw, name in [
        (dict(churn=-1.0), "churn"),
        (dict(steps=0), "steps"),
        (dict(s_noise=-1.0), "s_noise"),
        (dict(rho=0.0), "rho"),
    ]:
        with pytest.raises(ValueError, match=name):
            ss.sample_edm(sde, score, key=jr.key(0), shape=(4, 3), **kw)


def test_sample_edm_no_retrace():
    sde = ss.EDMSDE()
    score = ss.analytic.marginal_score(_gaussian(), sde)
    ss.sample_edm(sde, score, key=jr.key(0), shape=(4, 3), steps=5, churn=1.0)
    key = jr.key(1)
    with assert_no_recompile():
        ss.sample_edm(sde, score, key=key, shape=(4, 3), steps=5, churn=2.0, s_noise=1.01)


def test_zero_length_steps_near_the_end_are_harmless():
    """EDM in float32: s = T - t puts t_eps at s = 79.998, where diffrax clips steps ending
    within 100 ULP (7.6e-4) of the end to the end; the multistep state must survive the
    resulting zero-length steps (it used to divide by h = 0)."""
    sde = ss.EDMSDE()
    dist = _gaussian()
    x_T = dist.marginal(sde, sde.T).sample(jr.key(3), 4)
    r = ss.sample_ode(
        sde,
        ss.analytic.marginal_score(dist, sde),
        key=jr.key(0),
        shape=x_T.shape,
        solver=ss.DPMSolverPP3M(),
        steps=99,
        grid="karras",
        x_T=x_T,
    )
    exact = jax.vmap(lambda x: dist.probability_flow(sde, sde.T, sde.sigma_min, x))(x_T)
    assert bool(jnp.all(jnp.isfinite(r.x)))
    assert float(jnp.max(jnp.abs(r.x - exact))) < 1e-2
