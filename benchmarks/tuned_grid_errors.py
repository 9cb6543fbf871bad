"""Where the error of a tuned grid sits, for the rows of `tuned_grids.py` that miss the goal.

For a solver's tuned grid t_0 = T > ... > t_N = t_eps on the mixtures (exact scores), from the
same test latents as `tuned_grids.py`:

- `after_k_steps[k]`: the RMS end-point error when the solver takes only the first k steps and
  a tight solve (Tsit5, rtol = atol = 1e-7, float64) carries the state from t_k to t_eps: the
  error the first k steps leave behind (k = 0: none; k = N: the whole solve, up to the last
  multistep correction). Its increments attribute the end error to the steps (as propagated).
- `quantiles`: the per-sample end-point error (RMS over coordinates) at the 50th, 90th and 99th
  percentile and its maximum, beside the RMS over samples: outliers or a uniform error.
- the same for the best named grid of the row's best configuration.

    python benchmarks/tuned_grid_errors.py [--results benchmarks/results/tuned_grids_mixtures.json]

Writes `benchmarks/results/tuned_grid_errors.json`.
"""

import argparse
import json
import pathlib
import sys

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
import tuned_grids  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._terms import BatchedScore, probability_flow_term  # noqa: E402
from scoresde._tuning.grid_solve import solve_on_times  # noqa: E402
from scoresde._tuning.tune_grid import NAMED_GRIDS  # noqa: E402


def carry_to_end(sde, score, x, t_from, t_eps):
    """A tight solve of the PF-ODE from `x` at `t_from` down to `t_eps` (float64)."""
    if t_from <= t_eps:
        return x
    term = probability_flow_term(sde, BatchedScore(score), origin=0.0)
    sol = dfx.diffeqsolve(
        term, dfx.Tsit5(), -t_from, -t_eps, (t_from - t_eps) / 64, x,
        stepsize_controller=dfx.PIDController(rtol=1e-7, atol=1e-7), max_steps=100_000,
    )  # fmt: skip
    return sol.ys[-1]


def diagnose(sde, score, solver, times, x_T, ref):
    times = jnp.asarray(times, jnp.float64)
    t_eps = float(times[-1])
    after = []
    for k in range(len(times)):
        x = x_T if k == 0 else solve_on_times(sde, score, solver, times[: k + 1], x_T)
        x = carry_to_end(sde, score, x, float(times[k]), t_eps)
        after.append(float(np.sqrt(np.mean((np.asarray(x) - ref) ** 2))))
    x = solve_on_times(sde, score, solver, times, x_T)
    per_sample = np.sqrt(np.mean((np.asarray(x) - ref) ** 2, axis=1))
    return {
        "times": [float(t) for t in times],
        "after_k_steps": after,
        "rms": float(np.sqrt(np.mean(per_sample**2))),
        "quantiles": {q: float(np.quantile(per_sample, float(q) / 100)) for q in ("50", "90", "99")}
        | {"max": float(per_sample.max())},
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(_common.RESULTS / "tuned_grids_mixtures.json"))
    p.add_argument("--all", action="store_true", help="every row, not only those missing the goal")
    args = p.parse_args(argv)
    rows = json.loads(pathlib.Path(args.results).read_text())["rows"]
    out = []
    cache = {}
    for row in rows:
        if row["ok"] and not args.all:
            continue
        name, nfe = row["problem"], row["nfe"]
        if name not in cache:
            sizes = {"ring2d": 1024, "aniso64": 512}
            sde, _, x_T, ref, _ = tuned_grids.problem(name, sizes[name], jr.key(1), 0)
            mix = ss.analytic.GaussianMixture.from_npz(_common.DATA / f"{name}.npz", jnp.float64)
            cache[name] = (
                sde,
                ss.analytic.marginal_score(mix, sde),
                jnp.asarray(x_T, jnp.float64),
                ref,
            )
        sde, score, x_T, ref = cache[name]
        entry = {"problem": name, "nfe": nfe, "ratio": row["ratio"], "solvers": {}}
        for sname, solver in tuned_grids.SOLVERS.items():
            s = row["solvers"][sname]
            named = NAMED_GRIDS[s["best_named_grid"]].times_for(sde, nfe, float(s["times"][-1]))
            entry["solvers"][sname] = {
                "tuned": diagnose(sde, score, solver, s["times"], x_T, ref),
                s["best_named_grid"]: diagnose(sde, score, solver, named, x_T, ref),
            }
            for label, d in entry["solvers"][sname].items():
                steps = " ".join(f"{e:.3g}" for e in d["after_k_steps"])
                qs = d["quantiles"]
                print(f"{name} NFE {nfe} {sname} {label:15s} rms {d['rms']:.3g}; per-sample "
                      f"p50 {qs['50']:.3g} p90 {qs['90']:.3g} p99 {qs['99']:.3g} max "
                      f"{qs['max']:.3g}; error after k steps then exact: {steps}", flush=True)  # fmt: skip
        out.append(entry)
    _common.write("tuned_grid_errors", dict(benchmark="tuned_grid_errors",
                                            **_common.metadata(results=args.results), rows=out))  # fmt: skip
    del default_grids


if __name__ == "__main__":
    main()
