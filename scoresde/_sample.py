r"""Sampling by integrating the probability-flow ODE or the reverse-time SDE with diffrax.

Both entry points run in the reversed time $s = T - t$ from $s = 0$ ($t = T$) to
$s = T - t_\varepsilon$. Sample `i` draws its prior latent and its Brownian path from
`jax.random.fold_in(key, i)`, so it is the same whatever the batch size.

Two integration paths, chosen by the arguments:

- **fixed steps** (`steps` given, no controller): one `diffeqsolve` over the whole batch on a
  grid from [`scoresde.time_grid`][], with a per-sample Brownian path drawn step by step
  (cheap: one normal draw per step; no Brownian tree);
- **adaptive steps** (a `stepsize_controller`): one `diffeqsolve` per sample under `jax.vmap`, so
  each sample takes its own steps; SDEs use a `diffrax.VirtualBrownianTree` whose tolerance is
  below the controller's smallest step.
"""

import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, Int

from . import _nfe
from ._brownian import BatchBrownianPath
from ._checks import check_positive, check_shape, check_steps, check_t_eps, is_concrete
from ._custom_types import ScoreFn
from ._grid import GRIDS, time_grid
from ._sde import AbstractSDE
from ._terms import BatchedScore, checked_score, probability_flow_term, reverse_terms


class SampleResult(eqx.Module):
    """Samples with their cost.

    - `x`: the samples, `(num, *data_shape)`.
    - `nfe`: score evaluations per sample (solver stages x attempted steps, rejected ones
      included, plus the final denoising step); `-1` where the solver's cost is unknown
      (implicit solvers).
    - `num_steps`: attempted steps per sample.
    """

    x: Float[Array, "num *data"]
    nfe: Int[Array, " num"]
    num_steps: Int[Array, " num"]


_ADVICE = (
    "Try a larger t_eps, looser rtol/atol, a larger max_steps, or float64 "
    "(jax.config.update('jax_enable_x64', True))."
)


def _tweedie(sde, score, t_eps, x):
    r"""$E[x_0 \mid x_t] = (x_t + \sigma^2 \nabla\ln p_t(x_t)) / \alpha$ at $t = t_\varepsilon$."""
    alpha, sigma = sde.marginal(t_eps)
    return (x + sigma**2 * checked_score(score, t_eps, x)) / alpha


def _prior_and_noise_keys(key, num):
    keys = jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(num))
    both = jax.vmap(jr.split)(keys)
    return both[:, 0], both[:, 1]


@eqx.filter_jit
def _sample(
    sde,
    score,
    key,
    t_eps,
    x_T,
    t_grid,
    *,
    shape,
    solver,
    steps,
    controller,
    grid,
    denoise,
    stochastic,
    dt0,
    max_steps,
    brownian_tol,
):
    num, data_shape = shape[0], shape[1:]
    dtype = jnp.result_type(float)
    prior_keys, noise_keys = _prior_and_noise_keys(key, num)
    if x_T is None:
        x_T = jax.vmap(lambda k: sde.prior_sample(k, data_shape).astype(dtype))(prior_keys)
    # Reversed time s = -t (terms with origin 0): every solver steps forward, and s keeps
    # full floating-point resolution near t_eps even when T is large (EDM: T = 80).
    s0, s_end = -jnp.asarray(sde.T, dtype), -t_eps
    levy = getattr(solver, "minimal_levy_area", dfx.BrownianIncrement)
    levy = dfx.SpaceTimeLevyArea if issubclass(dfx.SpaceTimeLevyArea, levy) else levy

    if controller is None:  # fixed grid, whole batch in one solve
        if t_grid is None:
            t_grid = time_grid(sde, steps, t_eps=t_eps, kind=grid, dtype=dtype)
        s_grid = -t_grid
        batched = BatchedScore(score)
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
            max_steps=steps,
        )
        x = sol.ys[0]
        nfe = jnp.broadcast_to(nfe, (num,))
        num_steps = jnp.broadcast_to(sol.stats["num_steps"], (num,))
        ok = jnp.broadcast_to(sol.result == dfx.RESULTS.successful, (num,))
    else:

        def make_terms(noise_key):
            if not stochastic:
                return probability_flow_term(sde, score, origin=0.0)
            path = dfx.VirtualBrownianTree(
                s0, s_end, brownian_tol, data_shape, noise_key, levy_area=levy
            )
            return reverse_terms(sde, score, path, origin=0.0)

        def one(x0, noise_key):
            sol, nfe = _nfe.counted_diffeqsolve(
                make_terms(noise_key),
                solver,
                s0,
                s_end,
                dt0,
                x0,
                stepsize_controller=controller,
                max_steps=max_steps,
            )
            ok = sol.result == dfx.RESULTS.successful
            return sol.ys[0], nfe, sol.stats["num_steps"], ok

        x, nfe, num_steps, ok = jax.vmap(one)(x_T, noise_keys)

    if denoise:
        x = jax.vmap(lambda xi: _tweedie(sde, score, t_eps, xi))(x)
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
    return ts, t_eps, ts.shape[0] - 1


def _default_t_eps(sde, t_eps):
    return sde.default_t_eps if t_eps is None else t_eps


def _run(
    name,
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
    brownian_tol,
):
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be a scoresde SDE (AbstractSDE); got {type(sde).__name__}.")
    if not callable(score):
        raise TypeError(f"score must be callable as score(t, x); got {type(score).__name__}.")
    if not isinstance(solver, dfx.AbstractSolver):
        raise TypeError(f"solver must be a diffrax solver; got {type(solver).__name__}.")
    shape = check_shape(shape)
    t_grid = None
    if not isinstance(grid, str):
        t_grid, t_eps, steps = _explicit_grid(grid, sde, t_eps, steps, controller)
        grid = "uniform"
    t_eps = _default_t_eps(sde, t_eps)
    check_t_eps(t_eps, sde.T)
    if grid not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS} or an array of times; got grid={grid!r}.")
    if steps is not None:
        steps = check_steps(steps)
    if isinstance(controller, (dfx.StepTo, dfx.ConstantStepSize)) and steps is not None:
        controller = None  # a fixed grid; the grid comes from `steps` and `grid`
    elif isinstance(controller, (dfx.StepTo, dfx.ConstantStepSize)):
        raise ValueError(f"{name}: a fixed-step controller needs steps=...; or pass steps alone.")
    if controller is None and steps is None:
        raise ValueError(f"{name} needs steps=... (fixed grid) or a stepsize_controller.")
    if controller is not None and not isinstance(controller, dfx.AbstractStepSizeController):
        raise TypeError(
            f"stepsize_controller must be a diffrax step-size controller; got {controller!r}."
        )
    dtype = jnp.result_type(float)
    if x_T is not None:
        x_T = jnp.asarray(x_T, dtype)
        if x_T.shape != shape:
            raise ValueError(f"x_T has shape {x_T.shape}; expected shape={shape}.")
        if is_concrete(x_T) and not bool(jnp.all(jnp.isfinite(x_T))):
            raise ValueError("x_T contains non-finite values (NaN or inf).")
    span = sde.T - t_eps
    if controller is not None:
        if dt0 is None:
            dt0 = span / (steps if steps is not None else 64)
        steps = None  # adaptive: `steps` only set the first step size
        check_positive("dt0", dt0)
        if stochastic:
            if brownian_tol is None:
                brownian_tol = 1e-6 * sde.T
            check_positive("brownian_tol", brownian_tol)
            dtmin = getattr(controller, "dtmin", None)
            if isinstance(controller, dfx.PIDController):
                if dtmin is None:
                    controller = eqx.tree_at(
                        lambda c: c.dtmin,
                        controller,
                        10 * brownian_tol,
                        is_leaf=lambda x: x is None,
                    )
                elif dtmin <= brownian_tol:
                    raise ValueError(
                        f"The controller's dtmin={dtmin} must exceed brownian_tol={brownian_tol}: "
                        "the Brownian tree must resolve the smallest step."
                    )
    if t_grid is not None:
        t_grid = jnp.asarray(t_grid, dtype)
    x, nfe, num_steps, ok = _sample(
        sde,
        score,
        key,
        jnp.asarray(t_eps, dtype),
        x_T,
        t_grid,
        shape=shape,
        solver=solver,
        steps=steps,
        controller=controller,
        grid=grid,
        denoise=denoise,
        stochastic=stochastic,
        max_steps=max_steps,
        dt0=None if dt0 is None else jnp.asarray(dt0, dtype),
        brownian_tol=brownian_tol,
    )
    if is_concrete(x):
        failed = int(jnp.sum(~ok))
        if failed:
            raise RuntimeError(
                f"{name}: the solver failed for {failed} of {shape[0]} samples "
                f"({type(solver).__name__}; max_steps={max_steps}). {_ADVICE}"
            )
        bad = int(jnp.sum(~jnp.all(jnp.isfinite(x.reshape(shape[0], -1)), axis=1)))
        if bad:
            raise FloatingPointError(
                f"{name}: {bad} of {shape[0]} samples are not finite; the score or the step "
                f"size is unstable. Use more steps or an adaptive controller. {_ADVICE}"
            )
        if int(nfe[0]) < 0:
            warnings.warn(
                f"{name}: the number of score evaluations of {type(solver).__name__} is not "
                "known; nfe is -1.",
                stacklevel=3,
            )
    else:
        x = eqx.error_if(x, ~jnp.all(ok), f"{name}: the solver failed. {_ADVICE}")
    return SampleResult(x=x, nfe=nfe, num_steps=num_steps.astype(jnp.int32))


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
      explicit array of times decreasing from `sde.T` to `t_eps` (then `steps` is implied). Without `steps`, adaptive steps under `stepsize_controller`, by default
      `diffrax.PIDController(rtol, atol)`; with both, `steps` sets the first step size.
    - `t_eps`: the end time; defaults to `sde.default_t_eps` ($10^{-3}$; `sigma_min` for EDM).
    - `denoise`: finish with one Tweedie step $E[x_0 \mid x_{t_\varepsilon}]$ (+1 NFE).
    - `x_T`: given latents of shape `shape` instead of prior draws.

    **Returns:** a [`scoresde.SampleResult`][] with `x`, `nfe` and `num_steps`.

    **Raises:** `RuntimeError` if the solve fails, `FloatingPointError` on non-finite samples,
    `ValueError`/`TypeError` on bad arguments.
    """
    if stepsize_controller is None and steps is None and isinstance(grid, str):
        stepsize_controller = dfx.PIDController(rtol=rtol, atol=atol)
    return _run(
        "sample_ode",
        sde,
        score,
        key,
        shape,
        solver,
        steps,
        stepsize_controller,
        t_eps,
        denoise,
        grid,
        x_T,
        False,
        dt0,
        max_steps,
        None,
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
        sde,
        score,
        key,
        shape,
        solver,
        steps,
        stepsize_controller,
        t_eps,
        denoise,
        grid,
        x_T,
        True,
        dt0,
        max_steps,
        brownian_tol,
    )
