"""`ss.choose_schedule` against the measured times of every schedule (issue 27, item 4).

For each problem and batch size: `ss.choose_schedule` predicts each candidate's seconds per batch
from a pilot of 128 data points (its per-sample NFE spread and one timed evaluation per width);
then every candidate's `log_likelihood` call on a batch of that size is timed here, interleaved
over `--rounds` rounds (each compiled beforehand), beside the in-process scipy RK45 baseline of
`benchmarks/likelihood.py` (the original score-SDE code's solve, same probes). Reported:

- each candidate's predicted and measured seconds (median and [min, max] over the rounds);
- the chosen schedule's measured time over the fastest candidate's (1.0 = the right choice) and
  the speed-up of the chosen schedule over the default `PerSample()` and over scipy, each with
  the range over rounds of the per-round ratio.

Problems `mix64` (2-component 64-D mixture) and `aniso64`, VP, t_eps 1e-5, float64, exact
scores, one Rademacher probe, the default solve (Dopri5, rtol = atol = 1e-5); data from
`jr.key(0)`, the pilot from `jr.key(1)`.

    python benchmarks/likelihood_schedule.py            # ~10 minutes on 2 cores
    python benchmarks/likelihood_schedule.py --quick    # mix64 at batch 256

Writes `benchmarks/results/likelihood_schedule[_quick].json`. Run it alone: the times are
wall-clock on a shared machine.
"""

import argparse
import os
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import likelihood as bench_likelihood  # noqa: E402
from _common import load_problem, metadata, write  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._tuning.likelihood_grid import likelihood_probes  # noqa: E402
from scoresde._tuning.likelihood_schedule import LANE_WIDTHS  # noqa: E402

SDE = ss.VPSDE()
T_EPS = 1e-5
PILOT = 128


def run_problem(name, batch, rounds):
    mix = load_problem(name, jnp.float64)
    score = ss.analytic.marginal_score(mix, SDE)
    x = mix.sample(jr.key(0), batch)
    pilot = mix.sample(jr.key(1), PILOT)
    key = jr.key(2)
    started = time.perf_counter()
    choice = ss.choose_schedule(SDE, score, pilot, batch_size=batch, key=key)
    choose_seconds = time.perf_counter() - started
    schedules = {row["schedule"]: row for row in choice.table}
    candidates = {repr(s): s for s in [ss.PerSample()] + [ss.Lanes(w) for w in ss_lanes(batch)]}

    def ours(schedule):
        def run():
            out = ss.log_likelihood(SDE, score, x, key=key, schedule=schedule, t_eps=T_EPS)
            return jax.block_until_ready(out.log_prob)

        return run

    divergence = ss.Hutchinson()
    evaluate = bench_likelihood.make_eval(score, divergence)
    probes = likelihood_probes(SDE, score, divergence, x, key, T_EPS)

    def scipy_run():
        return bench_likelihood.scipy_baseline(evaluate, x, probes)

    runs = {name_: ours(s) for name_, s in candidates.items()}
    runs["scipy RK45"] = scipy_run
    for run in runs.values():
        run()  # compile
    times = {k: [] for k in runs}
    for _ in range(rounds):
        for k, run in runs.items():
            t0 = time.perf_counter()
            run()
            times[k].append(time.perf_counter() - t0)
    times = {k: np.asarray(v) for k, v in times.items()}
    chosen = repr(choice.schedule)
    fastest = min(candidates, key=lambda k: np.median(times[k]))

    def ratio(a, b):
        per_round = times[b] / times[a]
        return {"median": float(np.median(per_round)), "range": [float(per_round.min()),
                float(per_round.max())]}  # fmt: skip

    row = {
        "problem": name,
        "batch": batch,
        "pilot_nfe": choice.pilot_nfe,
        "choose_seconds": choose_seconds,
        "chosen": chosen,
        "fastest_measured": fastest,
        "chosen_over_fastest": ratio(fastest, chosen),
        "speedup_over_per_sample": ratio(chosen, "PerSample()"),
        "speedup_over_scipy": ratio(chosen, "scipy RK45"),
        "candidates": {
            k: {
                "predicted_seconds": schedules[k]["predicted_seconds"] if k in schedules else None,
                "measured_median": float(np.median(times[k])),
                "measured_range": [float(times[k].min()), float(times[k].max())],
            }
            for k in runs
        },
    }
    print(f"-- {name}, batch {batch}: pilot NFE {choice.pilot_nfe}; chose {chosen} "
          f"({choose_seconds:.1f} s to choose); fastest measured {fastest}", flush=True)  # fmt: skip
    for k, v in row["candidates"].items():
        pred = (
            "" if v["predicted_seconds"] is None else f"predicted {v['predicted_seconds']:.3f} s, "
        )
        lo, hi = v["measured_range"]
        print(f"   {k:18s} {pred}measured {v['measured_median']:.3f} s [{lo:.3f}, {hi:.3f}]")
    for label, key_ in (("chosen / fastest time", "chosen_over_fastest"),
                        ("speed-up over PerSample()", "speedup_over_per_sample"),
                        ("speed-up over scipy RK45", "speedup_over_scipy")):  # fmt: skip
        r = row[key_]
        print(f"   {label}: {r['median']:.2f} [{r['range'][0]:.2f}, {r['range'][1]:.2f}] "
              f"over {rounds} rounds")  # fmt: skip
    return row


def ss_lanes(batch):
    """The lane widths `choose_schedule` considers by default at this batch size."""
    return [w for w in LANE_WIDTHS if w < batch]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--problems", nargs="+", default=["mix64", "aniso64"])
    p.add_argument("--batches", nargs="+", type=int, default=[256, 1024])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    problems = ["mix64"] if args.quick else args.problems
    batches = [256] if args.quick else args.batches
    started = time.perf_counter()
    rows = [run_problem(n, b, args.rounds) for n in problems for b in batches]
    payload = dict(
        benchmark="likelihood_schedule",
        **metadata(
            quick=args.quick,
            problems=problems,
            batches=batches,
            rounds=args.rounds,
            pilot=PILOT,
            t_eps=T_EPS,
            load_average=os.getloadavg()[0],
        ),  # fmt: skip
        rows=rows,
        seconds=time.perf_counter() - started,
    )
    write("likelihood_schedule_quick" if args.quick else "likelihood_schedule", payload)


if __name__ == "__main__":
    main()
