"""Every failure names its cause (issue 26, item 6): a non-finite score or input is named as such
before any tolerance advice, and each bad argument is refused up front, naming it. One test per
case, each on a 2-D problem with a few steps (most raise before anything compiles)."""

import warnings

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss

SDE = ss.VPSDE()
SCORE = ss.analytic.marginal_score(ss.analytic.Gaussian(jnp.zeros(2), jnp.eye(2)), SDE)
X = jnp.ones((2, 2))


def nan_score(t, x):
    return jnp.full_like(x, jnp.nan)


ADVICE_WORDS = ("looser", "larger", "more steps", "snr")

NAN_SCORE_CALLS = {
    "sample_ode_steps": lambda: ss.sample_ode(
        SDE, nan_score, key=jr.key(0), shape=(2, 2), steps=2, solver=dfx.Euler()
    ),
    "log_likelihood": lambda: ss.log_likelihood(
        SDE,
        nan_score,
        X,
        divergence=ss.ExactDivergence(),
        solver=dfx.Heun(),
        schedule=ss.SharedSteps(),  # the cheapest adaptive solve to compile
        max_steps=8,
    ),
    # The other entry points share the helper: checked in the slow run.
    "sample_ode_adaptive": lambda: ss.sample_ode(
        SDE, nan_score, key=jr.key(0), shape=(2, 2), max_steps=8
    ),
    "sample_sde": lambda: ss.sample_sde(SDE, nan_score, key=jr.key(0), shape=(2, 2), steps=2),
    "sample_pc": lambda: ss.sample_pc(SDE, nan_score, key=jr.key(0), shape=(2, 2), steps=2),
    "sample_edm": lambda: ss.sample_edm(
        ss.EDMSDE(), nan_score, key=jr.key(0), shape=(2, 2), steps=2
    ),
    "sample_sde_adaptive": lambda: ss.sample_sde_adaptive(
        SDE, nan_score, key=jr.key(0), shape=(2, 2)
    ),
    "encode": lambda: ss.encode(SDE, nan_score, X, max_steps=8),
    "sample_smc": lambda: ss.sample_smc(
        SDE,
        nan_score,
        ss.LinearMeasurement(jnp.eye(2), jnp.zeros(2), 0.1),
        key=jr.key(0),
        shape=(2, 2),
        steps=2,
    ),
}
DEFAULT_RUN = ("sample_ode_steps", "log_likelihood")


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(call, id=name, marks=() if name in DEFAULT_RUN else pytest.mark.slow)
        for name, call in NAN_SCORE_CALLS.items()
    ],
)
def test_a_nan_score_is_named_before_any_tolerance_advice(call):
    with pytest.raises((RuntimeError, FloatingPointError), match="score returned NaN") as info:
        call()
    message = str(info.value)
    assert not any(word in message for word in ADVICE_WORDS), message


@pytest.mark.parametrize(
    "x, error, match",
    [
        (X.at[0, 1].set(jnp.nan), ValueError, "x contains non-finite"),
        (X.astype(jnp.bfloat16), TypeError, "bfloat16.*float32"),
    ],
    ids=["nan", "bfloat16"],
)
def test_a_bad_input_is_named_before_the_solve(x, error, match):
    with pytest.raises(error, match=match):
        ss.log_likelihood(SDE, SCORE, x, divergence=ss.ExactDivergence())
    if error is ValueError:  # the samplers' given latents likewise
        with pytest.raises(ValueError, match="x_T contains non-finite"):
            ss.sample_ode(SDE, SCORE, key=jr.key(0), shape=(2, 2), x_T=x, steps=2)


@pytest.mark.parametrize("solver", [dfx.ShARK(), dfx.SRA1(), dfx.SEA(), dfx.EulerHeun()])
def test_an_sde_solver_is_refused_by_the_ode_entry_points(solver):
    name = type(solver).__name__
    with pytest.raises(TypeError, match=f"{name} is a solver for SDEs.*sample_sde"):
        ss.sample_ode(SDE, SCORE, key=jr.key(0), shape=(2, 2), solver=solver, steps=2)
    with pytest.raises(TypeError, match=f"{name} is a solver for SDEs"):
        ss.log_likelihood(SDE, SCORE, X, solver=solver, divergence=ss.ExactDivergence())


def test_a_diverging_langevin_chain_names_the_step_size():
    """ULA on N(0, I) is unstable for step_size > 2: the chains blow up to NaN."""
    kernel = ss.UnadjustedLangevin(lambda x: -x, 5.0)
    with pytest.raises(FloatingPointError, match=r"diverged: step_size=5 is too large"):
        ss.run_langevin(kernel, X, key=jr.key(0), num_steps=200)


@pytest.mark.parametrize("bad", ["y", "A"])
def test_a_measurement_with_nan_is_refused_at_construction(bad):
    A, y = jnp.eye(2), jnp.zeros(2)
    A, y = (A.at[0, 0].set(jnp.nan), y) if bad == "A" else (A, y.at[1].set(jnp.inf))
    with pytest.raises(ValueError, match=f"^{bad} contains non-finite"):
        ss.LinearMeasurement(A, y, 0.1)


class _Clock(ss.AbstractSDE):
    """dx = dw on [0, T] (sigma(t)^2 = t): a user's SDE whose end time is a field."""

    T: float

    def drift_coeff(self, t):
        return jnp.zeros_like(t)

    def diffusion(self, t):
        return jnp.ones_like(t)

    def marginal(self, t):
        return jnp.ones_like(t), jnp.sqrt(t)

    def log_snr(self, t):
        return -0.5 * jnp.log(t)

    def log_snr_inverse(self, lam):
        return jnp.exp(-2 * lam)

    @property
    def prior_std(self):
        return self.T**0.5


@pytest.mark.parametrize("t_eps", [1.0, 2.0, 0.0])
def test_time_grid_needs_t_eps_inside_0_T(t_eps):
    with pytest.raises(ValueError, match=r"t_eps must lie in \(0, sde.T\)"):
        ss.time_grid(SDE, 10, t_eps=t_eps)
    assert ss.time_grid(_Clock(2.0), 4, t_eps=1e-3).shape == (5,)  # control: a valid clock


@pytest.mark.parametrize("T", [0.0, -1.0, float("nan")])
def test_an_sde_needs_a_positive_end_time(T):
    with pytest.raises(ValueError, match="_Clock: the SDE's end time T must be finite and > 0"):
        _Clock(T)


def test_every_guidance_refuses_a_negative_scale():
    m = ss.LinearMeasurement(jnp.eye(2), jnp.zeros(2), 0.1)
    builds = [
        lambda scale: ss.guidance.DPS(SDE, SCORE, m, scale),
        lambda scale: ss.guidance.Classifier(SCORE, lambda t, x: x, 1, scale),
        lambda scale: ss.guidance.ClassifierFree(lambda t, x, c: x, 1, 0, scale),
    ]
    for build in builds:
        build(0.0)  # control: zero guidance is allowed
        with pytest.raises(ValueError, match=r"scale must be finite and >= 0; got scale=-1"):
            build(-1.0)


def test_fit_on_empty_data_names_it():
    model = eqx.nn.Linear(2, 2, key=jr.key(0))
    with pytest.raises(ValueError, match="at least one non-empty sample.*shape \\(0, 2\\)"):
        ss.fit(model, lambda *a: 0.0, jnp.zeros((0, 2)), key=jr.key(0), steps=1, progress=False)


def test_a_per_entry_mala_step_is_a_diagonal_preconditioner():
    """MALA with step sizes `h` (one per entry) is MALA with step 1 and the metric diag(h):
    same proposals, same Metropolis-Hastings ratio, so the same chains."""
    target = ss.analytic.Gaussian(jnp.zeros(2), jnp.diag(jnp.array([4.0, 0.1])))
    h = jnp.array([2.0, 0.05])
    x0 = target.sample(jr.key(1), 8)
    per_entry = ss.run_langevin(ss.MALA(target.log_prob, h), x0, key=jr.key(2), num_steps=10)
    metric = ss.MALA(target.log_prob, 1.0, preconditioner=ss.DiagonalPreconditioner(h))
    diagonal = ss.run_langevin(metric, x0, key=jr.key(2), num_steps=10)
    assert 0.2 < float(per_entry.acceptance_rate.mean()) < 1.0  # the test sees rejections
    np.testing.assert_allclose(per_entry.acceptance_rate, diagonal.acceptance_rate, atol=1e-5)
    np.testing.assert_allclose(per_entry.x, diagonal.x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"step_size must be a scalar or one step per entry"):
        ss.run_langevin(ss.MALA(target.log_prob, jnp.ones(3)), x0, key=jr.key(2), num_steps=1)


def test_loading_a_missing_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "nothing.eqx"
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nothing.eqx"):
        ss.load(path, jnp.zeros(2))


def test_bits_per_dim_half_width_is_quoted_as_given():
    k = jnp.zeros((4, 2), jnp.uint8)
    with pytest.raises(ValueError, match=r"got half_width=-0.1\.$"):
        ss.estimate_bits_per_dim(SDE, SCORE, k, key=jr.key(0), bits=8, half_width=-0.1)


@pytest.mark.slow  # the default run checks it on 64 samples: tests/test_mean_likelihood.py
def test_the_probe_noise_of_a_one_probe_mean_likelihood_is_measured():
    """One Hutchinson probe, population target, no plan, 2 samples: the per-sample probe noise
    is measured (a second solve of the pilot with independent probes), not NaN. Both levels are
    the same compiled Heun solve (tolerances are values)."""
    # Correlated: the drift's Jacobian is not diagonal, so one Rademacher probe is noisy.
    target = ss.analytic.Gaussian(jnp.zeros(2), jnp.array([[2.0, 1.5], [1.5, 2.0]]))
    tight = ss.SolverLevel(dfx.Heun(), 1e-4, 1e-4, max_steps=4096)
    one = ss.estimate_mean_log_likelihood(
        SDE,
        ss.analytic.marginal_score(target, SDE),
        target.sample(jr.key(1), 2),
        key=jr.key(0),
        divergence=ss.Hutchinson(),
        solver=dfx.Heun(),
        rtol=1e-2,
        atol=1e-2,
        tight=tight,
    )
    assert np.isfinite(float(one.stderr_probes)) and float(one.stderr_probes) > 0
    assert np.isfinite(float(one.stderr)) and float(one.stderr) >= float(one.stderr_bias)


@pytest.mark.parametrize(
    "estimator, at_least", [(ss.CovarianceEstimator(), 5), (ss.FisherEstimator(), 4)]
)
def test_a_dense_metric_from_too_few_pilot_points_warns(estimator, at_least):
    """d = 4: the sample covariance of n points has rank <= n - 1, the Fisher matrix <= n."""
    pilot = jr.normal(jr.key(0), (2, 4))
    with pytest.warns(UserWarning, match=f"rank at most .* < d.*at least {at_least} pilot"):
        ss.estimate_preconditioner(lambda x: -x, pilot, kind=estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # control: enough points, no warning
        ss.estimate_preconditioner(lambda x: -x, jr.normal(jr.key(0), (5, 4)), kind=estimator)
