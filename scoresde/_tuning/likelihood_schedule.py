r"""How to schedule a batch of likelihood solves, chosen from a pilot's spread of step counts.

The schedules of [`scoresde.log_likelihood`][] (`scoresde._likelihood.batching`) cost, for a
batch of $B$ samples whose adaptive solves take $n_i$ score evaluations each:

- [`scoresde.PerSample`][]: the vmapped loop runs until its slowest sample is done:
  $\mathbb E[\max_{i \le B} n_i]$ evaluations of width $B$;
- [`scoresde.Lanes`][]`(L)`: about $\sum_i n_i / L$ evaluations of width $L$, plus the drain at
  the end, when lanes fall idle one by one (modelled as half the expected largest $n_i$ of $L$);
- [`scoresde.SharedSteps`][]: one step sequence for the batch, $n_{\rm shared}$ evaluations of
  width $B$ (measured on the pilot; its results depend on the batch, so it is a candidate only
  when asked for).

$\mathbb E[\max]$ is taken over the pilot's empirical law of $n_i$ (exact for it:
$\sum_k n_{(k)}[(k/m)^B - ((k-1)/m)^B]$ over the $m$ sorted pilot counts), and the seconds of one
evaluation of each width are measured on this machine. The predicted seconds per batch are
their product; the smallest wins. PerSample and Lanes solve every sample alike, so the choice
changes the time, not the result.
"""

import math
import time

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
from .likelihood_grid import likelihood_probes

LANE_WIDTHS = (32, 64, 128, 256, 512)
# Options that set the schedule or the steps themselves: not forwarded to the pilot's solve.
_OWN_OPTIONS = ("schedule", "lanes", "grid", "steps", "sharding", "chunk_size", "throw")


class ScheduleChoice(eqx.Module):
    """The result of [`scoresde.choose_schedule`][]: `schedule`, the value to pass as
    `log_likelihood(..., schedule=...)` for batches of `batch_size`; `table`, one row per
    candidate (its predicted batched evaluations, their width, the measured seconds of one
    evaluation of that width and the predicted seconds per batch), fastest first; `pilot_nfe`,
    the pilot's per-sample evaluations (mean, quartiles, max)."""

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
    """The fastest of `repeats` timed evaluations of the augmented likelihood drift on `width`
    samples (the pilot's rows repeated), compiled beforehand."""
    rows = jnp.arange(width) % x.shape[0]
    xs = x[rows]
    ps = jax.tree.map(lambda p: p[rows], probes)
    deltas = jnp.zeros((width, divergence.num_estimates), x.dtype)
    u = variable.u_of_t(sde, jnp.asarray(t_eps, x.dtype))

    @jax.jit
    def evaluate(xs, ps, deltas):
        def one(xi, pi, di):
            return AugmentedFlow(sde, score, divergence, variable, pi)(u, (xi, di), None)

        return jax.vmap(one)(xs, ps, deltas)

    jax.block_until_ready(evaluate(xs, ps, deltas))
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(evaluate(xs, ps, deltas))
        best = min(best, time.perf_counter() - started)
    return best


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

    The pilot is solved per sample with `options` (any `log_likelihood` option but the
    schedule's and the steps': `solver`, `rtol`, `atol`, `t_eps`, `divergence`, `variable`,
    ...), which gives the spread of evaluations $n_i$; one evaluation of each width is timed
    here (`repeats` runs, the fastest kept). Each candidate's time per batch is then predicted
    as in the module doc: `PerSample()` pays $\mathbb E[\max_{i\le B} n_i]$ evaluations of
    width $B$, `Lanes(L)` about $B\bar n/L$ of width $L$.

    **Arguments:** `candidates`, the schedules to choose from (default: `PerSample()` and
    `Lanes(L)` for every `L` of 32, 64, ..., 512 below `batch_size`; both solve each sample
    alike). `SharedSteps()` changes the results (one step sequence for the batch), so it is
    considered only when passed here; its evaluations are measured by a shared solve of the
    pilot. `key`: the probes' key, as in `log_likelihood`.

    **Returns:** a [`scoresde.ScheduleChoice`][]: `schedule` to pass as
    `log_likelihood(..., schedule=choice.schedule)`, and the `table` it was chosen from.
    The prediction ignores each loop's own overhead: check it with
    `benchmarks/likelihood_schedule.py`, which times every candidate beside it.
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
    pilot = log_likelihood(sde, score, x, key=key, schedule=PerSample(), **options)
    nfe = np.asarray(pilot.nfe, np.float64)
    shared_nfe = None
    if any(isinstance(c, SharedSteps) for c in candidates):
        shared = log_likelihood(sde, score, x, key=key, schedule=SharedSteps(), **options)
        shared_nfe = float(np.asarray(shared.nfe)[0])
    divergence = options.get("divergence", DIVERGENCE)
    variable = as_integration_variable(options.get("variable", VARIABLE))
    t_eps = options.get("t_eps", T_EPS)
    probe_key = key if divergence.stochastic else None
    probes = likelihood_probes(sde, score, divergence, x, probe_key, t_eps)
    seconds_of_width = {}
    rows = []
    for schedule in candidates:
        evaluations, width = predicted_evaluations(schedule, nfe, batch_size, shared_nfe)
        if width not in seconds_of_width:
            seconds_of_width[width] = evaluation_seconds(
                sde, score, x, probes, divergence, variable, t_eps, width, repeats
            )
        per_evaluation = seconds_of_width[width]
        rows.append(
            {
                "schedule": repr(schedule),
                "evaluations": evaluations,
                "width": width,
                "seconds_per_evaluation": per_evaluation,
                "predicted_seconds": evaluations * per_evaluation,
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
        },
    )
