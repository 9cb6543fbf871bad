r"""Exact log-likelihood, bits per dimension, encoding and decoding through the PF-ODE.

Instantaneous change of variables: along the probability-flow ODE
$dx/dt = F(t, x) = f(t)x - \tfrac12 g(t)^2\,\mathrm{score}(t, x)$,

$$\ln p_{t_\varepsilon}(x) = \ln p_T(x_T) + \int_{t_\varepsilon}^{T} \nabla\cdot F(t, x_t)\,dt .$$

The augmented state $[x, \delta]$ is integrated FORWARD from $t_\varepsilon$ to $T$ (no time
reversal), one `diffeqsolve` per sample under `jax.vmap`, so each sample takes its own adaptive
steps; or, with `schedule=Lanes(L)`, on `L` lanes refilled as samples finish (`_lanes.py`); or,
with `schedule=SharedSteps()`, one `diffeqsolve` over the whole batch (`_schedule.py`). The
integration variable is `t` itself by default; `variable="log_snr"` integrates in the negated
half log-SNR $u = -\lambda(t)$ and `variable="log_sigma"` in $u = \ln\sigma(t)$ (the same
for EDM), with $dx/du = F\,dt/du$. The defaults (`t`, `diffrax.Dopri5`, diffrax's I-controller,
a first step of a 64th of the interval) needed the fewest evaluations of everything measured:
see [Why these defaults](../how-to/likelihood.md#why-these-defaults).

The drift is `pf_drift` (`scoresde/_score_calls.py`), the very function sampling integrates.
"""

import math
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Bool, Float, Int

from .. import _nfe as _nfe
from .._checks import (
    check_batch,
    check_bool,
    check_int,
    check_key,
    check_positive,
    check_sde_and_score,
    check_solver,
    check_steps,
    check_t_eps,
    is_concrete,
    raise_if_failed,
)
from .._custom_types import ScoreFn
from .._data import num_levels
from .._diffrax_private import SUCCESS_CODE, result_code
from .._keys import sample_keys
from .._progress import progress_meter
from .._sampling.sample import SampleResult
from .._score_calls import pf_drift
from .._sde import AbstractSDE
from .._sharding import map_batch, result_sharding
from .batching import AbstractSchedule, Lanes, SharedSteps, resolve_schedule
from .divergence import AbstractDivergence, Hutchinson
from .lanes import lane_diffeqsolve

VARIABLES = ("log_sigma", "log_snr", "t")


class _Clock(eqx.Module):
    """The integration variable `u`, increasing with `t`: `t(u)` and `dt/du`."""

    sde: AbstractSDE
    variable: str = eqx.field(static=True)

    def u_of_t(self, t):
        if self.variable == "t":
            return t
        if self.variable == "log_sigma":
            return jnp.log(self.sde.marginal(t)[1])
        return -self.sde.log_snr(t)

    def t_of_u(self, u):
        if self.variable == "t":
            return u, jnp.ones_like(u)
        if self.variable == "log_sigma":
            to_lam = self.sde.log_snr_from_log_std
        else:
            to_lam = jnp.negative
        return jax.jvp(lambda v: self.sde.log_snr_inverse(to_lam(v)), (u,), (jnp.ones_like(u),))


class _AugmentedFlow(eqx.Module):
    r"""$d[x, \delta]/du = [F(t, x), \nabla\cdot F(t, x)]\,dt/du$ with fixed probes."""

    sde: AbstractSDE
    score: ScoreFn
    divergence: AbstractDivergence
    clock: _Clock
    probes: object

    def __call__(self, u, y, args):
        x, _ = y
        t, dtdu = self.clock.t_of_u(u)
        fx, est = self.divergence(lambda z: pf_drift(self.sde, self.score, t, z), x, self.probes)
        return fx * dtdu.astype(x.dtype), est * dtdu.astype(x.dtype)


class _SharedFlow(eqx.Module):
    """`_AugmentedFlow` on the whole batch at one `u` (batched state and probes)."""

    sde: AbstractSDE
    score: ScoreFn
    divergence: AbstractDivergence
    clock: _Clock
    probes: object

    def __call__(self, u, y, args):
        def one(yi, pi):
            flow = _AugmentedFlow(self.sde, self.score, self.divergence, self.clock, pi)
            return flow(u, yi, args)

        return jax.vmap(one)(y, self.probes)


class _Flow(eqx.Module):
    """$dx/du = \\pm F(t(\\pm u), x)\\,dt/du$: `sign = -1` runs the flow backwards (decoding)."""

    sde: AbstractSDE
    score: ScoreFn
    clock: _Clock
    sign: int = eqx.field(static=True)

    def __call__(self, u, x, args):
        t, dtdu = self.clock.t_of_u(self.sign * u)
        return pf_drift(self.sde, self.score, t, x) * (self.sign * dtdu).astype(x.dtype)


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


class EncodeResult(eqx.Module):
    """Latents from [`scoresde.encode`][]: `z`, `nfe`, `num_steps`, and `solver_state` (the final
    state of `diffrax.ReversibleHeun`, which [`scoresde.decode`][] uses to invert exactly;
    `None` for other solvers)."""

    z: Float[Array, "batch *data"]
    nfe: Int[Array, " batch"]
    num_steps: Int[Array, " batch"]
    solver_state: object = None


class BitsPerDimResult(eqx.Module):
    r"""Bits per dimension and its components (see [`scoresde.bits_per_dim`][]).

    - `bpd`: per sample, $-\overline{\ln p_w(w)} / (D \ln 2)$.
    - `log_prob`: per sample, the model's $\ln p_x(x)$ (nats, mean over the repeats).
    - `log_det_jacobian`: $D \ln((\text{high} - \text{low}) / L)$ ($L$ = `levels`), the map
      $w \to x$.
    - `num_dims`: $D$. `stderr`: standard error of `bpd` over repeats (antithetic: over pairs)
      and probes (or `None`: one draw with one probe, or one antithetic pair).
    - `nfe`: score evaluations per sample, summed over repeats.
    """

    bpd: Float[Array, " batch"]
    log_prob: Float[Array, " batch"]
    log_det_jacobian: Float[Array, ""]
    num_dims: int = eqx.field(static=True)
    stderr: Float[Array, " batch"] | None
    nfe: Int[Array, " batch"]


def _controller(stepsize_controller, rtol, atol, norm=None):
    if stepsize_controller is not None:
        return stepsize_controller
    if norm is None:
        return dfx.PIDController(rtol=rtol, atol=atol)
    return dfx.PIDController(rtol=rtol, atol=atol, norm=norm)


def _augmented_rms(scaled_error):
    r"""RMS of the scaled errors of $x$'s entries and of the MEAN over the probes of $\delta$.

    The result uses $\bar\delta$, not each probe's $\delta_j$, so that is what the step-size
    control bounds: with one estimate this is the plain RMS norm; with $n$ it does not spend steps
    on per-probe errors that average out (fewer steps with many probes). Written so that its
    gradient at an exactly zero error is finite.
    """
    x_err, delta_err = scaled_error
    squares = jnp.sum(jnp.abs(x_err) ** 2) + jnp.abs(jnp.mean(delta_err)) ** 2
    mean = squares / (x_err.size + 1)
    positive = mean > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, mean, 1.0)), 0.0)


class _NatsController(dfx.PIDController):
    r"""`diffrax.PIDController` that controls $\delta$'s error alone, in nats.

    The error norm is $|\bar\delta_{\rm err}| / \text{nats\_tol}$: the embedded error
    estimate of the probe-mean $\delta$, absolute, per sample. $x$ is excluded (its errors reach
    $\delta$ through the divergence, which the estimate sees); measured against weighting $x$ in,
    at equal solver error: `benchmarks/likelihood_nats.py`. Diffrax's own code does the rest
    (acceptance, the I-controller's factor, clipping): `adapt_step_size` only rescales $\delta$'s
    error by the `atol + rtol * |y|` that diffrax then divides by, and zeroes $x$'s.
    """

    nats_tol: float | jax.Array = 1e-2

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        x_err, d_err = y_error
        d_y = jnp.maximum(jnp.abs(y0[1]), jnp.abs(y1_candidate[1]))
        d_y = jnp.where(jnp.isnan(d_y), jnp.abs(y0[1]), d_y)
        d_err = d_err * ((self.atol + d_y * self.rtol) / self.nats_tol)
        return super().adapt_step_size(
            t0, t1, y0, y1_candidate, args, (x_err, d_err), error_order, state
        )


def _delta_norm(scaled_error):
    r"""$|\bar\delta_{\rm err}|$ in units of `nats_tol` (see `_NatsController`); a NaN or inf in
    $x$'s error still rejects the step."""
    x_err, delta_err = scaled_error
    bad = ~jnp.all(jnp.isfinite(x_err))
    return jnp.where(bad, jnp.inf, jnp.abs(jnp.mean(delta_err)))


def _shared_rms(scaled_error):
    r"""`_augmented_rms` over a whole batch: the RMS over every entry of $x$ and each sample's
    probe-mean $\delta$ (scipy's one norm for the flattened batch)."""
    x_err, delta_err = scaled_error
    squares = jnp.sum(jnp.abs(x_err) ** 2) + jnp.sum(jnp.abs(jnp.mean(delta_err, axis=1)) ** 2)
    mean = squares / (x_err.size + delta_err.shape[0])
    positive = mean > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, mean, 1.0)), 0.0)


def _shared_delta_norm(scaled_error):
    r"""`_delta_norm` over a whole batch: the RMS over samples of $|\bar\delta_{\rm err}|$ in
    units of `nats_tol`."""
    x_err, delta_err = scaled_error
    bad = ~jnp.all(jnp.isfinite(x_err))
    mean = jnp.mean(jnp.abs(jnp.mean(delta_err, axis=1)) ** 2)
    positive = mean > 0
    rms = jnp.where(positive, jnp.sqrt(jnp.where(positive, mean, 1.0)), 0.0)
    return jnp.where(bad, jnp.inf, rms)


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
    dtype = x.dtype
    clock = _Clock(sde, variable)
    u0 = clock.u_of_t(t_eps).astype(dtype)
    u1 = clock.u_of_t(jnp.asarray(sde.T, dtype)).astype(dtype)
    dt0 = (u1 - u0) / 64 if dt0 is None else dt0
    shared = isinstance(schedule, SharedSteps)
    rms, delta_norm = (_shared_rms, _shared_delta_norm) if shared else (_augmented_rms, _delta_norm)
    if nats_tol is None or stepsize_controller is not None:
        controller = _controller(stepsize_controller, rtol, atol, rms)
    else:
        controller = _NatsController(rtol=rtol, atol=atol, norm=delta_norm, nats_tol=nats_tol)
    num = x.shape[0]
    keys = sample_keys(key, num, rows=rows) if key is not None else jnp.zeros((num,), jnp.uint32)
    n_est = divergence.num_estimates

    def setup(inp):
        xi, ki = inp
        probes = divergence.init(ki, lambda z: pf_drift(sde, score, t_eps, z), xi)
        return probes, (xi, jnp.zeros((n_est,), dtype))

    def make_term(probes):
        return dfx.ODETerm(_AugmentedFlow(sde, score, divergence, clock, probes))

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
        sol, count = solve(dfx.ODETerm(_SharedFlow(sde, score, divergence, clock, probes)), y0)
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


def _check_common(
    *, sde, score, solver, stepsize_controller, variable, rtol, atol, t_eps, max_steps
):
    check_sde_and_score(sde, score)
    check_solver(solver, stepsize_controller)
    if variable not in VARIABLES:
        raise ValueError(f"variable must be one of {VARIABLES}; got variable={variable!r}.")
    check_positive("rtol", rtol)
    check_positive("atol", atol, strict=False)
    check_t_eps(t_eps, sde.T)
    return check_int("max_steps", max_steps)


def _warn_precision(dtype, t_eps, who):
    """Below the default t_eps = 1e-5 (measured as accurate in float32 as t_eps = 1e-3 on the
    benchmark mixtures: `benchmarks/likelihood_precision.py`), float32 is untested: say so."""
    if dtype == jnp.float32 and is_concrete(t_eps) and float(t_eps) < 1e-5:
        warnings.warn(
            f"{who}: t_eps={float(t_eps):g} < 1e-5 in float32 may limit precision near the data "
            "(scores scale like 1/sigma(t_eps)^2); enable float64 with "
            "jax.config.update('jax_enable_x64', True) for accurate likelihoods.",
            stacklevel=3,
        )


def log_likelihood(
    sde: AbstractSDE,
    score: ScoreFn,
    x,
    *,
    key=None,
    solver: dfx.AbstractSolver = dfx.Dopri5(),
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_eps: float = 1e-5,
    divergence: AbstractDivergence = Hutchinson(),
    prior_log_prob=None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: str = "t",
    dt0: float | None = None,
    max_steps: int = 4096,
    adjoint: dfx.AbstractAdjoint = dfx.RecursiveCheckpointAdjoint(),
    throw: bool = True,
    lanes=None,
    progress: bool = False,
    nats_tol: float | None = None,
    schedule: AbstractSchedule | None = None,
    sharding=None,
    chunk_size: int | None = None,
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
    - `t_eps`: the start time, in $(0, T)$.
    - `divergence`: [`scoresde.Hutchinson`][] (default, one Rademacher probe),
      [`scoresde.EigenHutchinson`][] (variance-reduced) or [`scoresde.ExactDivergence`][].
    - `prior_log_prob`: $\ln p_T$ on one sample; defaults to `sde.prior_log_prob` (which is not
      exactly $p_T$: the error is of the order of $\mathrm{KL}(p_T \| \text{prior})$).
    - `variable`: the integration variable, `"t"` (default, fewest steps measured),
      `"log_snr"` ($u = -\lambda(t)$) or `"log_sigma"` ($u = \ln\sigma(t)$).
    - `adjoint`: the diffrax adjoint for gradients (e.g. w.r.t. a score network's parameters).
    - `throw`: raise `RuntimeError` on a failed solve; with `False` failed samples get NaN and
      their diffrax status in `status`.
    - `schedule`: how the batch's solves run (values from `scoresde._likelihood.batching`):
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
      (per-step) tolerance: the realised RMS solver error was 3 to 10 times `nats_tol`
      (`benchmarks/likelihood_nats.py`), and at equal solver error it cost as many NFE as the
      default norm (see [the measurements](../how-to/likelihood.md#error-control-in-nats)).
    - `sharding`, `chunk_size`: split the batch over devices (each runs its own solves; the
      result comes back with that sharding) and stream it in chunks, with results equal to the
      one-device call, as in [`scoresde.sample_ode`][].

    **Returns:** a [`scoresde.LikelihoodResult`][] (`log_prob`, `prior_log_prob`,
    `delta_log_prob`, `z`, `stderr`, `nfe`, `num_steps`, `successful`, `status`). `nfe` counts
    score evaluations exactly (rejected steps included); one evaluation with its
    Jacobian-vector products (or, for `ExactDivergence`, its full Jacobian) counts as one.

    **Raises:** `ValueError` if `key` is `None` with a stochastic estimator, `x` is not finite or
    not `(batch, *data_shape)`, `rtol <= 0` or `t_eps` is outside $(0, T)$.
    """
    max_steps = _check_common(
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
    _warn_precision(x.dtype, t_eps, "log_likelihood")
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
        )
        result = eqx.tree_at(lambda r: r.log_prob, result, log_prob)
    return result


def bits_per_dim(
    sde: AbstractSDE,
    score: ScoreFn,
    k,
    *,
    key=None,
    bits=None,
    levels=None,
    low: float = -1.0,
    high: float = 1.0,
    dequantization: str = "uniform",
    num_repeats: int = 1,
    progress: bool = False,
    sharding=None,
    chunk_size: int | None = None,
    **likelihood_kwargs,
) -> BitsPerDimResult:
    r"""Bits per dimension of integer data under the model, with an explicit data convention.

    Integers $k \in \{0, \dots, L - 1\}^D$ ($L$ = `levels`, any integer $\ge 2$) are dequantised
    to $w = k + u$ and mapped affinely to the model's range,
    $x = \text{low} + (\text{high} - \text{low})\,w / L$ (default $[-1, 1]$, so
    $x = 2(k + u)/L - 1$). With $\ln p_w(w) = \ln p_x(x) + D\ln((\text{high} - \text{low})/L)$,

    $$\text{bpd} = -\frac{\overline{\ln p_w(k + u)}}{D \ln 2},$$

    the mean over `num_repeats` draws of $u$. `dequantization="uniform"`: $u \sim U[0, 1)^D$, and
    the expectation bounds the discrete model: $E_u[-\ln p_w(k + u)] \ge -\ln P(k)$.
    `"antithetic"`: the same expectation from pairs $u, 1 - u$ (`num_repeats` even): each draw
    is still uniform, and the pair cancels the part of $\ln p_w$ that is linear across the bin
    (a lower-variance mean for the same solves).
    `"none"`: $u = 1/2$ (bin centres, one evaluation; approximates $-\ln P(k)$ for densities
    smooth on the scale of a bin). For 8 bits ($L = 256$) and $[-1, 1]$ this is MATH.md's
    $-\ln p_x(x)/(D\ln 2) + 7$. The 8x8 digits have $L = 17$ grey levels (0..16); see
    "Bits per dimension" in the likelihood concepts page for how the two conventions compare.

    **Arguments:**

    - `k`: integer data `(batch, *data_shape)` in $[0, L - 1]$ (any integer or float dtype).
    - `key`: for the dequantisation noise (repeat `r` of sample `i`: `fold_in(fold_in(k1, i), r)`;
      antithetic: `r // 2`, and $1 - u$ for odd `r`) and the estimator's probes; needed unless
      `dequantization="none"` with an exact divergence.
    - `levels`: the number of integer levels $L \ge 2$ (e.g. 17 for the digits' 0..16).
    - `bits`: shorthand for `levels=2**bits` (an int in [1, 16]). Give `bits` or `levels`, or
      both if they agree; neither means 8 bits ($L = 256$).
    - `low`, `high`, `dequantization`, `num_repeats`: the data convention above.
    - `progress`: show a progress meter (see [`scoresde.log_likelihood`][]).
    - `sharding`, `chunk_size`: as in [`scoresde.log_likelihood`][] (over the `batch *
      num_repeats` dequantised draws; the per-sample results come back with `sharding`).
    - `likelihood_kwargs`: passed to [`scoresde.log_likelihood`][] (`divergence`, `t_eps`,
      `schedule`, ...). With `schedule=SharedSteps()` the `batch * num_repeats` solves share one
      step sequence and each sample's `nfe` is `num_repeats` times that solve's.

    **Returns:** a [`scoresde.BitsPerDimResult`][] with `bpd`, `log_prob`, `log_det_jacobian`,
    `num_dims`, `stderr` and `nfe`.
    """
    if dequantization not in ("none", "uniform", "antithetic"):
        raise ValueError(
            "dequantization must be 'none', 'uniform' or 'antithetic'; got "
            f"dequantization={dequantization!r}."
        )
    antithetic = dequantization == "antithetic"
    levels = num_levels(bits, levels)
    repeats = check_steps(num_repeats) if dequantization != "none" else 1
    if antithetic and repeats % 2:
        raise ValueError(
            f"dequantization='antithetic' draws pairs u, 1 - u: num_repeats must be even; got "
            f"num_repeats={num_repeats!r}."
        )
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high; got low={low}, high={high}.")
    k = jnp.asarray(k)
    if k.ndim < 2:
        raise ValueError(f"k has shape {k.shape}; expected (batch, *data_shape).")
    if is_concrete(k):
        kk = np.asarray(k)
        if not np.all(np.isfinite(kk) & (kk == np.round(kk))):
            raise ValueError("k must hold integers; got non-integer or non-finite entries.")
        if kk.size and (kk.min() < 0 or kk.max() > levels - 1):
            raise ValueError(
                f"k must hold integers in [0, {levels - 1}] for levels={levels}; got entries "
                f"in [{kk.min():g}, {kk.max():g}]."
            )
    divergence = likelihood_kwargs.get("divergence", Hutchinson())
    if key is None and (dequantization != "none" or divergence.stochastic):
        raise ValueError(
            "key is None but bits_per_dim needs randomness (uniform dequantization or a "
            "stochastic divergence); pass key=jax.random.key(...)."
        )
    dtype = jnp.result_type(float)
    batch, data_shape = k.shape[0], k.shape[1:]
    num_dims = math.prod(data_shape)
    kf = k.astype(dtype)
    if dequantization != "none":
        key_u, key_ll = jr.split(key)

        def draw(ki, r):  # repeat r of one sample; antithetic pairs share fold_in(ki, r // 2)
            u = jr.uniform(jr.fold_in(ki, r // 2 if antithetic else r), data_shape, dtype)
            return jnp.where(r % 2 == 1, 1 - u, u) if antithetic else u

        u = jax.vmap(lambda ki: jax.vmap(lambda r: draw(ki, r))(jnp.arange(repeats)))(
            sample_keys(key_u, batch)
        )
    else:
        key_ll = key
        u = jnp.full((batch, 1, *data_shape), 0.5, dtype)
    w = kf[:, None] + u
    scale = (high - low) / levels
    x = (low + scale * w).reshape(batch * repeats, *data_shape)
    result = log_likelihood(
        sde,
        score,
        x,
        key=key_ll,
        progress=progress,
        sharding=sharding,
        chunk_size=chunk_size,
        **likelihood_kwargs,
    )
    if sharding is not None:  # the per-draw numbers on every device; the means below follow
        everywhere = NamedSharding(sharding.mesh, PartitionSpec())
        result = eqx.tree_at(
            lambda r: (r.log_prob, r.stderr, r.nfe),
            result,
            replace_fn=lambda a: jax.device_put(a, everywhere),
            is_leaf=lambda a: a is None,
        )
    log_jac = jnp.asarray(num_dims * math.log(scale), dtype)
    log_px = result.log_prob.reshape(batch, repeats)
    per_draw = -(log_px + log_jac) / (num_dims * math.log(2))
    bpd = jnp.mean(per_draw, axis=1)
    n_est = divergence.num_estimates
    # Independent units: the draws, or the antithetic pairs' means.
    units = per_draw.reshape(batch, repeats // 2, 2).mean(axis=2) if antithetic else per_draw
    if units.shape[1] > 1:  # their spread (includes the probe noise)
        stderr = jnp.std(units, axis=1, ddof=1) / math.sqrt(units.shape[1])
    elif n_est > 1 and not antithetic:  # the probes' error
        stderr = result.stderr / (num_dims * math.log(2))
    else:
        stderr = None
    out = BitsPerDimResult(
        bpd=bpd,
        log_prob=jnp.mean(log_px, axis=1),
        log_det_jacobian=log_jac,
        num_dims=num_dims,
        stderr=stderr,
        nfe=jnp.sum(result.nfe.reshape(batch, repeats), axis=1),
    )
    if sharding is not None:
        per_sample = result_sharding(sharding, batch)
        out = eqx.tree_at(
            lambda r: (r.bpd, r.log_prob, r.stderr, r.nfe),
            out,
            replace_fn=lambda a: jax.device_put(a, per_sample),
            is_leaf=lambda a: a is None,
        )
    return out


@eqx.filter_jit
def _flow(
    *,
    sde,
    score,
    x,
    t_eps,
    rtol,
    atol,
    solver_state,
    solver,
    stepsize_controller,
    steps,
    variable,
    max_steps,
    direction,
    rows=None,
):
    """Integrate the PF-ODE between `t_eps` and `T` (`direction=+1`: encode, `-1`: decode)."""
    dtype = x.dtype
    clock = _Clock(sde, variable)
    u_eps = clock.u_of_t(t_eps).astype(dtype)
    u_T = clock.u_of_t(jnp.asarray(sde.T, dtype)).astype(dtype)
    if steps is not None:
        grid = jnp.linspace(u_eps, u_T, steps + 1, dtype=dtype)
        # Decoding runs in v = -u over the same grid, negated (exactly) and reversed.
        grid = grid if direction == 1 else -grid[::-1]
        controller, dt0, max_steps = dfx.StepTo(ts=grid), None, steps
        v0, v1 = grid[0], grid[-1]
    else:
        controller = _controller(stepsize_controller, rtol, atol)
        v0, v1 = (u_eps, u_T) if direction == 1 else (-u_T, -u_eps)
        dt0 = (v1 - v0) / 64
    term = dfx.ODETerm(_Flow(sde, score, clock, direction))
    reversible = isinstance(solver, dfx.ReversibleHeun)

    def one(xi, state):
        cost = _nfe.evaluation_cost(solver, term, v0, xi)
        if state is None:
            state = _nfe.initial_solver_state(cost, term, v0, xi)
            init = 0
        else:  # ReversibleHeun's (yhat, vf): the vector field flips sign with the direction
            state = (state[0], -state[1])
            init = cost.init
        sol = dfx.diffeqsolve(
            term,
            solver,
            v0,
            v1,
            dt0,
            xi,
            stepsize_controller=controller,
            solver_state=state,
            max_steps=max_steps,
            saveat=dfx.SaveAt(t1=True, solver_state=reversible),
            throw=False,
        )
        steps_taken = sol.stats["num_steps"]
        nfe = _nfe.count(cost, steps_taken) - init
        out_state = sol.solver_state if reversible else None
        return sol.ys[0], nfe, steps_taken, sol.result == dfx.RESULTS.successful, out_state

    if solver_state is None:
        return jax.vmap(lambda xi: one(xi, None))(x)
    return jax.vmap(one)(x, solver_state)


def _run_flow(
    name,
    *,
    sde,
    score,
    x,
    solver_state=None,
    solver,
    steps,
    rtol,
    atol,
    t_eps,
    stepsize_controller,
    variable,
    max_steps,
    direction,
    sharding=None,
    chunk_size=None,
):
    max_steps = _check_common(
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
    x = check_batch("x" if direction == 1 else "z", x)
    if steps is not None:
        steps = check_steps(steps)
    if solver_state is not None and not isinstance(solver, dfx.ReversibleHeun):
        raise ValueError(f"{name}: solver_state is only used with diffrax.ReversibleHeun().")
    _warn_precision(x.dtype, t_eps, name)
    dtype = x.dtype
    out, nfe, num_steps, ok, state = map_batch(
        _flow,
        x.shape[0],
        {"x": x, "solver_state": solver_state},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        t_eps=jnp.asarray(t_eps, dtype),
        rtol=jnp.asarray(rtol, dtype),
        atol=jnp.asarray(atol, dtype),
        solver=solver,
        stepsize_controller=stepsize_controller,
        steps=steps,
        variable=variable,
        max_steps=max_steps,
        direction=direction,
    )
    out = raise_if_failed(name, ok, out)
    return out, nfe, num_steps.astype(jnp.int32), state


def encode(
    sde: AbstractSDE,
    score: ScoreFn,
    x,
    *,
    solver: dfx.AbstractSolver = dfx.Dopri5(),
    steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_eps: float = 1e-5,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: str = "t",
    max_steps: int = 4096,
    sharding=None,
    chunk_size: int | None = None,
) -> EncodeResult:
    r"""Map data `x` at `t_eps` to latents $z = x_T$ along the PF-ODE (deterministic).

    `steps` gives a fixed grid uniform in the integration variable (`variable`, as in
    [`scoresde.log_likelihood`][]); otherwise adaptive steps (`rtol`, `atol` or
    `stepsize_controller`). With `solver=diffrax.ReversibleHeun()` and `steps`, the result's
    `solver_state` lets [`scoresde.decode`][] invert the map exactly up to floating-point
    rounding (the method is algebraically reversible). `sharding`, `chunk_size`: as in
    [`scoresde.log_likelihood`][].

    **Returns:** an [`scoresde.EncodeResult`][] (`z`, `nfe`, `num_steps`, `solver_state`).
    """
    z, nfe, num_steps, state = _run_flow(
        "encode",
        sde=sde,
        score=score,
        x=x,
        solver=solver,
        steps=steps,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        stepsize_controller=stepsize_controller,
        variable=variable,
        max_steps=max_steps,
        direction=1,
        sharding=sharding,
        chunk_size=chunk_size,
    )
    return EncodeResult(z=z, nfe=nfe, num_steps=num_steps, solver_state=state)


def decode(
    sde: AbstractSDE,
    score: ScoreFn,
    z,
    *,
    solver: dfx.AbstractSolver = dfx.Dopri5(),
    steps: int | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_eps: float = 1e-5,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: str = "t",
    max_steps: int = 4096,
    solver_state=None,
    sharding=None,
    chunk_size: int | None = None,
) -> SampleResult:
    r"""Map latents `z` at `T` back to data at `t_eps` along the PF-ODE (inverse of `encode`).

    `z` is an array `(batch, *data_shape)` or an [`scoresde.EncodeResult`][]; from the latter,
    with `diffrax.ReversibleHeun()` and the same `steps`, `variable` and `t_eps` as the
    encoding, decoding retraces the encoder's steps exactly (round trip exact to floating point).
    Other arguments as in [`scoresde.encode`][].

    **Returns:** a [`scoresde.SampleResult`][] (`x`, `nfe`, `num_steps`).
    """
    if isinstance(z, EncodeResult):
        if solver_state is None and isinstance(solver, dfx.ReversibleHeun):
            solver_state = z.solver_state
        z = z.z
    x, nfe, num_steps, _ = _run_flow(
        "decode",
        sde=sde,
        score=score,
        x=z,
        solver_state=solver_state,
        solver=solver,
        steps=steps,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        stepsize_controller=stepsize_controller,
        variable=variable,
        max_steps=max_steps,
        direction=-1,
        sharding=sharding,
        chunk_size=chunk_size,
    )
    return SampleResult(x=x, nfe=nfe, num_steps=num_steps)
