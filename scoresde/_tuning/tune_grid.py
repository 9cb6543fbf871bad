r"""[`scoresde.tune_grid`][]: the time grid of a fixed-step probability-flow solver tuned for one
model and one number of steps.

The objective (LD3's, Tong et al. 2024) is the mean squared end-point error of the solver's
$N$-step solve against a tight reference solve from the SAME latents $x_T$:

$$L(\theta) = \frac{1}{n d} \sum_{i=1}^n \lVert \Phi_{\text{grid}(\theta)}(x_T^{(i)}) -
\Phi_{\text{ref}}(x_T^{(i)}) \rVert^2,$$

over a pilot batch of $n$ latents, the reference computed once. $\theta$ parametrises the grid by
softmax increments of the half log-SNR (`grid_solve`), so every $\theta$ is a valid grid. The
solve is differentiated through (a `lax.scan` of the solver's own steps) and $\ln L$ minimised by
L-BFGS (optax, zoom line search) from the best named grid. A quarter of the pilot (`held_out`) is
never used by the optimiser: the grid returned is the best on those latents among the tuned grid
and the named ones, so it is never worse there than the best named grid, and the report states
both errors.
"""

import math
import sys
import time
import warnings

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._checks import check_key, check_shape, check_steps, check_t_eps
from .._grid import (
    AbstractTimeGrid,
    ClippedLogSNRGrid,
    KarrasGrid,
    LogSNRGrid,
    UniformGrid,
    as_time_grid,
)
from .._keys import draw_latents
from .._network_times import NetworkTimeScore, shifted_time
from .._sampling.ode import sample_ode
from .._sde import check_sde_and_score
from .grid_solve import logits_from_times, mean_squared_error, solve_on_times, times_from_logits
from .time_grid import TimeGrid

NAMED_GRIDS: dict[str, AbstractTimeGrid] = {
    "uniform": UniformGrid(),
    "log_snr": LogSNRGrid(),
    "karras": KarrasGrid(),
    "clipped_log_snr": ClippedLogSNRGrid(),
}
"""The named grids a tuner starts from and compares against."""

MAX_ITERATIONS = 200
"""The tuners' default cap on L-BFGS iterations. Measured on the closed-form test (DPM-Solver++(2M),
7 steps, 4-D Gaussian): a cap of 100 stopped the search still descending at 2.2x the optimum's
error; it converged after 172 iterations (the stall rule stops it). On the mixtures and the digits
U-Net at 5 and 10 NFE the stall rule stopped most searches before 100."""


def solver_name(solver) -> str:
    """A short, stable name for `solver` (its class and, where it has one, its order)."""
    name = type(solver).__name__
    order = getattr(solver, "order_", None)
    if not isinstance(order, int):
        return name
    bare = getattr(solver, "corrector", True) is False  # UniPC's predictor alone
    return f"{name}({order}, no corrector)" if bare else f"{name}({order})"


def check_fraction(name, value):
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"{name} must be a fraction in (0, 1); got {name}={value!r}.")
    return float(value)


def _check_solver(solver):
    if isinstance(solver, dfx.AbstractSolver):  # this package's solvers are diffrax's too
        if isinstance(solver, dfx.AbstractImplicitSolver):
            raise TypeError(
                f"tune_grid: {type(solver).__name__} is implicit; tune an explicit solver."
            )
        return solver
    raise TypeError(
        f"tune_grid: solver must be a diffrax solver or one of this package's probability-flow "
        f"solvers (e.g. ss.UniPC()); got {solver!r}."
    )


@eqx.filter_jit
def _error(sde, score, solver, times, x_T, reference):
    return mean_squared_error(solve_on_times(sde, score, solver, times, x_T), reference)


def _host(value) -> float:
    v = float(value)
    return v if math.isfinite(v) else math.inf


def tune_grid(
    sde,
    score,
    *,
    solver,
    steps: int,
    key,
    shape: tuple[int, ...],
    t_eps: float | None = None,
    init=None,
    held_out: float = 0.25,
    fit_size: int | None = None,
    network_times: bool = False,
    network_scales: bool = False,
    max_iterations: int = MAX_ITERATIONS,
    reference_solver: dfx.AbstractSolver = dfx.Tsit5(),
    reference_tol: float = 1e-5,
    reference=None,
    progress: bool = False,
) -> TimeGrid:
    r"""The `steps + 1` times (from `sde.T` down to `t_eps`) that minimise the end-point error
    of `solver` on `score` against a tight reference from the same latents, on a pilot batch.

    **Arguments:**

    - `sde`, `score`: the SDE and the score `score(t, x)` (e.g. a trained network's).
    - `solver`: a fixed-step ODE solver (this package's, e.g. [`scoresde.UniPC`][], or
      diffrax's explicit ones); `steps`: its number of steps (the NFE follow from its cost).
    - `key`, `shape`: the pilot latents $x_T$ (`shape = (num, *data_shape)`, drawn as
      `sample_ode` draws them); the last `held_out` fraction of them is kept from the optimiser
      and decides the grid returned.
    - `fit_size`: at most this many of the latents the optimiser may use enter its gradient
      (the first ones); the others join the held-out check. Each iteration's cost is
      proportional to it. Default: all of them.
    - `network_times`: also learn, for each time $t_i$ but the last, the time $t'_i$ at which
      the network is asked (LD3's decoupled times, `scoresde._network_times`): after the grid,
      the grid's logits and the half log-SNR offsets $\lambda(t'_i) - \lambda(t_i)$ are
      searched jointly from the tuned grid with zero offsets, and the held-out latents decide
      whether they are kept. Twice the parameters; about twice the tuning time.
    - `network_scales`: also learn a scale $c_i > 0$ of the network's output at each time but
      the last (`scoresde._network_times`): the logits, the network times' offsets and
      $\ln c_i$ are searched jointly from the best found so far (scales 1) and kept only if
      the held-out error falls (the grid then carries network times too).
    - `t_eps`: the end time (default `sde.default_t_eps`).
    - `init`: the grid to start from (a grid value, name or array of times); default: the best
      of the named grids (`uniform`, `log_snr`, `karras`, `clipped_log_snr`) on the pilot.
    - `max_iterations`: L-BFGS iterations (each one gradient of the pilot's error, plus the
      line search's evaluations).
    - `reference_solver`, `reference_tol`: the reference, an adaptive solve at
      `rtol = atol = reference_tol`; or `reference`: the end points themselves (`shape`),
      computed from the same latents.
    - `progress`: print each iteration's error.

    **Returns:** a [`scoresde.TimeGrid`][] whose `info` reports the RMS error (over samples and
    coordinates) of the tuned grid and of every named grid on the pilot and on the held-out
    latents, the grid chosen, the iterations and the seconds spent (reference and tuning).
    """
    check_sde_and_score(sde, score)
    solver = _check_solver(solver)
    steps = check_steps(steps)
    key = check_key(key)
    shape = check_shape(shape)
    held_out = check_fraction("held_out", held_out)
    if (
        isinstance(max_iterations, bool)
        or not isinstance(max_iterations, int)
        or max_iterations < 0
    ):
        raise ValueError(f"max_iterations must be an int >= 0; got {max_iterations!r}.")
    num = shape[0]
    num_fit = split_pilot(num, held_out, fit_size, shape)
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    dtype = jnp.result_type(float)
    started = time.perf_counter()
    x_T = draw_latents(sde=sde, key=key, shape=shape, dtype=dtype)
    if reference is None:
        ref = sample_ode(
            sde, score, key=key, shape=shape, solver=reference_solver, t_eps=t_eps, x_T=x_T,
            rtol=reference_tol, atol=reference_tol, max_steps=100_000,
        ).x  # fmt: skip
        reference_info = {"solver": solver_name(reference_solver), "tol": reference_tol}
    else:
        ref = jnp.asarray(reference, dtype)
        if ref.shape != shape:
            raise ValueError(f"reference must have shape {shape}; got {ref.shape}.")
        reference_info = {"solver": "given"}
    reference_seconds = time.perf_counter() - started
    fit = (x_T[:num_fit], ref[:num_fit])
    check = (x_T[num_fit:], ref[num_fit:])

    def error(times, batch):
        return _error(sde, score, solver, times, *batch)

    init_grids = NAMED_GRIDS if init is None else {"init": as_time_grid(init, name="init")}
    candidates = {n: g.times_for(sde, steps, t_eps, dtype=dtype) for n, g in init_grids.items()}
    times, search = search_grid(
        "tune_grid", sde, t_eps, error, fit, check, candidates, max_iterations, progress
    )
    net_times = net_scales = None
    offsets = jnp.zeros(steps, times.dtype)
    for stage, wanted in (("network_times", network_times), ("network_scales", network_scales)):
        if not (wanted and steps > 1 and max_iterations > 0):
            continue
        found, joint = search_network_times(
            sde, score, solver, t_eps, times, offsets, fit, check, max_iterations, progress,
            scales=stage == "network_scales",
        )  # fmt: skip
        held = search["rms"][search["chosen"]]["held_out"]
        search["rms"][stage] = joint["rms"]
        search[f"{stage}_iterations"] = joint["iterations"]
        search[f"{stage}_seconds"] = joint["seconds"]
        if joint["rms"]["held_out"] < held:
            times, offsets, search["chosen"] = joint["times"], joint["offsets"], stage
            net_times, net_scales = found
    provenance = {
        "objective": "mean squared end-point error against a reference from the same latents",
        "sde": repr(sde),
        "steps": steps,
        "t_eps": float(t_eps),
        "pilot": num_fit,
        "held_out": num - num_fit,
        "reference": reference_info,
        **search,
        "reference_seconds": reference_seconds,
        "seconds": time.perf_counter() - started,
    }
    return TimeGrid(
        jnp.asarray(np.asarray(times, np.float64)),
        solver_name(solver),
        provenance,
        None if net_times is None else jnp.asarray(np.asarray(net_times, np.float64)),
        None if net_scales is None else jnp.asarray(np.asarray(net_scales, np.float64)),
    )


def _unpack(sde, theta, t_eps, parts):
    """`(times, offsets, log_scales or None)` of the flat `theta`: `parts` blocks of N (the
    grid's logits, the first N nodes' offsets[, their log-scales]); the last node's offset and
    log-scale, at t_eps, are 0."""
    steps = theta.shape[0] // parts
    blocks = [theta[k * steps : (k + 1) * steps] for k in range(parts)]
    times = times_from_logits(sde, blocks[0], t_eps)
    last = jnp.zeros(1, theta.dtype)
    rows = [jnp.concatenate([block, last]) for block in blocks[1:]]
    return times, rows[0], (rows[1] if parts > 2 else None)


def _solve_decoupled(sde, score, solver, theta, t_eps, x_T, parts):
    """The solve of `theta` (`_unpack`) with the network asked at the offset times, scaled."""
    times, offsets, log_scales = _unpack(sde, theta, t_eps, parts)
    wrapped = NetworkTimeScore(score, sde, times, offsets, log_scales)
    return solve_on_times(sde, wrapped, solver, times, x_T)


@eqx.filter_jit
def _decoupled_error(sde, score, solver, theta, t_eps, x_T, reference, parts):
    solution = _solve_decoupled(sde, score, solver, theta, t_eps, x_T, parts)
    return mean_squared_error(solution, reference)


def search_network_times(sde, score, solver, t_eps, times, offsets, fit, check, max_iterations,
                         progress, *, scales=False):  # fmt: skip
    """The grid's logits and the network times' offsets (with `scales`, the log-scales too)
    searched jointly (L-BFGS on the log error of `fit`) from `times` and the first N nodes'
    `offsets` (scales 1). Returns `((network times, network scales or None), report)`, the
    report holding the grid `times`, its `offsets`, the RMS on `fit` and `check`, iterations and
    seconds."""
    started = time.perf_counter()
    logits = logits_from_times(sde, times).astype(times.dtype)
    steps = logits.shape[0]
    blocks = [logits, jnp.asarray(offsets, logits.dtype)[:steps]]
    if scales:
        blocks.append(jnp.zeros_like(logits))
    parts = len(blocks)

    def error(theta, batch):
        return _decoupled_error(sde, score, solver, theta, t_eps, *batch, parts)

    theta, iterations = minimise_logits(
        lambda th, batch: jnp.log(error(th, batch)),
        jnp.concatenate(blocks),
        fit,
        max_iterations,
        progress,
    )
    grid_times, full_offsets, log_scales = _unpack(sde, theta, t_eps, parts)
    network = shifted_time(sde, grid_times, full_offsets, grid_times).astype(grid_times.dtype)
    network = network.at[-1].set(grid_times[-1])
    rms = {
        "pilot": math.sqrt(_host(error(theta, fit))),
        "held_out": math.sqrt(_host(error(theta, check))),
    }
    report = {"times": grid_times, "offsets": full_offsets[:steps], "rms": rms,
              "iterations": iterations, "seconds": time.perf_counter() - started}  # fmt: skip
    return (network, None if log_scales is None else jnp.exp(log_scales)), report


def split_pilot(num: int, held_out: float, fit_size, shape) -> int:
    """How many of `num` pilot latents the optimiser fits: all but the `held_out` fraction (at
    least one held out), and at most `fit_size`; the rest are the held-out check."""
    num_fit = num - max(1, round(num * held_out))
    if num_fit < 1:
        raise ValueError(
            f"tuning needs a pilot of >= 2 latents (some to fit, some held out); got shape={shape}."
        )
    if fit_size is not None:
        if isinstance(fit_size, bool) or not isinstance(fit_size, int) or fit_size < 1:
            raise ValueError(f"fit_size must be an int >= 1 or None; got {fit_size!r}.")
        num_fit = min(num_fit, fit_size)
    return num_fit


def search_grid(who, sde, t_eps, error, fit, check, candidates, max_iterations, progress):
    """The grid search shared by the tuners: `error(times, batch)` (a mean squared error) on
    the `fit` batch from the best of the `candidates` (name -> times), then the choice on the
    `check` batch between the tuned grid and the candidates. Returns `(times, report)`."""

    def rms_on(times, batch):
        return math.sqrt(_host(error(times, batch)))

    named = {name: {"pilot": rms_on(ts, fit)} for name, ts in candidates.items()}
    start_name = min(named, key=lambda n: named[n]["pilot"])
    started = time.perf_counter()
    start_times = candidates[start_name]
    logits = logits_from_times(sde, start_times).astype(start_times.dtype)
    steps = start_times.shape[0] - 1
    iterations = 0
    if steps > 1 and max_iterations > 0 and math.isfinite(named[start_name]["pilot"]):
        loss = lambda theta, batch: jnp.log(error(times_from_logits(sde, theta, t_eps), batch))
        logits, iterations = minimise_logits(loss, logits, fit, max_iterations, progress)
    tuned_times = times_from_logits(sde, logits, t_eps)
    tuning_seconds = time.perf_counter() - started

    tuned = {"pilot": rms_on(tuned_times, fit), "held_out": rms_on(tuned_times, check)}
    for name, ts in candidates.items():
        named[name]["held_out"] = rms_on(ts, check)
    chosen = "tuned"
    best_named = min(named, key=lambda n: named[n]["held_out"])
    if not named[best_named]["held_out"] >= tuned["held_out"]:
        chosen = best_named
        warnings.warn(
            f"{who}: the tuned grid's held-out error ({tuned['held_out']:.3g}) is above "
            f"the {best_named!r} grid's ({named[best_named]['held_out']:.3g}); returning that "
            "grid. A larger pilot or fewer iterations may help.",
            stacklevel=3,
        )
    times = tuned_times if chosen == "tuned" else candidates[chosen]
    report = {
        "start": start_name,
        "chosen": chosen,
        "rms": {"tuned": tuned, **named},
        "iterations": iterations,
        "tuning_seconds": tuning_seconds,
    }
    return times, report


def minimise_logits(loss, logits, batch, max_iterations: int, progress: bool):
    """L-BFGS (optax, zoom line search) on a smooth `loss(theta, batch)` (a log error) from
    `logits`; stops after 3 iterations that gain < 1e-5 or at `max_iterations`. Returns the best
    logits seen and the iterations run. `batch`, and every array `loss` closes over (the
    model's parameters; `eqx.filter_closure_convert`), go in as arguments of the jitted
    iteration: constants closed over would be constant-folded by XLA, slow to compile."""
    optimiser = optax.lbfgs()
    converted = eqx.filter_closure_convert(loss, logits, batch)

    @eqx.filter_jit
    def iterate(theta, state, batch, converted):
        loss = lambda th, batch: converted(th, batch)
        value_and_grad = optax.value_and_grad_from_state(loss)
        value, grad = value_and_grad(theta, batch=batch, state=state)
        # optax's L-BFGS adds int32 and int64 counters under x64: allow its promotion
        with jax.numpy_dtype_promotion("standard"):
            updates, state = optimiser.update(
                grad, state, theta, value=value, grad=grad, value_fn=loss, batch=batch
            )
        return (
            optax.apply_updates(theta, updates),
            state,
            value,
            jnp.sqrt(jnp.sum(jnp.square(grad))),
        )

    state = optimiser.init(logits)
    best, best_value = logits, math.inf
    previous = math.inf
    stalled = 0
    for iteration in range(max_iterations):
        new, state, value, grad_norm = iterate(logits, state, batch, converted)
        value = _host(value)  # the loss at `logits` (before this update)
        if value < best_value:
            best, best_value = logits, value
        if progress:
            print(f"  tune_grid {iteration:3d}: rms {math.exp(value / 2):.4g} "
                  f"|grad| {float(grad_norm):.2e}", file=sys.stderr, flush=True)  # fmt: skip
        if not math.isfinite(value) or not bool(jnp.all(jnp.isfinite(new))):
            break
        stalled = stalled + 1 if previous - value < 1e-5 else 0
        if stalled >= 3 or float(grad_norm) < 1e-6:
            break
        previous, logits = value, new
    return best, iteration + 1
