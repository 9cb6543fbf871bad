r"""Sampling by integrating the probability-flow ODE or the reverse-time SDE with diffrax, and
EDM's stochastic sampler.

The entry points run in the reversed time $s = T - t$ from $s = 0$ ($t = T$) to
$s = T - t_\varepsilon$. Sample `i` draws its prior latent and its noise from
`jax.random.fold_in(key, i)`, so its random draws are the same whatever the batch size.

The step mode is decided once, as a value the solve dispatches on:

- `FixedGrid` (`steps` given, no controller): one `diffeqsolve`
  over the whole batch on a grid from [`scoresde.time_grid`][], with a per-sample Brownian path
  drawn step by step (one normal draw per step; no Brownian tree). A sample then takes the same
  steps and NFE whatever the batch it was drawn in, and its value differs at most by the
  rounding of the batched score;
- `Adaptive` (a `stepsize_controller`): one `diffeqsolve` per sample
  under `jax.vmap`, so each sample takes its own steps; SDEs use a `diffrax.VirtualBrownianTree`
  whose tolerance is below the controller's smallest step. A sample's random draws do not depend
  on its batch; its value does up to floating-point rounding (batched arithmetic can round
  differently, which can change an adaptive step).
"""

import math
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, Int

from .. import _nfe as _nfe
from .._checks import (
    check_bool,
    check_int,
    check_key,
    check_latents,
    check_positive,
    check_sde_and_score,
    check_shape,
    check_solver,
    check_steps,
    check_t_eps,
    check_tolerances,
    is_concrete,
    raise_if_failed,
    raise_if_not_finite,
)
from .._custom_types import ScoreFn
from .._grid import GRIDS, time_grid
from .._keys import latents_and_noise_keys
from .._progress import progress_meter, scan_steps
from .._score_calls import bind, check_cond, tweedie_batch
from .._sde import AbstractSDE
from .._sharding import map_batch, result_sharding
from .._solver.base import AbstractPFSolver, PFModel
from .._solver.edm import heun_step
from .._terms import BatchedScore, probability_flow_term, reverse_terms
from .brownian import BatchBrownianPath


class SampleResult(eqx.Module):
    """Samples with their cost.

    - `x`: the samples, `(num, *data_shape)` (NaN where a solve failed, with `throw=False`).
    - `nfe`: score evaluations per sample (solver stages x attempted steps, rejected ones
      included, plus the final denoising step); `-1` where the solver's cost is unknown
      (implicit solvers).
    - `num_steps`: attempted steps per sample.
    - `successful`: whether each sample's solve succeeded (`None` for samplers that cannot fail).
    """

    x: Float[Array, "num *data"]
    nfe: Int[Array, " num"]
    num_steps: Int[Array, " num"]
    successful: Bool[Array, " num"] | None = None


EDMResult = SampleResult
"""[`scoresde.sample_edm`][]'s result: a [`scoresde.SampleResult`][] (kept as an alias)."""


class FixedGrid(eqx.Module):
    """Fixed steps: `steps` steps on a grid of kind `kind`, or the explicit decreasing times
    `ts` (from `sde.T` to `t_eps`)."""

    steps: int = eqx.field(static=True)
    kind: str = eqx.field(static=True, default="uniform")
    ts: Float[Array, " steps_plus_one"] | None = None

    def times(self, sde, t_eps, dtype):
        if self.ts is not None:
            return self.ts.astype(dtype)
        return time_grid(sde, self.steps, t_eps=t_eps, kind=self.kind, dtype=dtype)


class Adaptive(eqx.Module):
    """Adaptive steps under `controller`, from a first step `dt0`, at most `max_steps`."""

    controller: dfx.AbstractStepSizeController
    dt0: Float[Array, ""]
    max_steps: int = eqx.field(static=True)


def _levy_area(solver):
    """The Lévy area the solver needs from the Brownian path (space-time if it can use it)."""
    levy = getattr(solver, "minimal_levy_area", dfx.BrownianIncrement)
    return dfx.SpaceTimeLevyArea if issubclass(dfx.SpaceTimeLevyArea, levy) else levy


@eqx.filter_jit
def _sample(
    *,
    sde,
    score,
    key,
    t_eps,
    x_T,
    mode,
    shape,
    solver,
    denoise,
    stochastic,
    brownian_tol,
    progress,
    cond,
    rows=None,
):
    if rows is not None:  # this device's (or chunk's) rows of the batch
        shape = (rows.num, *shape[1:])
    num, data_shape = shape[0], shape[1:]
    dtype = jnp.result_type(float)
    x_T, noise_keys = latents_and_noise_keys(sde, key, shape, x_T, dtype, rows)
    # Reversed time s = -t (terms with origin 0): every solver steps forward, and s keeps
    # full floating-point resolution near t_eps even when T is large (EDM: T = 80).
    s0, s_end = -jnp.asarray(sde.T, dtype), -t_eps
    levy = _levy_area(solver)

    if isinstance(mode, FixedGrid):  # the whole batch in one solve
        s_grid = -mode.times(sde, t_eps, dtype)
        batched = BatchedScore(score, cond)
        if stochastic:
            path = BatchBrownianPath(noise_keys, shape, dtype, levy)
            terms = reverse_terms(sde, batched, path, origin=0.0)
        else:
            terms = probability_flow_term(sde, batched, origin=0.0)
        sol, nfe = _nfe.counted_diffeqsolve(
            terms,
            solver,
            s_grid[0],
            s_grid[-1],
            None,
            x_T,
            stepsize_controller=dfx.StepTo(ts=s_grid),
            max_steps=mode.steps,
            progress_meter=progress_meter(progress),
        )
        x = sol.ys[0]
        nfe = jnp.broadcast_to(nfe, (num,))
        num_steps = jnp.broadcast_to(sol.stats["num_steps"], (num,))
        ok = jnp.broadcast_to(sol.result == dfx.RESULTS.successful, (num,))
    else:

        def make_terms(noise_key, score_i):
            if not stochastic:
                return probability_flow_term(sde, score_i, origin=0.0)
            path = dfx.VirtualBrownianTree(
                s0, s_end, brownian_tol, data_shape, noise_key, levy_area=levy
            )
            return reverse_terms(sde, score_i, path, origin=0.0)

        def one(x0, noise_key, cond_i):
            sol, nfe = _nfe.counted_diffeqsolve(
                make_terms(noise_key, bind(score, cond_i)),
                solver,
                s0,
                s_end,
                mode.dt0,
                x0,
                stepsize_controller=mode.controller,
                max_steps=mode.max_steps,
                progress_meter=progress_meter(progress),
            )
            ok = sol.result == dfx.RESULTS.successful
            return sol.ys[0], nfe, sol.stats["num_steps"], ok

        x, nfe, num_steps, ok = jax.vmap(one)(x_T, noise_keys, cond)

    if denoise:
        x = tweedie_batch(sde, score, t_eps, x, cond)
        nfe = jnp.where(nfe >= 0, nfe + 1, nfe)
    return x, nfe, num_steps, ok


def _explicit_grid(grid, sde, t_eps, steps, controller):
    """Validate a user's grid of times (decreasing from `sde.T` to its last entry, `t_eps`)."""
    ts = jnp.asarray(grid)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(
            f"grid must be a string or a 1-D array of >= 2 times; got shape {ts.shape}."
        )
    if controller is not None and not isinstance(controller, (dfx.StepTo, dfx.ConstantStepSize)):
        raise ValueError("grid as an array gives fixed steps; do not pass a stepsize_controller.")
    if steps is not None and steps != ts.shape[0] - 1:
        raise ValueError(f"steps={steps} disagrees with the grid's {ts.shape[0] - 1} steps.")
    if is_concrete(ts):
        host = jnp.asarray(ts, float)
        if not bool(jnp.all(jnp.diff(host) < 0)):
            raise ValueError("grid must be strictly decreasing (from sde.T down to t_eps).")
        if abs(float(host[0]) - sde.T) > 1e-6 * sde.T:
            raise ValueError(f"grid must start at sde.T = {sde.T}; got {float(host[0])}.")
        if t_eps is not None and abs(float(host[-1]) - t_eps) > 1e-6 * abs(t_eps):
            raise ValueError(f"grid ends at {float(host[-1])} but t_eps={t_eps}.")
        t_eps = float(host[-1])
    return ts, t_eps


def _step_mode(name, *, sde, steps, controller, t_eps, grid, dt0, max_steps, dtype):
    """Decide fixed or adaptive steps once: `(FixedGrid | Adaptive, t_eps)`."""
    ts = None
    if not isinstance(grid, str):
        ts, t_eps = _explicit_grid(grid, sde, t_eps, steps, controller)
        steps, grid = ts.shape[0] - 1, "uniform"
    elif grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS} or an array of times; got grid={grid!r}.")
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    if steps is not None:
        steps = check_steps(steps)
    if isinstance(controller, (dfx.StepTo, dfx.ConstantStepSize)):
        if steps is None:
            raise ValueError(
                f"{name}: a fixed-step controller needs steps=...; or pass steps alone."
            )
        controller = None  # a fixed grid; the grid comes from `steps` and `grid`
    if controller is None:
        if steps is None:
            raise ValueError(f"{name} needs steps=... (fixed grid) or a stepsize_controller.")
        return FixedGrid(steps, grid, None if ts is None else jnp.asarray(ts, dtype)), t_eps
    max_steps = check_int("max_steps", max_steps)
    if dt0 is None:
        dt0 = (sde.T - t_eps) / (steps if steps is not None else 64)
    check_positive("dt0", dt0)  # adaptive: `steps` only set the first step size
    return Adaptive(controller, jnp.asarray(dt0, dtype), max_steps), t_eps


def _brownian_tolerance(mode, sde, brownian_tol):
    """The Brownian tree's tolerance, and a controller whose smallest step it resolves."""
    if brownian_tol is None:
        brownian_tol = 1e-6 * sde.T
    check_positive("brownian_tol", brownian_tol)
    controller = mode.controller
    if isinstance(controller, dfx.PIDController):
        if controller.dtmin is None:
            controller = eqx.tree_at(
                lambda c: c.dtmin, controller, 10 * brownian_tol, is_leaf=lambda x: x is None
            )
        elif controller.dtmin <= brownian_tol:
            raise ValueError(
                f"The controller's dtmin={controller.dtmin} must exceed brownian_tol="
                f"{brownian_tol}: the Brownian tree must resolve the smallest step."
            )
    return eqx.tree_at(lambda m: m.controller, mode, controller), brownian_tol


def _run(
    name,
    *,
    sde,
    score,
    key,
    shape,
    solver,
    steps,
    controller,
    t_eps,
    denoise,
    grid,
    x_T,
    stochastic,
    dt0,
    max_steps,
    brownian_tol=None,
    throw,
    progress,
    cond=None,
    sharding=None,
    chunk_size=None,
):
    check_sde_and_score(sde, score)
    check_solver(solver, controller)
    if stochastic and isinstance(solver, AbstractPFSolver):
        raise TypeError(
            f"{type(solver).__name__} integrates the probability-flow ODE only: use "
            "scoresde.sample_ode with it, not sample_sde."
        )
    key = check_key(key)
    shape = check_shape(shape)
    denoise, throw = check_bool("denoise", denoise), check_bool("throw", throw)
    dtype = jnp.result_type(float)
    mode, t_eps = _step_mode(
        name,
        sde=sde,
        steps=steps,
        controller=controller,
        t_eps=t_eps,
        grid=grid,
        dt0=dt0,
        max_steps=max_steps,
        dtype=dtype,
    )
    if stochastic and isinstance(mode, Adaptive):
        mode, brownian_tol = _brownian_tolerance(mode, sde, brownian_tol)
    x, nfe, num_steps, ok = map_batch(
        _sample,
        shape[0],
        {"x_T": check_latents(x_T, shape, dtype), "cond": check_cond(cond, shape[0])},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        key=key,
        t_eps=jnp.asarray(t_eps, dtype),
        mode=mode,
        shape=shape,
        solver=solver,
        denoise=denoise,
        stochastic=stochastic,
        brownian_tol=brownian_tol,
        progress=check_bool("progress", progress),
    )
    if throw:
        x = raise_if_failed(name, ok, x, detail=f"{type(solver).__name__}; max_steps={max_steps}")
        raise_if_not_finite(
            name,
            x,
            hint="the score or the step size is unstable. Use more steps or an adaptive "
            "controller.",
        )
    else:
        ok = ok & jnp.all(jnp.isfinite(x.reshape(shape[0], -1)), axis=1)
        x = jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.nan)
    if is_concrete(nfe) and int(jnp.min(nfe)) < 0:
        warnings.warn(
            f"{name}: the number of score evaluations of {type(solver).__name__} is not "
            "known; nfe is -1.",
            stacklevel=3,
        )
    return SampleResult(x=x, nfe=nfe, num_steps=num_steps.astype(jnp.int32), successful=ok)


def sample_ode(
    sde: AbstractSDE,
    score: ScoreFn,
    *,
    key,
    shape: tuple[int, ...],
    solver: dfx.AbstractSolver = dfx.Tsit5(),
    steps: int | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    t_eps: float | None = None,
    denoise: bool = False,
    grid="uniform",
    x_T=None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    dt0: float | None = None,
    max_steps: int = 4096,
    throw: bool = True,
    progress: bool = False,
    cond=None,
    sharding=None,
    chunk_size: int | None = None,
) -> SampleResult:
    r"""Draw samples by integrating the probability-flow ODE from $T$ down to `t_eps`.

    $dx/ds = -F(T - s, x)$ with $F(t, x) = f(t)x - \tfrac12 g(t)^2\,\mathrm{score}(t, x)$, from
    $x_T$ drawn from the prior.

    **Arguments:**

    - `sde`, `score`: the SDE and the score `score(t, x)` on one sample.
    - `key`: sample `i` uses `fold_in(key, i)`; `shape = (num, *data_shape)`.
    - `solver`: any diffrax ODE solver (or this package's exponential integrators).
    - `steps`: a fixed grid of that many steps (kind `grid`: `"uniform"`, `"log_snr"`,
      `"karras"`, `"clipped_log_snr"`; see [`scoresde.time_grid`][]). `grid` may also be an
      explicit array of times decreasing from `sde.T` to `t_eps` (then `steps` is implied).
      Without `steps`, adaptive steps under `stepsize_controller`, by default
      `diffrax.PIDController(rtol, atol)`; with both, `steps` sets the first step size.
    - `t_eps`: the end time; defaults to `sde.default_t_eps` ($10^{-3}$; `sigma_min` for EDM).
    - `denoise`: finish with one Tweedie step $E[x_0 \mid x_{t_\varepsilon}]$ (+1 NFE).
    - `x_T`: given latents of shape `shape` instead of prior draws.
    - `throw`: raise on a failed solve (default); with `False`, failed samples are NaN and
      `successful` says which.
    - `progress`: show diffrax's tqdm progress meter (under adaptive steps, the slowest sample).
    - `cond`: per-sample conditioning (a label, a context array; any pytree whose leaves have a
      leading axis of `num`): the score is then called as `score(t, x, cond_i)`.
    - `sharding`: a `jax.sharding.NamedSharding` splitting the batch axis over a mesh axis:
      each device runs its own solves on its rows (its own adaptive loop), and the result comes
      back with that sharding, equal to the one-device result up to the rounding of a vmap
      of a different width (sample `i` keeps `fold_in(key, i)`). A batch the device count does not divide is padded with copies of
      the last sample, dropped afterwards. See [Run on many devices and hosts](../how-to/devices.md).
    - `chunk_size`: run the batch through in chunks of this many samples (one compile; the same
      results), so a batch larger than memory streams through.

    **Returns:** a [`scoresde.SampleResult`][] with `x`, `nfe`, `num_steps` and `successful`.

    **Raises:** `RuntimeError` if the solve fails, `FloatingPointError` on non-finite samples,
    `ValueError`/`TypeError` on bad arguments.
    """
    if stepsize_controller is None and steps is None and isinstance(grid, str):
        check_tolerances(rtol, atol)
        stepsize_controller = dfx.PIDController(rtol=rtol, atol=atol)
    return _run(
        "sample_ode",
        sde=sde,
        score=score,
        key=key,
        shape=shape,
        solver=solver,
        steps=steps,
        controller=stepsize_controller,
        t_eps=t_eps,
        denoise=denoise,
        grid=grid,
        x_T=x_T,
        stochastic=False,
        dt0=dt0,
        max_steps=max_steps,
        throw=throw,
        progress=progress,
        cond=cond,
        sharding=sharding,
        chunk_size=chunk_size,
    )


def sample_sde(
    sde: AbstractSDE,
    score: ScoreFn,
    *,
    key,
    shape: tuple[int, ...],
    solver: dfx.AbstractSolver = dfx.Euler(),
    steps: int | None = 1000,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    t_eps: float | None = None,
    denoise: bool = True,
    grid="uniform",
    x_T=None,
    dt0: float | None = None,
    max_steps: int = 16384,
    brownian_tol: float | None = None,
    throw: bool = True,
    progress: bool = False,
    cond=None,
    sharding=None,
    chunk_size: int | None = None,
) -> SampleResult:
    r"""Draw samples by integrating the reverse-time SDE from $T$ down to `t_eps`.

    $dx = [-f(t)x + g(t)^2\,\mathrm{score}(t, x)]\,ds + g(t)\,dW_s$ in $s = T - t$.

    **Arguments:** as [`scoresde.sample_ode`][], plus:

    - `solver`: any diffrax SDE solver for additive noise: `Euler` (Euler-Maruyama), `Heun`,
      `ReversibleHeun`, `SRA1`, `ShARK`, `SEA`, ...
    - `steps`: fixed steps (default 1000) with a cheap per-sample Brownian path. With a
      `stepsize_controller` (e.g. `diffrax.PIDController`, needing a solver with an error
      estimate) steps are adaptive over a `diffrax.VirtualBrownianTree` of tolerance
      `brownian_tol` (default $10^{-6} T$); a `PIDController` without `dtmin` gets
      `dtmin = 10 * brownian_tol`.
    - `denoise`: finish with one Tweedie step (default on; +1 NFE).

    **Returns:** a [`scoresde.SampleResult`][].
    """
    return _run(
        "sample_sde",
        sde=sde,
        score=score,
        key=key,
        shape=shape,
        solver=solver,
        steps=steps,
        controller=stepsize_controller,
        t_eps=t_eps,
        denoise=denoise,
        grid=grid,
        x_T=x_T,
        stochastic=True,
        dt0=dt0,
        max_steps=max_steps,
        brownian_tol=brownian_tol,
        throw=throw,
        progress=progress,
        cond=cond,
        sharding=sharding,
        chunk_size=chunk_size,
    )


@eqx.filter_jit
def _sample_edm(
    *,
    sde,
    score,
    key,
    t_eps,
    x_T,
    churn,
    s_tmin,
    s_tmax,
    s_noise,
    rho,
    shape,
    steps,
    denoise,
    progress,
    cond,
    rows=None,
):
    if rows is not None:
        shape = (rows.num, *shape[1:])
    dtype = jnp.result_type(float)
    x_T, noise_keys = latents_and_noise_keys(sde, key, shape, x_T, dtype, rows)
    ts = time_grid(sde, steps, t_eps=t_eps, kind="karras", rho=rho, dtype=dtype)
    gamma_max = jnp.minimum(churn / steps, math.sqrt(2) - 1)

    def step(x, noise_key, cond_i, i):
        model = PFModel(sde, bind(score, cond_i))
        t_cur, t_next = ts[i], ts[i + 1]
        a_c, s_c, _ = model.marginal(t_cur)
        sig = s_c / a_c
        gamma = jnp.where((sig >= s_tmin) & (sig <= s_tmax), gamma_max, 0.0)
        sig_hat = sig * (1 + gamma)
        t_hat = sde.log_snr_inverse(-jnp.log(sig_hat))
        t_hat = jnp.where(gamma > 0, t_hat, t_cur)
        a_h, _ = sde.marginal(t_hat)
        z = jr.normal(jr.fold_in(noise_key, i), shape[1:], dtype)
        extra = jnp.sqrt(jnp.maximum(sig_hat**2 - sig**2, 0.0)) * s_noise
        x_hat = a_h * (x / a_c + extra * z)
        x_next, _ = heun_step(model, t_hat, t_next, x_hat.astype(dtype))
        return x_next

    x = scan_steps(step, x_T, noise_keys, cond, steps, progress=progress, desc="sample_edm")
    if denoise:
        x = tweedie_batch(sde, score, ts[-1], x, cond)
    nfe = jnp.full((shape[0],), 2 * steps + (1 if denoise else 0), jnp.int32)
    return x, nfe


def sample_edm(
    sde: AbstractSDE,
    score: ScoreFn,
    *,
    key,
    shape: tuple[int, ...],
    steps: int = 18,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    rho: float = 7.0,
    t_eps: float | None = None,
    denoise: bool = True,
    x_T=None,
    progress: bool = False,
    cond=None,
    sharding=None,
    chunk_size: int | None = None,
) -> SampleResult:
    r"""EDM's Heun sampler (Karras et al. 2022, Algorithm 2) with optional churn.

    On the Karras grid $\tilde\sigma_0 > \dots > \tilde\sigma_N$ ($\tilde\sigma = \sigma/\alpha$,
    `steps` = $N$): at each step, if $\tilde\sigma_i \in [S_{tmin}, S_{tmax}]$, raise the noise to
    $\hat\sigma = (1 + \gamma)\tilde\sigma_i$ with $\gamma = \min(S_{churn}/N, \sqrt2 - 1)$ by
    adding $\sqrt{\hat\sigma^2 - \tilde\sigma_i^2}\,S_{noise}\,z$ to $\tilde x$, then one Heun
    step to $\tilde\sigma_{i+1}$. `churn=0` is the deterministic sampler ([`scoresde.EDMHeun`][]).
    EDM's last step goes to $\sigma = 0$ with Euler, which is the Tweedie denoising step here
    (`denoise=True`, +1 NFE).

    **Arguments:** `key` (sample `i` uses `fold_in(key, i)`), `shape = (num, *data_shape)`,
    `steps`, the churn parameters, `rho` (the grid's exponent), `t_eps` (end time, default
    `sde.default_t_eps`), `x_T` (given latents), `progress` (a progress bar), `cond` (per-sample conditioning, as in
    [`scoresde.sample_ode`][]), `sharding` and `chunk_size` (as in [`scoresde.sample_ode`][]).

    **Returns:** a [`scoresde.SampleResult`][] with `x`, `nfe` ($2N$, +1 with `denoise`) and
    `num_steps` ($N$).
    """
    check_sde_and_score(sde, score)
    key = check_key(key)
    shape = check_shape(shape)
    steps = check_steps(steps)
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    check_positive("churn", churn, strict=False)
    check_positive("s_tmin", s_tmin, strict=False)
    if is_concrete(s_tmax) and not float(s_tmax) > 0:
        raise ValueError(f"s_tmax must be > 0; got s_tmax={s_tmax!r}.")
    check_positive("s_noise", s_noise, strict=False)
    check_positive("rho", rho)
    dtype = jnp.result_type(float)
    f = lambda v: jnp.asarray(v, dtype)
    x, nfe = map_batch(
        _sample_edm,
        shape[0],
        {"x_T": check_latents(x_T, shape, dtype), "cond": check_cond(cond, shape[0])},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        key=key,
        t_eps=f(t_eps),
        churn=f(churn),
        s_tmin=f(s_tmin),
        s_tmax=f(s_tmax),
        s_noise=f(s_noise),
        rho=float(rho),
        shape=shape,
        steps=steps,
        denoise=check_bool("denoise", denoise),
        progress=check_bool("progress", progress),
    )
    num_steps = jnp.full((shape[0],), steps, jnp.int32)
    if sharding is not None:
        num_steps = jax.device_put(num_steps, result_sharding(sharding, shape[0]))
    return SampleResult(x=x, nfe=nfe, num_steps=num_steps)
