"""Tuned time grids against the named ones, on held-out latents (issue 27).

For each problem and NFE budget (5, 10, 20), UniPC (order 3) and DPM-Solver++(2M) each run on
every named grid (`uniform`, `log_snr`, `karras`, `clipped_log_snr`) and on the grid that
`ss.tune_grid` learns for it from a pilot of 256 latents (key 0). Every figure is the RMS
end-point error (over samples and coordinates) on TEST latents drawn with another key (never
seen by the tuner) against a tight solve from the same latents. Per (problem, NFE):

- `best named`: the smallest error of any of the two solvers on any named grid;
- `best tuned`: the smaller of the two tuned errors; `ratio` = best tuned / best named (goal
  <= 0.5 at 5 and 10 NFE, <= 1 at 20);
- per solver, tuned / its own best named grid (goal <= 1);
- each ratio's 95 % paired bootstrap interval over the test latents (`RESAMPLES` resamples of
  the latents, both errors on the same resample);
- sample quality: the sliced Wasserstein distance (ring2d, aniso64; 128 directions) or the
  Frechet distance in the digit classifier's features (digits) of the best named and the best
  tuned configuration's samples to data, beside the reference solve's own (its floor at this n);
- the tuner's cost in seconds (reference solve + tuning), on this machine.

Problems: `ring2d`, `aniso64` (the package's mixtures with their exact scores, VP, t_eps 1e-3;
test reference Dopri8 rtol 1e-10 in float64); `digits-v` (the v-prediction digits U-Net of
`benchmarks/default_grids.py`, trained once by the library's recipe; reference Tsit5 at 1e-5).

    python benchmarks/tuned_grids.py              # ~40 minutes on 2 cores (+3 to train, once)
    python benchmarks/tuned_grids.py --quick      # ring2d at NFE 10, 2 minutes

Writes `benchmarks/results/tuned_grids.json` and `.md` and `tuned_grids.png` (work-precision:
error against NFE, named grids dashed, tuned solid); `_quick` with `--quick`.

Every tuning compiles new XLA programs, and each maps memory sections: one process tuning both
mixtures with `--network-times --network-scales` passed Linux's default limit of 65,530 mappings
(`vm.max_map_count`; LLVM then fails with "Cannot allocate memory" while RAM is free). Raise it
(`sysctl -w vm.max_map_count=262144`) or run one problem per process.
"""

import argparse
import math
import os
import pathlib
import sys
import time

import jax.numpy as jnp
import jax.random as jr
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
import default_grids  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._metrics.bootstrap import bootstrap_bounds  # noqa: E402
from scoresde._tuning.tune_grid import NAMED_GRIDS  # noqa: E402

NFES = (5, 10, 20)
SOLVERS = {"UniPC": ss.UniPC(), "DPM-Solver++(2M)": ss.DPMSolverPP2M()}
PILOT = 256
GOAL = {5: 0.5, 10: 0.5, 20: 1.0}
RESAMPLES = 2000


def rms(x, ref) -> float:
    return default_grids.rms(x, ref)


def squared_errors(x, ref):
    """Each latent's mean squared error over its coordinates (inf where not finite)."""
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    per = np.mean((x - np.asarray(ref, np.float64).reshape(x.shape[0], -1)) ** 2, axis=1)
    return np.where(np.all(np.isfinite(x), axis=1), per, np.inf)


def ratio_interval(numerator, denominator, seed) -> list[float]:
    """The 95 % paired bootstrap interval of RMS(numerator) / RMS(denominator), both the
    per-latent squared errors of the same test latents (resampled together)."""
    ratio = lambda rows: math.sqrt(np.mean(numerator[rows]) / np.mean(denominator[rows]))
    return list(bootstrap_bounds(ratio, numerator.shape[0], seed=seed, num_resamples=RESAMPLES))


def problem(name, num, key, train_steps):
    """`(sde, score, x_T, ref, data_sampler, info)`: the TEST latents and their reference."""
    if name.startswith("digits"):
        sde, score, x_T, ref, info = default_grids.digits_problem(
            num, key, name.partition("-")[2], train_steps
        )
        return sde, score, x_T, ref, info
    sde, score, x_T, ref, info = default_grids.mixture_problem(name, num, key)
    return sde, score, x_T, ref, info


def quality(name, samples, ref_samples, key, cache):
    """Distance of `samples` to data: (value, floor = the reference solve's own)."""
    if name.startswith("digits"):
        if "classifier" not in cache:
            cache["classifier"] = ss.DigitClassifier()
        clf = cache["classifier"]
        value = ss.digit_metrics(np.asarray(samples), classifier=clf).frechet
        floor = ss.digit_metrics(np.asarray(ref_samples), classifier=clf).frechet
        return value, floor
    if "data" not in cache:
        mix = _common.load_problem(name)
        cache["data"] = np.asarray(mix.sample(jr.PRNGKey(99), samples.shape[0]))
    data = cache["data"]
    value = ss.sliced_wasserstein(samples, data, key=key)
    floor = ss.sliced_wasserstein(jnp.asarray(ref_samples, jnp.float32), data, key=key)
    return value, floor


def bench(name, sde, score, x_T, ref, nfes, pilot, max_iterations, fit_size=None,
          network_times=False, network_scales=False):  # fmt: skip
    rows, cache = [], {}
    t_eps = default_grids.t_eps(sde)
    for nfe in nfes:
        row = {"problem": name, "nfe": nfe, "solvers": {}}
        samples, errors = {}, {}
        for sname, solver in SOLVERS.items():
            steps = nfe  # both take one evaluation per step
            named = {}
            for gname, grid in NAMED_GRIDS.items():
                times = grid.times_for(sde, steps, t_eps)
                x = ss.sample_ode(sde, score, key=jr.PRNGKey(1), shape=x_T.shape, x_T=x_T,
                                  solver=solver, grid=times).x  # fmt: skip
                named[gname] = rms(x, ref)
                samples[(sname, gname)] = x
                errors[(sname, gname)] = squared_errors(x, ref)
            started = time.perf_counter()
            tuned = ss.tune_grid(sde, score, solver=solver, steps=steps, key=jr.PRNGKey(0),
                                 shape=(pilot, *x_T.shape[1:]), t_eps=t_eps,
                                 max_iterations=max_iterations, fit_size=fit_size,
                                 network_times=network_times,
                                 network_scales=network_scales)  # fmt: skip
            seconds = time.perf_counter() - started
            x = ss.sample_ode(sde, score, key=jr.PRNGKey(1), shape=x_T.shape, x_T=x_T,
                              solver=solver, grid=tuned).x  # fmt: skip
            samples[(sname, "tuned")] = x
            errors[(sname, "tuned")] = squared_errors(x, ref)
            best_grid = min(named, key=named.get)
            info = tuned.info
            row["solvers"][sname] = {
                "named": named,
                "best_named_grid": best_grid,
                "tuned": rms(x, ref),
                "tuned_over_best_named": rms(x, ref) / named[best_grid],
                "tuned_over_best_named_interval": ratio_interval(
                    errors[(sname, "tuned")], errors[(sname, best_grid)], seed=nfe
                ),
                "tuner_pilot": info["rms"][info["chosen"]]["pilot"],
                "tuner_held_out": info["rms"][info["chosen"]]["held_out"],
                "chosen": info["chosen"],
                "tuner_rms": info["rms"],
                "iterations": info["iterations"],
                "seconds": seconds,
                "times": [float(t) for t in np.asarray(tuned.times)],
            }
            print(f"  {name:9s} NFE {nfe:2d} {sname:17s} best named {best_grid:15s} "
                  f"{named[best_grid]:.3e}  tuned {rms(x, ref):.3e} "
                  f"({rms(x, ref) / named[best_grid]:.2f}x; pilot {info['rms'][info['chosen']]['pilot']:.2e}, "
                  f"{info['chosen']}, {info['iterations']} it, {seconds:.0f} s)", flush=True)  # fmt: skip
        configs = {(s, g): e for s, v in row["solvers"].items() for g, e in v["named"].items()}
        best_named = min(configs, key=configs.get)
        best_tuned = min(row["solvers"], key=lambda s: row["solvers"][s]["tuned"])
        key = jr.PRNGKey(5)
        q_named, floor = quality(name, samples[best_named], ref, key, cache)
        q_tuned, _ = quality(name, samples[(best_tuned, "tuned")], ref, key, cache)
        row.update(
            best_named={
                "solver": best_named[0],
                "grid": best_named[1],
                "rms": configs[best_named],
                "distance_to_data": q_named,
            },  # fmt: skip
            best_tuned={
                "solver": best_tuned,
                "rms": row["solvers"][best_tuned]["tuned"],
                "distance_to_data": q_tuned,
            },  # fmt: skip
            distance_floor=floor,
            distance="frechet" if name.startswith("digits") else "sliced_wasserstein",
        )
        row["ratio"] = row["best_tuned"]["rms"] / row["best_named"]["rms"]
        row["ratio_interval"] = ratio_interval(
            errors[(best_tuned, "tuned")], errors[best_named], seed=nfe
        )
        row["goal"] = GOAL[nfe] if nfe in GOAL else 1.0
        row["ok"] = row["ratio"] <= row["goal"] and all(
            v["tuned_over_best_named"] <= 1.0 for v in row["solvers"].values()
        )
        print(f"  -> {name} NFE {nfe}: best named {best_named} {configs[best_named]:.3e}, "
              f"best tuned {best_tuned} {row['best_tuned']['rms']:.3e}: ratio {row['ratio']:.2f} "
              f"{interval(row['ratio_interval'])} (goal {row['goal']}); {row['distance']} to data {q_named:.4g} -> {q_tuned:.4g} "
              f"(reference {floor:.4g})", flush=True)  # fmt: skip
        rows.append(row)
    return rows


def interval(bounds) -> str:
    """`[low, high]`, or nothing for rows written before the intervals were."""
    return "" if bounds is None else f"[{bounds[0]:.2f}, {bounds[1]:.2f}]"


def markdown(rows) -> str:
    """The table; ratios with their 95 % paired bootstrap intervals over the test latents."""
    lines = [
        "| problem | NFE | best named (solver, grid) | RMS | best tuned | RMS | ratio | "
        "UniPC tuned/named | 2M tuned/named | distance named -> tuned (reference) | tune s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["solvers"]
        own = lambda v: (
            f"{v['tuned_over_best_named']:.2f} " + interval(v.get("tuned_over_best_named_interval"))
        )
        secs = "/".join(f"{v['seconds']:.0f}" for v in s.values())
        lines.append(
            f"| {r['problem']} | {r['nfe']} | {r['best_named']['solver']}, "
            f"{r['best_named']['grid']} | {r['best_named']['rms']:.2e} | "
            f"{r['best_tuned']['solver']} | {r['best_tuned']['rms']:.2e} | {r['ratio']:.2f} "
            f"{interval(r.get('ratio_interval'))} | {own(s['UniPC'])} | "
            f"{own(s['DPM-Solver++(2M)'])} | "
            f"{r['best_named']['distance_to_data']:.4g} -> {r['best_tuned']['distance_to_data']:.4g}"
            f" ({r['distance_floor']:.4g}) | {secs} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 4), squeeze=False)
    for ax, prob in zip(axes[0], problems, strict=True):
        sub = [r for r in rows if r["problem"] == prob]
        nfes = [r["nfe"] for r in sub]
        for sname, colour in zip(SOLVERS, ("C0", "C1"), strict=True):
            for gname, style in zip(NAMED_GRIDS, (":", "--", "-.", (0, (1, 3))), strict=True):
                ax.plot(nfes, [r["solvers"][sname]["named"][gname] for r in sub], color=colour,
                        linestyle=style, alpha=0.6, label=f"{sname} {gname}")  # fmt: skip
            ax.plot(nfes, [r["solvers"][sname]["tuned"] for r in sub], color=colour, marker="o",
                    linewidth=2, label=f"{sname} tuned")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.set_xlabel("NFE")
        ax.set_ylabel("RMS error vs reference (held-out latents)")
        ax.set_title(prob)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="ring2d at NFE 10")
    p.add_argument("--problems", nargs="+", default=None)
    p.add_argument("--nfes", nargs="+", type=int, default=None)
    p.add_argument("--pilot", type=int, default=PILOT)
    p.add_argument("--max-iterations", type=int, default=100)
    p.add_argument("--fit-size", type=int, default=None,
                   help="pilot latents in the tuner's gradient (tune_grid's fit_size)")  # fmt: skip
    p.add_argument("--network-times", action="store_true",
                   help="tune decoupled network times too (tune_grid's network_times)")  # fmt: skip
    p.add_argument("--network-scales", action="store_true",
                   help="and per-step scales of the network's output (tune_grid's "
                   "network_scales)")  # fmt: skip
    p.add_argument("--train-steps", type=int, default=400)
    p.add_argument("--tag", default=None, help="results name (default tuned_grids[_quick])")
    args = p.parse_args(argv)
    problems = args.problems or (["ring2d"] if args.quick else ["ring2d", "aniso64", "digits-v"])
    nfes = args.nfes or ([10] if args.quick else list(NFES))
    sizes = {"ring2d": 1024, "aniso64": 512, "digits-v": 256, "digits-eps": 256}
    started = time.perf_counter()
    rows = []
    for name in problems:
        sde, score, x_T, ref, info = problem(name, sizes[name], jr.key(1), args.train_steps)
        print(f"-- {name}: {x_T.shape[0]} test latents, reference {info}", flush=True)
        rows += bench(name, sde, score, x_T, ref, nfes, args.pilot, args.max_iterations,
                      args.fit_size, args.network_times, args.network_scales)  # fmt: skip
    ok = [r["ok"] for r in rows]
    print(f"\n{sum(ok)}/{len(ok)} rows meet the goals; {time.perf_counter() - started:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    tag = args.tag or ("tuned_grids_quick" if args.quick else "tuned_grids")
    payload = dict(
        benchmark="tuned_grids",
        **_common.metadata(quick=args.quick, problems=problems, nfes=nfes, pilot=args.pilot,
                           test_sizes=sizes, max_iterations=args.max_iterations,
                           fit_size=args.fit_size, network_times=args.network_times,
                           network_scales=args.network_scales,
                           train_steps=args.train_steps, load_average=os.getloadavg()[0]),
        rows=rows,
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    path = _common.write(tag, payload)
    md = path.with_suffix(".md")
    md.write_text(markdown(rows))
    plot(rows, path.with_suffix(".png"))
    print(markdown(rows))
    print(f"wrote {path}, {md}")


if __name__ == "__main__":
    main()
