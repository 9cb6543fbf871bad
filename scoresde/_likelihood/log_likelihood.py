r"""Exact log-likelihood through the probability-flow ODE: `log_likelihood` and its solve.

Instantaneous change of variables: along the probability-flow ODE
$dx/dt = F(t, x) = f(t)x - \tfrac12 g(t)^2\,\mathrm{score}(t, x)$,

$$\ln p_{t_\varepsilon}(x) = \ln p_T(x_T) + \int_{t_\varepsilon}^{T} \nabla\cdot F(t, x_t)\,dt .$$

The augmented state $[x, \delta]$ (`vector_fields.AugmentedFlow`) is integrated FORWARD from
$t_\varepsilon$ to $T$ in an integration variable $u$ (`integration_variable.py`), one
`diffeqsolve` per sample under `jax.vmap` (`PerSample`), on `L` refilled lanes (`Lanes(L)`,
`lanes.py`) or one `diffeqsolve` over the whole batch (`SharedSteps`); see `batching.py`.

The defaults below (`t`, `diffrax.Dopri5`, diffrax's I-controller, a first step of a 64th of the
interval, one Rademacher probe) needed the fewest evaluations of everything measured; they are
written once here and every caller that forwards the likelihood's arguments (`bits_per_dim`, the
certified estimators) takes them from here.
"""

import math
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .. import _nfe as _nfe
from .._checks import (
    check_batch,
    check_bool,
    check_int,
    check_key,
    check_ode_solver,
    check_positive,
    check_solver,
    check_t_eps,
    is_concrete,
    raise_if_failed,
)
from .._custom_types import ScoreFn
from .._diffrax_private import SUCCESS_CODE, result_code
from .._grid import AbstractExplicitGrid, LogSNRGrid, as_time_grid, resolve_explicit
from .._keys import sample_keys
from .._progress import progress_meter
from .._score_calls import diagnose_score, pf_drift
from .._sde import AbstractSDE, check_sde_and_score
from .._sharding import map_batch
from .batching import AbstractSchedule, Lanes, SharedSteps, resolve_schedule
from .divergence import AbstractDivergence, Hutchinson
from .integration_variable import (
    AbstractIntegrationVariable,
    TimeVariable,
    as_integration_variable,
)
from .lanes import lane_diffeqsolve
from .step_size_control import (
    NatsController,
    augmented_rms,
    delta_norm,
    pid_controller,
    shared_delta_norm,
    shared_rms,
)
from .vector_fields import AugmentedFlow, SharedFlow

# The likelihood solve's defaults, written once (bits_per_dim and the certified estimators
# forward their arguments with these defaults).
SOLVER = dfx.Dopri5()
RTOL = 1e-5
ATOL = 1e-5
T_EPS = 1e-5
DIVERGENCE = Hutchinson()
VARIABLE = TimeVariable()
MAX_STEPS = 4096
ADJOINT = dfx.RecursiveCheckpointAdjoint()


class LikelihoodResult(eqx.Module):
    """Per-sample log-likelihood and its parts.

    - `log_prob`: $\\ln p_{t_\\varepsilon}(x)$ in nats, `prior_log_prob + delta_log_prob`
      (NaN where the solve failed, with `throw=False`).
    - `prior_log_prob`: $\\ln p_T(z)$; `delta_log_prob`: $\\int \\nabla\\cdot F\\,dt$.
    - `z`: the latent $x_T$.
    - `stderr`: standard error of `log_prob` over the probes (`None` with one estimate).
    - `nfe`: score evaluations per sample (each with its JVPs counts once); `num_steps`: attempted
      steps; `successful`: whether each solve succeeded; `status`: diffrax's result code (0 = ok).
    """

    log_prob: Float[Array, " batch"]
    prior_log_prob: Float[Array, " batch"]
    delta_log_prob: Float[Array, " batch"]
    z: Float[Array, "batch *data"]
    stderr: Float[Array, " batch"] | None
    nfe: Int[Array, " batch"]
    num_steps: Int[Array, " batch"]
    successful: Bool[Array, " batch"]
    status: Int[Array, " batch"]


@eqx.filter_jit
def _log_likelihood(
    *,
    sde,
    score,
    x,
    key,
    t_eps,
    rtol,
    atol,
    prior_log_prob,
    dt0,
    divergence,
    solver,
    stepsize_controller,
    variable,
    max_steps,
    adjoint,
    schedule,
    progress,
    nats_tol=None,
    rows=None,
):
    """The jitted solves of `log_likelihood` on the rows `x` (global indices `rows`)."""
    dtype = x.dtype
    u0 = variable.u_of_t(sde, t_eps).astype(dtype)
    u1 = variable.u_of_t(sde, jnp.asarray(sde.T, dtype)).astype(dtype)
    if isinstance(stepsize_controller, dfx.StepTo):
        dt0 = None  # the grid sets every step
    else:
        dt0 = (u1 - u0) / 64 if dt0 is None else dt0
    shared = isinstance(schedule, SharedSteps)
    rms, nats_norm = (shared_rms, shared_delta_norm) if shared else (augmented_rms, delta_norm)
    if nats_tol is None or stepsize_controller is not None:
        controller = pid_controller(stepsize_controller, rtol, atol, rms)
    else:
        controller = NatsController(rtol=rtol, atol=atol, norm=nats_norm, nats_tol=nats_tol)
    num = x.shape[0]
    keys = sample_keys(key, num, rows=rows) if key is not None else jnp.zeros((num,), jnp.uint32)
    n_est = divergence.num_estimates

    def setup(inp):
        xi, ki = inp
        probes = divergence.init(ki, lambda z: pf_drift(sde, score, t_eps, z), xi)
        return probes, (xi, jnp.zeros((n_est,), dtype))

    def make_term(probes):
        return dfx.ODETerm(AugmentedFlow(sde, score, divergence, variable, probes))

    def solve(term, y0):
        """One diffeqsolve from t_eps to T: `(sol, nfe)`, the probes' first evaluation counted."""
        sol, nfe = _nfe.counted_diffeqsolve(
            term,
            solver,
            u0,
            u1,
            dt0,
            y0,
            stepsize_controller=controller,
            max_steps=max_steps,
            adjoint=adjoint,
            progress_meter=progress_meter(progress),
        )
        return sol, jnp.where(nfe >= 0, nfe + divergence.evals_at_init, nfe)

    def one(xi, ki):
        probes, y0 = setup((xi, ki))
        sol, nfe = solve(make_term(probes), y0)
        z, deltas = sol.ys[0][0], sol.ys[1][0]
        steps = sol.stats["num_steps"]
        return z, deltas, steps, nfe, sol.result == dfx.RESULTS.successful, result_code(sol.result)

    def shared_solve():
        probes, y0 = jax.vmap(setup)((x, keys))
        sol, count = solve(dfx.ODETerm(SharedFlow(sde, score, divergence, variable, probes)), y0)
        ones = jnp.ones((num,), jnp.int32)
        return (
            sol.ys[0][0],
            sol.ys[1][0],
            sol.stats["num_steps"] * ones,
            count * ones,
            jnp.broadcast_to(sol.result == dfx.RESULTS.successful, (num,)),
            result_code(sol.result) * ones,
        )

    if shared:
        z, deltas, steps, nfe, ok, status = shared_solve()
    elif not isinstance(schedule, Lanes):
        z, deltas, steps, nfe, ok, status = jax.vmap(one)(x, keys)
    else:
        (z, deltas), steps, nfe, status = lane_diffeqsolve(
            make_term,
            setup,
            (x, keys),
            solver,
            u0,
            u1,
            dt0,
            stepsize_controller=controller,
            max_steps=max_steps,
            lanes=schedule.lanes,
        )
        nfe = jnp.where(nfe >= 0, nfe + divergence.evals_at_init, nfe)
        ok = status == SUCCESS_CODE
    prior = jax.vmap(prior_log_prob)(z).astype(dtype)
    delta = jnp.mean(deltas, axis=1)
    stderr = jnp.std(deltas, axis=1, ddof=1) / math.sqrt(n_est) if n_est > 1 else None
    log_prob = jnp.where(ok, prior + delta, jnp.nan)
    return LikelihoodResult(
        log_prob=log_prob,
        prior_log_prob=prior,
        delta_log_prob=delta,
        z=z,
        stderr=stderr,
        nfe=nfe,
        num_steps=steps.astype(jnp.int32),
        successful=ok,
        status=status,
    )


def check_common(
    who, *, sde, score, solver, stepsize_controller, variable, rtol, atol, t_eps, max_steps
) -> tuple[AbstractIntegrationVariable, int]:
    """Checks shared by `log_likelihood`, `encode` and `decode`: `(variable, max_steps)` as
    values (`variable` converted from its string alias)."""
    check_sde_and_score(sde, score)
    check_solver(solver, stepsize_controller)
    check_ode_solver(who, solver)
    variable = as_integration_variable(variable)
    check_positive("rtol", rtol)
    check_positive("atol", atol, strict=False)
    check_t_eps(t_eps, sde.T)
    return variable, check_int("max_steps", max_steps)


def warn_precision(dtype, t_eps, who):
    """Warn below the default t_eps = 1e-5 in float32. At and above it float32 is measured:
    with exact scores (VP; ring2d, aniso64 and 2-D mixtures of std 1e-2 and 1e-3), float32
    agrees with float64 to the solver's tolerance at every t_eps from 1e-3 to 1e-7, with no
    trend in t_eps (`benchmarks/likelihood_precision.py`, `results/likelihood_precision.json`).
    Below 1e-5 float32 is not validated for every SDE and data scale: say so."""
    if dtype == jnp.float32 and is_concrete(t_eps) and float(t_eps) < T_EPS:
        warnings.warn(
            f"{who}: t_eps={float(t_eps):g} < {T_EPS:g} in float32 is outside the start times "
            "validated against float64 (scores scale like 1/sigma(t_eps)^2 near sharp data); "
            "check against float64 (jax.config.update('jax_enable_x64', True)).",
            stacklevel=3,
        )


def fixed_step_controller(sde, grid, steps, t_eps, controller, schedule, nats_tol, variable):
    """`(StepTo over the grid's times in the integration variable, t_eps, max_steps)` for
    `log_likelihood(grid=..., steps=...)`, after checking what a fixed grid excludes."""
    if controller is not None or nats_tol is not None:
        raise ValueError(
            "log_likelihood: grid=/steps= give fixed steps; do not pass stepsize_controller or "
            "nats_tol with them."
        )
    if isinstance(schedule, (Lanes, int)):
        raise ValueError(
            "log_likelihood: lanes refill adaptive solves; with a fixed grid every sample takes "
            "the same steps: use schedule=PerSample() or SharedSteps()."
        )
    grid = as_time_grid(LogSNRGrid() if grid is None else grid)
    if any(getattr(grid, n, None) is not None for n in ("network_times", "network_scales")):
        raise ValueError(
            "log_likelihood: this grid carries network times or network scales (tuned for "
            "sampling: the network asked at other times, its output scaled); its ODE is not the "
            "model's, so its likelihood is not the model's. Pass a grid without them (e.g. "
            "ss.TimeGrid(grid.times))."
        )
    if isinstance(grid, AbstractExplicitGrid):
        grid_t_eps = float(grid.times[-1])
        if t_eps != T_EPS and abs(t_eps - grid_t_eps) > 1e-6 * abs(t_eps):
            raise ValueError(f"log_likelihood: the grid ends at {grid_t_eps} but t_eps={t_eps}.")
        t_eps = grid_t_eps
    grid, steps, t_eps = resolve_explicit(grid, sde, steps, t_eps)
    if steps is None:
        raise ValueError("log_likelihood: a named grid needs steps=...")
    steps = check_int("steps", steps)
    check_t_eps(t_eps, sde.T)
    times = grid.times_for(sde, steps, t_eps)
    u_grid = as_integration_variable(variable).u_of_t(sde, times[::-1])
    return dfx.StepTo(ts=u_grid), t_eps, steps


def log_likelihood(
    sde: AbstractSDE,
    score: ScoreFn,
    x,
    *,
    key=None,
    solver: dfx.AbstractSolver = SOLVER,
    rtol: float = RTOL,
    atol: float = ATOL,
    t_eps: float = T_EPS,
    divergence: AbstractDivergence = DIVERGENCE,
    prior_log_prob=None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: AbstractIntegrationVariable | str = VARIABLE,
    dt0: float | None = None,
    max_steps: int = MAX_STEPS,
    adjoint: dfx.AbstractAdjoint = ADJOINT,
    throw: bool = True,
    lanes=None,
    progress: bool = False,
    nats_tol: float | None = None,
    schedule: AbstractSchedule | None = None,
    sharding=None,
    chunk_size: int | None = None,
    grid=None,
    steps: int | None = None,
) -> LikelihoodResult:
    r"""Log-density of each sample of `x` under the probability-flow ODE of `sde`.

    Integrates $[x, \delta]$ from `t_eps` up to `sde.T` with $\dot\delta = \nabla\cdot F$:
    $\ln p_{t_\varepsilon}(x) = \ln p_T(x_T) + \delta(T)$ (nats per sample), one adaptive
    `diffeqsolve` per sample, fully jitted.

    **Arguments:**

    - `sde`, `score`: the SDE and the score `score(t, x)` on one sample.
    - `x`: a batch `(batch, *data_shape)`.
    - `key`: sample `i` draws its probes from `fold_in(key, i)`; needed by stochastic
      estimators, ignored by [`scoresde.ExactDivergence`][].
    - `solver`: any explicit diffrax ODE solver (default `Dopri5`, the fewest NFE measured);
      `rtol`, `atol` set the default `diffrax.PIDController`, whose error norm is the RMS over
      $x$'s entries and the mean over the probes of $\delta$ (or pass `stepsize_controller`);
      `dt0` is the first step (default: a 64th of the interval).
    - `t_eps`: the start time, in $(0, T)$ (default $10^{-5}$: with exact scores, float32 is
      as accurate there as float64; below it a float32 call warns).
    - `divergence`: [`scoresde.Hutchinson`][] (default, one Rademacher probe),
      [`scoresde.EigenHutchinson`][] (variance-reduced) or [`scoresde.ExactDivergence`][].
    - `prior_log_prob`: $\ln p_T$ on one sample; defaults to `sde.prior_log_prob` (which is not
      exactly $p_T$: the error is of the order of $\mathrm{KL}(p_T \| \text{prior})$).
    - `variable`: the integration variable: [`scoresde.TimeVariable`][]`()` ($u = t$, the
      default, fewest steps measured; alias `"t"`), [`scoresde.LogSNRVariable`][]`()`
      ($u = -\lambda(t)$; `"log_snr"`) or [`scoresde.LogSigmaVariable`][]`()`
      ($u = \ln\sigma(t)$; `"log_sigma"`).
    - `adjoint`: the diffrax adjoint for gradients (e.g. w.r.t. a score network's parameters).
    - `throw`: raise `RuntimeError` on a failed solve; with `False` failed samples get NaN and
      their diffrax status in `status`.
    - `schedule`: how the batch's solves run (a [`scoresde.PerSample`][], [`scoresde.Lanes`][] or
      [`scoresde.SharedSteps`][]):
        - [`scoresde.PerSample`][]`()` (the default, also for `None`) solves every sample under
          `jax.vmap` with its own steps and error norm, which runs the whole batch until its
          slowest sample is done (time $\approx \max_i \mathrm{NFE}_i$ batched evaluations)
          and supports gradients through `adjoint`. It stays the default
          ([why, measured](../how-to/likelihood.md#schedulepersample)): a sample's result does
          not depend on its batch.
        - [`scoresde.Lanes`][]`(L)` integrates `L` samples at a time and refills a lane with the
          next sample as soon as its solve ends (time $\approx \sum_i \mathrm{NFE}_i / L$
          evaluations on `L` lanes, plus a tail): the same per-sample solves up to
          floating-point rounding (which can change an adaptive step, so a sample's NFE may
          differ slightly), but no reverse-mode gradients. Lanes pay off on large batches whose
          NFE vary ([measurements](../how-to/likelihood.md#why-these-defaults)).
        - [`scoresde.SharedSteps`][]`()` takes ONE adaptive step sequence for the whole batch
          (scipy's semantics, as in the original score-SDE code): one `diffeqsolve` over the
          batch, whose error norm is the RMS over every sample's $x$ entries and probe-mean
          $\delta$ (with `nats_tol`: the RMS over samples of the $\delta$ errors). Each step is
          one wide evaluation and every sample reports the batch's `nfe`; gradients through
          `adjoint` as for `PerSample`. The trade-off: the steps are set by the hardest samples
          and the averaged norm is looser for any one sample than its own, so **the result
          for sample $i$ depends on the rest of the batch** (its value, error and NFE change
          if the batch does), and at a given `rtol` the per-sample error is not bounded as it
          is with `PerSample`.
    - `lanes`: an int `L`, a synonym of `schedule=Lanes(L)` (kept for compatibility); passing
      both `lanes` and `schedule` raises `ValueError`.
    - `progress`: show diffrax's tqdm progress meter (the slowest sample; not with `Lanes`).
    - `nats_tol`: control the error of the reported quantity instead: each step's embedded error
      estimate of the probe-mean $\delta$ must be below `nats_tol` nats (absolute, per sample);
      $x$ is not controlled separately and `rtol`, `atol` are then unused. This is a LOCAL
      (per-step) tolerance: the realised solver error is a multiple of `nats_tol` (see
      [the measurements](../how-to/likelihood.md#error-control-in-nats)).
    - `sharding`, `chunk_size`: split the batch over devices (each runs its own solves; the
      result comes back with that sharding) and stream it in chunks, with results equal to the
      one-device call, as in [`scoresde.sample_ode`][].

    **Returns:** a [`scoresde.LikelihoodResult`][] (`log_prob`, `prior_log_prob`,
    `delta_log_prob`, `z`, `stderr`, `nfe`, `num_steps`, `successful`, `status`). `nfe` counts
    score evaluations exactly (rejected steps included); one evaluation with its
    Jacobian-vector products (or, for `ExactDivergence`, its full Jacobian) counts as one.

    Fixed steps instead of adaptive ones: `grid`, a grid of given times from $T$ down to
    $t_\varepsilon$ (a [`scoresde.TimeGrid`][], e.g. from [`scoresde.tune_likelihood_grid`][],
    or an array; `steps` and `t_eps` implied), or a named grid with `steps`; the ODE is then
    integrated over those times in reverse, in `variable`, by `solver` (exact `nfe`; no error
    control, so check such a grid against the adaptive solve, as the tuner does).

    **Raises:** `ValueError` if `key` is `None` with a stochastic estimator, `x` is not finite or
    not `(batch, *data_shape)`, `rtol <= 0` or `t_eps` is outside $(0, T)$.
    """
    if grid is not None or steps is not None:
        stepsize_controller, t_eps, max_steps = fixed_step_controller(
            sde, grid, steps, t_eps, stepsize_controller, schedule if lanes is None else lanes,
            nats_tol, variable,
        )  # fmt: skip
    variable, max_steps = check_common(
        "log_likelihood",
        sde=sde,
        score=score,
        solver=solver,
        stepsize_controller=stepsize_controller,
        variable=variable,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        max_steps=max_steps,
    )
    if not isinstance(divergence, AbstractDivergence):
        raise TypeError(
            "divergence must be ExactDivergence(), Hutchinson(...) or EigenHutchinson(...); "
            f"got {divergence!r}."
        )
    schedule = resolve_schedule(schedule, lanes)
    if isinstance(schedule, SharedSteps) and (sharding is not None or chunk_size is not None):
        raise ValueError(
            "schedule=SharedSteps() shares one step sequence over the whole batch, so it cannot "
            "be split over devices or chunks; use schedule=PerSample() or Lanes(L) with "
            "sharding= or chunk_size=."
        )
    if nats_tol is not None:
        check_positive("nats_tol", nats_tol)
        if stepsize_controller is not None:
            raise ValueError(
                "nats_tol sets the step-size controller; pass nats_tol=None with "
                "stepsize_controller, or drop stepsize_controller."
            )
    x = check_batch("x", x)
    divergence.check(x.shape[1:])
    if divergence.stochastic and key is None:
        raise ValueError(
            f"key is None but divergence={type(divergence).__name__}(...) is stochastic; pass "
            "key=jax.random.key(...) (or use divergence=ExactDivergence())."
        )
    if divergence.stochastic:
        key = check_key(key)
    if prior_log_prob is None:
        prior_log_prob = sde.prior_log_prob
    elif not callable(prior_log_prob):
        raise TypeError(f"prior_log_prob must be callable on one sample; got {prior_log_prob!r}.")
    warn_precision(x.dtype, t_eps, "log_likelihood")
    dtype = x.dtype
    result = map_batch(
        _log_likelihood,
        x.shape[0],
        {"x": x},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        key=key if divergence.stochastic else None,
        t_eps=jnp.asarray(t_eps, dtype),
        rtol=jnp.asarray(rtol, dtype),
        atol=jnp.asarray(atol, dtype),
        prior_log_prob=prior_log_prob,
        dt0=None if dt0 is None else jnp.asarray(dt0, dtype),
        divergence=divergence,
        solver=solver,
        stepsize_controller=stepsize_controller,
        variable=variable,
        max_steps=max_steps,
        adjoint=adjoint,
        schedule=schedule,
        progress=check_bool("progress", progress),
        nats_tol=None if nats_tol is None else jnp.asarray(nats_tol, dtype),
    )
    if throw:
        log_prob = raise_if_failed(
            "log_likelihood",
            result.successful,
            result.log_prob,
            detail=f"{type(solver).__name__}, max_steps={max_steps}",
            diagnose=diagnose_score(score, t_eps, x),
        )
        result = eqx.tree_at(lambda r: r.log_prob, result, log_prob)
    return result
