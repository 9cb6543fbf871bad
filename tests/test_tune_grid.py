"""`tune_grid` against the closed form of a grid's error on Gaussian data, and `TimeGrid` as a
value (JSON round trip, accepted as `grid=` by every fixed-step sampler).

For Gaussian data with the exact score every step of DDIM and DPM-Solver++(2M) is affine in x,
so a grid's end map is x_N = A x_T + B per coordinate (diagonal covariance) and, with latents
N(0, I), its mean squared end-point error is mean_d (A - A*)^2 + (B - B*)^2 against the exact
flow map (A*, B*) (MATH.md, "Tuning a time grid"). The closed form here is written again in
numpy, independently of the solvers, and minimised by scipy; the tuner, which only sees
samples, must come within 1% of that minimum.
"""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.optimize

import scoresde as ss
from scoresde._tuning.tune_grid import split_pilot

MEAN = np.array([0.5, -1.0, 0.0, 1.0])
STD = np.array([0.05, 0.3, 1.0, 2.0])


def vp(t, beta_min=0.1, beta_max=20.0):
    """alpha, sigma, lambda of ss.VPSDE() at the numpy times `t`."""
    log_alpha = -0.25 * t**2 * (beta_max - beta_min) - 0.5 * t * beta_min
    alpha = np.exp(log_alpha)
    sigma = np.sqrt(-np.expm1(2 * log_alpha))
    return alpha, sigma, np.log(alpha / sigma)


def closed_form_mse(times, solver: str) -> float:
    """The mean squared end-point error of `solver` ("ddim" or "2m") on `times` for the data
    N(MEAN, diag(STD^2)), latents N(0, I): each step maps x -> a x + b per coordinate."""
    alpha, sigma, lam = vp(np.asarray(times, np.float64))
    A, B = np.ones_like(MEAN), np.zeros_like(MEAN)  # x = A x_T + B
    prev = None  # (a, b) of the previous data prediction x0 = a x_T + b, and its lambda
    for i in range(len(times) - 1):
        a_s, s_s, l_s, a_t, s_t, l_t = (
            alpha[i],
            sigma[i],
            lam[i],
            alpha[i + 1],
            sigma[i + 1],
            lam[i + 1],
        )
        gain = a_s * STD**2 / (a_s**2 * STD**2 + s_s**2)  # Tweedie: x0 = m + gain (x - a_s m)
        pa, pb = gain * A, MEAN + gain * (B - a_s * MEAN)
        h = l_t - l_s
        if solver == "2m" and prev is not None:
            r = (l_s - prev[2]) / h
            da, db = (1 + 0.5 / r) * pa - 0.5 / r * prev[0], (1 + 0.5 / r) * pb - 0.5 / r * prev[1]
        else:
            da, db = pa, pb
        A, B = (s_t / s_s) * A - a_t * np.expm1(-h) * da, (s_t / s_s) * B - a_t * np.expm1(-h) * db
        prev = (pa, pb, l_s)
    a_T, s_T, _ = vp(np.float64(times[0]))
    a_0, s_0, _ = vp(np.float64(times[-1]))
    ratio = np.sqrt((a_0**2 * STD**2 + s_0**2) / (a_T**2 * STD**2 + s_T**2))
    A_star, B_star = ratio, a_0 * MEAN - ratio * a_T * MEAN
    return float(np.mean((A - A_star) ** 2 + (B - B_star) ** 2))


def times_of(theta, t_eps=1e-3):
    """The grid of softmax log-SNR increments `theta` (as the tuner parametrises it)."""
    _, _, lam_T = vp(np.float64(1.0))
    _, _, lam_e = vp(np.float64(t_eps))
    w = np.exp(theta - theta.max())
    lam = lam_T + (lam_e - lam_T) * np.cumsum(w / w.sum())[:-1]
    integral = np.log1p(np.exp(-2 * lam))  # B(t) = 0.5 t^2 (b1 - b0) + t b0, inverted
    inner = (-0.1 + np.sqrt(0.1**2 + 2 * (20.0 - 0.1) * integral)) / (20.0 - 0.1)
    return np.array([1.0, *inner, t_eps])


def best_closed_form(solver, steps) -> float:
    def objective(theta):
        with np.errstate(all="ignore"):
            value = closed_form_mse(times_of(theta), solver)
        return np.log(value) if np.isfinite(value) and value > 0 else np.inf

    best = np.inf
    for start in (np.zeros(steps), np.linspace(1, -1, steps), np.linspace(-1, 1, steps)):
        res = scipy.optimize.minimize(
            objective, start, method="Nelder-Mead",
            options=dict(maxiter=4000, xatol=1e-8, fatol=1e-10),
        )  # fmt: skip
        best = min(best, float(np.exp(res.fun)))
    return best


def _problem():
    sde = ss.VPSDE()
    data = ss.analytic.Gaussian(jnp.asarray(MEAN), jnp.diag(jnp.asarray(STD**2)))
    return sde, ss.analytic.marginal_score(data, sde)


def test_closed_form_agrees_with_the_solvers(x64):
    """The independent closed form equals the library's solve on a named grid (so it is the
    oracle of THESE solvers)."""
    sde, score = _problem()
    times = np.asarray(ss.time_grid(sde, 4, t_eps=1e-3, kind="log_snr"))
    basis = jnp.concatenate([jnp.zeros((1, 4)), jnp.eye(4)])  # x_T = 0 and the unit vectors
    for name, solver in (("ddim", ss.DDIM()), ("2m", ss.DPMSolverPP2M())):
        x = ss.sample_ode(sde, score, key=jr.PRNGKey(0), shape=(5, 4), solver=solver,
                          grid=times, x_T=basis).x  # fmt: skip
        ref = ss.sample_ode(sde, score, key=jr.PRNGKey(0), shape=(5, 4), x_T=basis,
                            rtol=1e-11, atol=1e-11, t_eps=1e-3, max_steps=100_000).x  # fmt: skip
        B, A = x[0] - ref[0], jnp.diag(x[1:] - ref[1:]) - (x[0] - ref[0])
        mse = float(jnp.mean(A**2 + B**2))
        assert mse == pytest.approx(closed_form_mse(times, name), rel=1e-6)


@pytest.mark.parametrize(
    "name,steps", [("2m", 4), pytest.param("ddim", 3, marks=pytest.mark.slow),
                   pytest.param("2m", 7, marks=pytest.mark.slow),
                   pytest.param("ddim", 6, marks=pytest.mark.slow)],
)  # fmt: skip
def test_tuned_grid_reaches_the_closed_form_optimum(x64, name, steps):
    sde, score = _problem()
    solver = ss.DDIM() if name == "ddim" else ss.DPMSolverPP2M()
    grid = ss.tune_grid(sde, score, solver=solver, steps=steps, key=jr.PRNGKey(1),
                        shape=(1024, 4), t_eps=1e-3, reference_tol=1e-10)  # fmt: skip
    tuned = closed_form_mse(np.asarray(grid.times, np.float64), name)
    best = best_closed_form(name, steps)
    named = min(closed_form_mse(np.asarray(ss.time_grid(sde, steps, t_eps=1e-3, kind=k)), name)
                for k in ("uniform", "log_snr", "karras"))  # fmt: skip
    assert best < 0.9 * named  # the problem leaves room to tune
    assert grid.info["chosen"] == "tuned"
    assert tuned <= 1.01 * best, (tuned, best, named)
    # negative control: the best named grid misses the optimum by more than the tolerance
    assert named > 1.01 * best


def test_time_grid_is_a_value_every_sampler_takes(tmp_path):
    """Saved and loaded exactly; as `grid=` it gives the same samples as its times, in every
    fixed-step sampler, with `steps` implied."""
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2)), sde)
    times = np.array([1.0, 0.6, 0.3, 0.1, 1e-3])
    grid = ss.TimeGrid(times, "UniPC", {"note": "hand-made", "rms": {"tuned": 0.5}})
    path = tmp_path / "grid.json"
    grid.to_json(path)
    loaded = ss.TimeGrid.from_json(path)
    assert np.array_equal(np.asarray(loaded.times), np.asarray(grid.times))
    assert loaded.solver == "UniPC" and loaded.info == grid.info and loaded.steps == 4
    assert ss.TimeGrid.from_json(grid.to_json()).info["rms"]["tuned"] == 0.5
    kw = dict(key=jr.PRNGKey(0), shape=(3, 2))
    for sampler, extra in (
        (ss.sample_ode, dict(solver=ss.UniPC())),
        (ss.sample_sde, {}),
        (ss.sample_pc, {}),
        (ss.sample_edm, {}),
    ):
        by_grid = sampler(sde, score, grid=loaded, **kw, **extra)
        by_times = sampler(sde, score, grid=jnp.asarray(times), **kw, **extra)
        assert np.array_equal(np.asarray(by_grid.x), np.asarray(by_times.x)), sampler.__name__
        assert int(by_grid.num_steps[0]) == 4, sampler.__name__
    with pytest.raises(ValueError, match="disagrees"):
        ss.sample_ode(sde, score, grid=loaded, steps=5, **kw)
    with pytest.raises(ValueError, match="rho"):
        ss.sample_edm(sde, score, grid=loaded, rho=3.0, **kw)


def test_time_grid_json_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file"):
        ss.TimeGrid.from_json(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="not a saved TimeGrid"):
        ss.TimeGrid.from_json('{"times": [1, 0.5]}')
    bad = ss.TimeGrid(np.array([1.0, 0.5, 1e-3])).to_json().replace('"0.5"', '"2.0"')
    with pytest.raises(ValueError, match="strictly decreasing"):
        ss.TimeGrid.from_json(bad)


def test_tune_grid_rejects_bad_arguments():
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2)), sde)
    kw = dict(solver=ss.UniPC(), steps=3, key=jr.PRNGKey(0))
    with pytest.raises(ValueError, match="pilot of >= 2"):
        ss.tune_grid(sde, score, shape=(1, 2), **kw)
    with pytest.raises(ValueError, match="held_out"):
        ss.tune_grid(sde, score, shape=(8, 2), held_out=1.5, **kw)
    with pytest.raises(TypeError, match="solver"):
        ss.tune_grid(sde, score, shape=(8, 2), solver="unipc", steps=3, key=jr.PRNGKey(0))
    for bad in (0, -3, True):
        with pytest.raises(ValueError, match="fit_size"):
            ss.tune_grid(sde, score, shape=(8, 2), fit_size=bad, **kw)


def test_fit_size_moves_the_rest_of_the_pilot_to_the_check():
    """`fit_size` caps the latents in the optimiser's gradient; the others join the held-out
    check (the counts the report states), and without it a quarter is held out."""
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2)), sde)
    kw = dict(solver=ss.DDIM(), steps=3, key=jr.PRNGKey(0), shape=(16, 2), max_iterations=0)
    assert split_pilot(16, 0.25, None, (16, 2)) == 12
    assert split_pilot(16, 0.25, 5, (16, 2)) == 5
    assert split_pilot(16, 0.25, 100, (16, 2)) == 12
    info = ss.tune_grid(sde, score, fit_size=5, **kw).info
    assert (info["pilot"], info["held_out"]) == (5, 11)


def test_likelihood_on_a_grid(x64):
    """`log_likelihood(grid=...)` integrates over exactly the grid's times (the tuner's own
    differentiable solve agrees to rounding; NFE exact), and `tune_likelihood_grid` returns a
    grid no worse on its held-out points than the best named grid."""
    import diffrax as dfx

    from scoresde._tuning.likelihood_grid import likelihood_probes, log_likelihood_on_times

    sde, score = _problem()
    x = jnp.asarray(MEAN + STD * np.random.default_rng(0).standard_normal((16, 4)))
    times = ss.time_grid(sde, 5, t_eps=1e-5, kind="uniform")
    res = ss.log_likelihood(sde, score, x, key=jr.PRNGKey(2), solver=dfx.Heun(), grid=times)
    probes = likelihood_probes(sde, score, ss.Hutchinson(), x, jr.PRNGKey(2), 1e-5)
    mine, nfe = log_likelihood_on_times(sde, score, dfx.Heun(), times, x, probes,
                                        ss.Hutchinson(), ss.TimeVariable(), sde.prior_log_prob)  # fmt: skip
    np.testing.assert_allclose(res.log_prob, mine, rtol=0, atol=1e-9)
    assert int(res.nfe[0]) == nfe == 10 and int(res.num_steps[0]) == 5
    named = ss.log_likelihood(sde, score, x, key=jr.PRNGKey(2), solver=dfx.Heun(),
                              grid="uniform", steps=5)  # fmt: skip
    np.testing.assert_array_equal(named.log_prob, res.log_prob)
    with pytest.raises(ValueError, match="fixed steps"):
        ss.log_likelihood(sde, score, x, key=jr.PRNGKey(2), grid=times,
                          stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-3))  # fmt: skip


@pytest.mark.slow
def test_tune_likelihood_grid_beats_named_grids_held_out(x64):
    import diffrax as dfx

    sde, score = _problem()
    x = jnp.asarray(MEAN + STD * np.random.default_rng(0).standard_normal((16, 4)))
    grid = ss.tune_likelihood_grid(sde, score, x, steps=3, solver=dfx.Heun(), key=jr.PRNGKey(2),
                                   max_iterations=10)  # fmt: skip
    rms = grid.info["rms"]
    best_named = min(v["held_out"] for k, v in rms.items() if k != "tuned")
    assert rms[grid.info["chosen"]]["held_out"] <= best_named and grid.info["nfe"] == 6
