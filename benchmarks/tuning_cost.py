"""What `ss.tune_grid` costs and what its cheaper settings lose (issue 27: "found in minutes").

An L-BFGS iteration differentiates the solver's `steps` network evaluations on every fitting
latent, so its cost is proportional to `fit_size`; `max_iterations` caps the count;
`network_times` adds a second search. For each (problem, solver, steps) and each setting
(fit_size, max_iterations, network_times), one `tune_grid` call from
a pilot of 256 latents (key 0; the reference solve included in its seconds), then the RMS
end-point error of the grid it returns on the TEST latents of `benchmarks/tuned_grids.py` (key
1, their tight reference), with a 95 % bootstrap interval over those latents (1000 resamples,
seed 0), beside the best named grid's. The settings run in turn, the same process, the reference
of the test latents computed once; run it alone: the seconds are wall time on this machine.

    python benchmarks/tuning_cost.py                       # digits-v, UniPC 10 steps: ~15 min
    python benchmarks/tuning_cost.py --problems aniso64 --solvers unipc 2m

Writes `benchmarks/results/tuning_cost.json` (`--tag` to name it otherwise).
"""

import argparse
import math
import os
import pathlib
import sys
import time

import jax.random as jr
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
import default_grids  # noqa: E402
import tuned_grids  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._metrics.bootstrap import bootstrap_bounds  # noqa: E402
from scoresde._tuning.tune_grid import NAMED_GRIDS  # noqa: E402

SOLVERS = {"unipc": ss.UniPC(), "2m": ss.DPMSolverPP2M()}
SIZES = {"ring2d": 1024, "aniso64": 512, "digits-v": 256}
# (fit_size, max_iterations, network_times); the first: tune_grid's defaults
SETTINGS = ((None, 200, False), (64, 200, False), (64, 30, False), (64, 30, True))


def per_sample_sq(x, ref) -> np.ndarray:
    n = len(ref)
    d = np.asarray(x, np.float64).reshape(n, -1) - np.asarray(ref, np.float64).reshape(n, -1)
    return np.mean(d**2, axis=1)


def card(sq) -> dict:
    low, high = bootstrap_bounds(lambda rows: math.sqrt(sq[rows].mean()), len(sq), seed=0,
                                 num_resamples=1000)  # fmt: skip
    return dict(rms=math.sqrt(sq.mean()), interval=[low, high])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", default=["digits-v"], choices=tuple(SIZES))
    p.add_argument("--solvers", nargs="+", default=["unipc"], choices=tuple(SOLVERS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--pilot", type=int, default=256)
    p.add_argument("--tag", default="tuning_cost")
    args = p.parse_args(argv)
    rows = []
    for name in args.problems:
        sde, score, x_test, ref, info = tuned_grids.problem(name, SIZES[name], jr.key(1), 400)
        t_eps = default_grids.t_eps(sde)
        print(f"-- {name}: {len(ref)} test latents, reference {info['seconds']:.0f} s", flush=True)

        def test_sq(solver, grid, x_test=x_test, ref=ref, sde=sde, score=score):
            x = ss.sample_ode(sde, score, key=jr.key(1), shape=x_test.shape, x_T=x_test,
                              solver=solver, grid=grid).x  # fmt: skip
            return per_sample_sq(x, ref)

        for sname in args.solvers:
            solver = SOLVERS[sname]
            named = {g: card(test_sq(solver, v.times_for(sde, args.steps, t_eps)))
                     for g, v in NAMED_GRIDS.items()}  # fmt: skip
            best = min(named, key=lambda g: named[g]["rms"])
            for fit_size, max_iterations, network_times in SETTINGS:
                started = time.perf_counter()
                grid = ss.tune_grid(sde, score, solver=solver, steps=args.steps,
                                    key=jr.PRNGKey(0), shape=(args.pilot, *x_test.shape[1:]),
                                    t_eps=t_eps, fit_size=fit_size,
                                    max_iterations=max_iterations,
                                    network_times=network_times)  # fmt: skip
                seconds = time.perf_counter() - started
                tuned = card(test_sq(solver, grid))
                i = grid.info
                row = dict(problem=name, solver=type(solver).__name__, steps=args.steps,
                           fit_size=fit_size, max_iterations=max_iterations,
                           network_times=network_times, seconds=seconds,
                           reference_seconds=i["reference_seconds"],
                           tuning_seconds=i["tuning_seconds"], iterations=i["iterations"],
                           chosen=i["chosen"], pilot=i["pilot"], held_out=i["held_out"],
                           test=tuned, best_named=best, best_named_test=named[best],
                           over_best_named=tuned["rms"] / named[best]["rms"])  # fmt: skip
                rows.append(row)
                print(f"  {row['solver']:14s} fit {str(fit_size):>4s} max {max_iterations:3d} "
                      f"network times {'yes' if network_times else 'no '}: "
                      f"{seconds:5.0f} s (reference {row['reference_seconds']:.0f}, "
                      f"{row['iterations']} it, {row['tuning_seconds']:.0f} s), test RMS "
                      f"{tuned['rms']:.4g} [{tuned['interval'][0]:.4g}, {tuned['interval'][1]:.4g}]"
                      f" = {row['over_best_named']:.2f}x best named ({best} "
                      f"{named[best]['rms']:.4g}); {row['chosen']}", flush=True)  # fmt: skip
    _common.write(args.tag, dict(benchmark="tuning_cost", rows=rows,
                                 **_common.metadata(**vars(args), settings=SETTINGS,
                                                    load_average=os.getloadavg()[0])))  # fmt: skip


if __name__ == "__main__":
    main()
