r"""How to schedule a batch of likelihood solves, chosen from a pilot's spread of step counts.

The schedules of [`scoresde.log_likelihood`][] (`scoresde._likelihood.batching`) cost, for a
batch of $B$ samples whose adaptive solves take $n_i$ score evaluations each:

- [`scoresde.PerSample`][]: the vmapped loop runs until its slowest sample is done:
  $\mathbb E[\max_{i \le B} n_i]$ evaluations of width $B$;
- [`scoresde.Lanes`][]`(L)`: about $\sum_i n_i / L$ evaluations of width $L$, plus the drain at
  the end, when lanes fall idle one by one (modelled as half the expected largest $n_i$ of $L$);
- [`scoresde.SharedSteps`][]: one step sequence for the batch, $n_{\rm shared}$ evaluations of
  width $B$ (its results depend on the batch, so it is a candidate only when asked for).

$\mathbb E[\max]$ is taken over an empirical law of $n_i$ (exact for it:
$\sum_k n_{(k)}[(k/m)^B - ((k-1)/m)^B]$ over the $m$ sorted counts). The seconds of one
evaluation are calibrated on the real loops: every candidate solves a calibration batch (the
pilot's rows repeated, at least twice the widest lanes) and its time is divided by its predicted
evaluations there, which prices each loop's own overhead; a full-width schedule's price is then
scaled from the calibration width to $B$ by the ratio of timed evaluations of the two widths.
The predicted seconds per batch are evaluations times price; the smallest wins. PerSample and
Lanes solve every sample alike, so the choice changes the time, not the result.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import check_batch, check_int
from .._likelihood.batching import AbstractSchedule, Lanes, PerSample, SharedSteps
from .._likelihood.integration_variable import as_integration_variable
from .._likelihood.log_likelihood import DIVERGENCE, T_EPS, VARIABLE, log_likelihood
from .._likelihood.vector_fields import AugmentedFlow
from .._sde import check_sde_and_score
from .._timing import timed_after_compile
from .likelihood_grid import likelihood_probes

LANE_WIDTHS = (32, 64, 128, 256, 512)
EVALUATIONS = 16  # evaluations per timed loop in `evaluation_seconds`
# Options that set the schedule or the steps themselves: not forwarded to the pilot's solve.
_OWN_OPTIONS = ("schedule", "lanes", "grid", "steps", "sharding", "chunk_size", "throw")


class ScheduleChoice(eqx.Module):
    """The result of [`scoresde.choose_schedule`][]: `schedule`, the value to pass as
    `log_likelihood(..., schedule=...)` for batches of `batch_size`; `table`, one row per
    candidate (its predicted batched evaluations at `batch_size`, their width, the seconds of
    one evaluation in its loop, the predicted seconds per batch and its measured seconds on the
    calibration batch), fastest first; `pilot_nfe`, the per-sample evaluations of the
    calibration batch (mean, quartiles, max) and its size."""

    schedule: AbstractSchedule
    batch_size: int = eqx.field(static=True)
    table: tuple[dict, ...]
    pilot_nfe: dict


def expected_max(values, draws: int) -> float:
    """$\\mathbb E[\\max]$ of `draws` independent draws from the empirical law of `values`."""
    v = np.sort(np.asarray(values, np.float64))
    m = v.shape[0]
    k = np.arange(1, m + 1)
    return float(np.sum(v * ((k / m) ** draws - ((k - 1) / m) ** draws)))


def predicted_evaluations(schedule, nfe, batch_size: int, shared_nfe=None) -> tuple[float, int]:
    """`(batched evaluations, their width)` of `schedule` on a batch of `batch_size` samples
    whose per-sample evaluations follow the pilot's `nfe` (see the module doc)."""
    if isinstance(schedule, SharedSteps):
        return float(shared_nfe), batch_size
    if isinstance(schedule, Lanes) and schedule.lanes < batch_size:
        lanes = schedule.lanes
        return batch_size * float(np.mean(nfe)) / lanes + expected_max(nfe, lanes) / 2, lanes
    # PerSample, or lanes at least as many as the samples: all run at once to the slowest
    return expected_max(nfe, batch_size), batch_size


def evaluation_seconds(sde, score, x, probes, divergence, variable, t_eps, width, repeats):
    """Seconds of one evaluation of the augmented likelihood drift on `width` samples (the
    pilot's rows repeated): the fastest of `repeats` timed runs of `EVALUATIONS` evaluations in
    one compiled loop (no dispatch per evaluation, as inside a solve), compiled beforehand."""
    rows = jnp.arange(width) % x.shape[0]
    xs = x[rows]
    ps = jax.tree.map(lambda p: p[rows], probes)
    deltas = jnp.zeros((width, divergence.num_estimates), x.dtype)
    u = variable.u_of_t(sde, jnp.asarray(t_eps, x.dtype))

    @jax.jit
    def evaluate(xs, ps, deltas):
        def one(xi, pi, di):
            return AugmentedFlow(sde, score, divergence, variable, pi)(u, (xi, di), None)

        def body(_, state):  # each evaluation feeds the next, so none is skipped
            xs, deltas = state
            fx, est = jax.vmap(one)(xs, ps, deltas)
            return xs + 1e-30 * fx, deltas + 1e-30 * est

        return jax.lax.fori_loop(0, EVALUATIONS, body, (xs, deltas))

    _, _, fastest = timed_after_compile(lambda: evaluate(xs, ps, deltas), repeats)
    return fastest / EVALUATIONS


def calibrate(schedule, run, repeats):
    """`(result, fastest seconds)` of `run()`, the calibration solve of `schedule`, over
    `repeats` runs after a compiling one."""
    result, _, fastest = timed_after_compile(run, repeats)
    return result, fastest


def choose_schedule(
    sde,
    score,
    x,
    *,
    batch_size: int,
    key=None,
    candidates=None,
    repeats: int = 5,
    **options,
) -> ScheduleChoice:
    r"""The fastest schedule of [`scoresde.log_likelihood`][] for batches of `batch_size`,
    predicted from a pilot of data points `x` (a few hundred rows like the data to come).

    Every candidate solves a calibration batch, the pilot's rows repeated to at least twice the
    widest lanes (at most `batch_size` rows), with `options` (any `log_likelihood` option but
    the schedule's and the steps': `solver`, `rtol`, `atol`, `t_eps`, `divergence`,
    `variable`, ...); each is compiled, then timed `repeats` times (the fastest kept). The
    per-sample solve gives the spread of evaluations $n_i$; each candidate's time per batch is
    then predicted as in the module doc: `PerSample()` pays $\mathbb E[\max_{i\le B} n_i]$
    evaluations of width $B$, `Lanes(L)` about $B\bar n/L$ of width $L$, each at the price its
    own loop paid on the calibration batch.

    **Arguments:** `candidates`, the schedules to choose from (default: `PerSample()` and
    `Lanes(L)` for every `L` of 32, 64, ..., 512 below `batch_size`; both solve each sample
    alike). `SharedSteps()` changes the results (one step sequence for the batch), so it is
    considered only when passed here; its evaluations are those of its calibration solve. `key`:
    the probes' key, as in `log_likelihood`.

    **Returns:** a [`scoresde.ScheduleChoice`][]: `schedule` to pass as
    `log_likelihood(..., schedule=choice.schedule)`, and the `table` it was chosen from.
    It costs a compilation and `repeats + 1` calibration solves per candidate: worth it before
    many batches. `benchmarks/likelihood_schedule.py` times every candidate beside the choice.
    """
    check_sde_and_score(sde, score)
    x = check_batch("x", x)
    batch_size = check_int("batch_size", batch_size)
    repeats = check_int("repeats", repeats)
    if x.shape[0] < 2:
        raise ValueError(f"choose_schedule: the pilot needs >= 2 rows; got {x.shape[0]}.")
    own = sorted(set(options) & set(_OWN_OPTIONS))
    if own:
        raise ValueError(
            f"choose_schedule: {own} set the schedule or the steps, which this chooses; pass "
            "only the solve's options (solver, rtol, atol, t_eps, divergence, ...)."
        )
    if candidates is None:
        candidates = (PerSample(),) + tuple(Lanes(w) for w in LANE_WIDTHS if w < batch_size)
    candidates = tuple(candidates)
    if not candidates or not all(isinstance(c, AbstractSchedule) for c in candidates):
        raise TypeError(
            "candidates must be a non-empty sequence of ss.PerSample(), ss.Lanes(L) or "
            f"ss.SharedSteps(); got {candidates!r}."
        )
    widest = max((c.lanes for c in candidates if isinstance(c, Lanes) and c.lanes < batch_size),
                 default=1)  # fmt: skip
    size = min(batch_size, max(x.shape[0], 2 * widest))
    calibration = x[jnp.arange(size) % x.shape[0]]

    def solve(schedule):
        return lambda: log_likelihood(
            sde, score, calibration, key=key, schedule=schedule, **options
        )

    measured = {}
    per_sample, seconds = calibrate(PerSample(), solve(PerSample()), repeats)
    measured[repr(PerSample())] = (per_sample, seconds)
    nfe = np.asarray(per_sample.nfe, np.float64)
    width_scale = 1.0
    if batch_size != size:  # full-width schedules: price at width B from that at the calibration
        divergence = options.get("divergence", DIVERGENCE)
        variable = as_integration_variable(options.get("variable", VARIABLE))
        t_eps = options.get("t_eps", T_EPS)
        probe_key = key if divergence.stochastic else None
        probes = likelihood_probes(sde, score, divergence, x, probe_key, t_eps)
        at = lambda w: evaluation_seconds(sde, score, x, probes, divergence, variable, t_eps, w,
                                          repeats)  # fmt: skip
        width_scale = at(batch_size) / at(size)
    rows = []
    for schedule in candidates:
        name = repr(schedule)
        if name not in measured:
            measured[name] = calibrate(schedule, solve(schedule), repeats)
        result, seconds = measured[name]
        shared_nfe = float(result.nfe[0]) if isinstance(schedule, SharedSteps) else None
        calibration_evaluations, _ = predicted_evaluations(schedule, nfe, size, shared_nfe)
        evaluations, width = predicted_evaluations(schedule, nfe, batch_size, shared_nfe)
        per_evaluation = seconds / calibration_evaluations
        if width == batch_size and batch_size != size:
            per_evaluation *= width_scale
        rows.append(
            {
                "schedule": name,
                "evaluations": evaluations,
                "width": width,
                "seconds_per_evaluation": per_evaluation,
                "predicted_seconds": evaluations * per_evaluation,
                "calibration_seconds": seconds,
            }
        )
    order = sorted(range(len(rows)), key=lambda i: rows[i]["predicted_seconds"])
    quartiles = np.quantile(nfe, [0.25, 0.5, 0.75])
    return ScheduleChoice(
        schedule=candidates[order[0]],
        batch_size=batch_size,
        table=tuple(rows[i] for i in order),
        pilot_nfe={
            "mean": float(np.mean(nfe)),
            "quartiles": [float(q) for q in quartiles],
            "max": float(np.max(nfe)),
            "pilot": int(x.shape[0]),
            "calibration_batch": int(size),
        },
    )
