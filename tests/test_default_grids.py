"""The grid a sampler uses when given none (decided in one place, `step_modes.solver_grid`), and
DPM-Solver-2/3 on fixed budgets too short for their order."""

import inspect

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import PF_SOLVER_IDS, PF_SOLVERS, random_mixture

import scoresde as ss
from scoresde._sampling.step_modes import solver_grid

# What benchmarks/default_grids.py measured best for each solver (see its docstring).
_EXPECTED_DEFAULT = {
    "dpm1": ss.LogSNRGrid(),
    "dpm2": ss.LogSNRGrid(),
    "dpm3": ss.LogSNRGrid(),
    "dpmpp2m": ss.LogSNRGrid(),
    "dpmpp3m": ss.LogSNRGrid(),
    "unipc2": ss.LogSNRGrid(),
    "unipc3_nocorr": ss.LogSNRGrid(),
    "heun": ss.KarrasGrid(),
}


def test_default_grid_is_decided_in_one_place():
    """`grid=None` (every sampler's default) is the solver's `default_grid()` for this package's
    solvers, uniform in t for diffrax's and for the predictor-corrector sampler; a given grid
    is kept. No solve."""
    for sampler in (ss.sample_ode, ss.sample_sde, ss.sample_pc):
        assert inspect.signature(sampler).parameters["grid"].default is None
    for (solver, _, _), name in zip(PF_SOLVERS, PF_SOLVER_IDS, strict=True):
        assert solver_grid(None, solver) == solver.default_grid() == _EXPECTED_DEFAULT[name]
        assert solver_grid("karras", solver) == ss.KarrasGrid()
    for other in (dfx.Euler(), dfx.Heun(), dfx.Tsit5(), None):
        assert solver_grid(None, other) == ss.UniformGrid()
    # the fixed budget that sample_ode hands DPM-Solver-2/3
    assert ss.DPMSolver3().on_fixed_steps(4) == ss.DPMSolver3(fixed_steps=4)
    assert ss.DDIM().on_fixed_steps(4) == ss.DDIM()
    with pytest.raises(ValueError, match="fixed_steps=3"):
        ss.DPMSolver2(fixed_steps=2).on_fixed_steps(3)
    with pytest.raises(ValueError, match="fixed_steps must be"):
        ss.DPMSolver3(fixed_steps=0)


def test_grid_none_is_the_named_default():
    """`grid=None` and the default's own name give the same samples (one compile: equal grid
    values)."""
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(random_mixture(0, 2, 3), sde)
    kw = dict(key=jr.key(0), shape=(16, 2), solver=ss.DDIM(), steps=4)
    names = {ss.LogSNRGrid(): "log_snr", ss.KarrasGrid(): "karras", ss.UniformGrid(): "uniform"}
    by_default = ss.sample_ode(sde, score, **kw)
    by_name = ss.sample_ode(sde, score, grid=names[ss.DDIM().default_grid()], **kw)
    np.testing.assert_array_equal(np.asarray(by_default.x), np.asarray(by_name.x))


def test_dpm_solver3_one_step_budget_is_no_worse_than_ddim():
    """On a 2-D mixture with its exact score, DPM-Solver-3 with a budget of one step (3
    evaluations, spent on lower orders) is at least as accurate as one DDIM step; the
    full-order step over the whole interval (no budget: diffeqsolve with one constant step),
    the negative control, overshoots by more than 5x."""
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(random_mixture(0, 2, 3), sde)
    x_T = sde.prior_sample(jr.key(1), (64, 2))
    kw = dict(key=jr.key(0), shape=x_T.shape, grid="log_snr", x_T=x_T)
    ref = ss.sample_ode(sde, score, solver=ss.DPMSolverPP2M(), steps=100, **kw).x

    def err(x):
        return float(jnp.sqrt(jnp.mean((x - ref) ** 2)))

    ddim = err(ss.sample_ode(sde, score, solver=ss.DDIM(), steps=1, **kw).x)
    r = ss.sample_ode(sde, score, solver=ss.DPMSolver3(), steps=1, **kw)
    assert int(r.nfe[0]) == 3
    assert err(r.x) <= ddim, (err(r.x), ddim)

    t_eps = sde.default_t_eps

    def one_step(x):
        term = ss.probability_flow_term(sde, score)
        return dfx.diffeqsolve(term, ss.DPMSolver3(), 0.0, sde.T - t_eps, sde.T - t_eps, x).ys[0]

    assert err(jax.vmap(one_step)(x_T)) > 5 * ddim
