"""Fast deterministic samplers on exact-score Gaussian mixtures (EDM / Karras setting).

For each problem (ring2d, n = 4096; aniso64, n = 2048) and each sampler, at NFE in
{10, 20, 50, 100}:

- `err`: mean L2 distance per sample to a float64 reference PF-ODE solution (Dopri8,
  rtol = atol = 1e-10, integrated in log sigma down to sigma = 1e-7, then Tweedie) from the same
  initial noise x_T ~ N(0, 80^2 I);
- `sw`: sliced Wasserstein-2 distance (`ss.sliced_wasserstein`, 128 directions) of the samples to exact mixture samples
  (the reference ODE samples' own `sw` is the floor set by the sample size);
- `t/(NFE*score)`: wall time of the whole jitted sampler over NFE times one jitted batched
  score call (dispatched on its own), both measured in this run (compile excluded; min over
  repeats); `median`: the median over rounds that time one score call and the sampler back
  to back (robust to a shared machine's drifts); `in loop`: the same against one score call inside a compiled loop of 50 dependent
  calls (no dispatch cost: the stricter ratio, the per-step overhead of diffrax's loop).

The setting is the anchors' of `problems/README.md`: EDMSDE(0.002, 80), sigma from 80 to 0, exact
denoiser. A sampler with `steps` steps on a grid from 80 to 0.002 ends with the Tweedie denoising
step at sigma = 0.002 (+1 NFE), which is exactly the anchors' last step to sigma = 0 (Euler's
and DPM-Solver++'s final step to 0 both return the denoiser's output).

Run: `python benchmarks/fast_solvers.py [--quick] [--problems ring2d aniso64]`.
Writes `benchmarks/results/fast_solvers.json`.
"""

import argparse
import json
import math
import os
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import DATA, interleaved, metadata, ratio, timed

import scoresde as ss
from scoresde._solver import (
    DPMSolver2,
    DPMSolver3,
    DPMSolverPP2M,
    DPMSolverPP3M,
    EDMHeun,
    UniPC,
)
from scoresde._terms import BatchedScore

HERE = os.path.dirname(os.path.abspath(__file__))
ANCHORS = {  # problems/README.md: error at NFE 10, 20, 50, 100
    "aniso64": {
        "Euler": [0.687, 0.357, 0.145, 0.0837],
        "DPM-Solver++ 2M": [0.568, 0.125, 0.0213, 0.00617],
        "linear multistep (order 4)": [0.480, 0.111, 0.00895, 0.000702],
        "Heun (NFE 19, 49, 99)": [None, 0.472, 0.0568, 0.0116],
    },
    "ring2d": {
        "Euler": [0.121, 0.0564, 0.0218, 0.0107],
        "DPM-Solver++ 2M": [0.189, 0.0324, 0.00365, 0.000851],
        "linear multistep (order 4)": [0.0665, 0.0161, 0.00154, 0.000166],
    },
}
SIZES = {"ring2d": 4096, "aniso64": 2048}
NFES = (10, 20, 50, 100)
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def solvers():
    """name -> (solver, evaluations per step)."""
    return {
        "Euler": (dfx.Euler(), 1),
        "EDM Heun": (EDMHeun(), 2),
        "DPM-Solver-2": (DPMSolver2(), 2),
        "DPM-Solver-3": (DPMSolver3(), 3),
        "DPM-Solver++ 2M": (DPMSolverPP2M(), 1),
        "DPM-Solver++ 3M": (DPMSolverPP3M(), 1),
        "UniPC-2 (2M + corrector)": (UniPC(2), 1),
        "UniPC-3 (3M + corrector)": (UniPC(3), 1),
    }


def grids():
    """name -> function(sde, steps) -> decreasing times 80 -> 0.002.

    `clipped`: [`scoresde.clipped_log_snr_grid`][] with its defaults (one step 80 -> 4, uniform
    in log sigma down to 0.01, one step to 0.002).
    """
    return {
        "karras7": lambda sde, n: ss.time_grid(sde, n, t_eps=SIGMA_MIN, kind="karras", rho=7.0),
        "karras5": lambda sde, n: ss.time_grid(sde, n, t_eps=SIGMA_MIN, kind="karras", rho=5.0),
        "log_snr": lambda sde, n: ss.time_grid(sde, n, t_eps=SIGMA_MIN, kind="log_snr"),
        "clipped": lambda sde, n: ss.clipped_log_snr_grid(sde, n, t_eps=SIGMA_MIN),
    }


class NegatedTime(ss.AbstractSDE):
    """`sde` itself, but with `T = 0`, so that the terms' reversed time is s = -t.

    `sample_ode` integrates in s = T - t. For EDMSDE (T = 80) in float32 that puts t_eps = 0.002
    at s = 79.998, where diffrax clips every step ending within 100 ULP of the end (7.6e-4 in s)
    to the end: fine grids lose their last points to zero-length steps. In s = -t the end sits
    at -0.002 and 100 ULP are 2e-8. Everything else (the solvers included) is unchanged.
    """

    sde: ss.AbstractSDE

    @property
    def T(self):
        return 0.0

    def drift_coeff(self, t):
        return self.sde.drift_coeff(t)

    def diffusion(self, t):
        return self.sde.diffusion(t)

    def marginal(self, t):
        return self.sde.marginal(t)

    def log_snr(self, t):
        return self.sde.log_snr(t)

    def log_snr_inverse(self, lam):
        return self.sde.log_snr_inverse(lam)

    @property
    def prior_std(self):
        return self.sde.prior_std


@eqx.filter_jit
def run_fixed(solver, sde, score, x_T, ts, negated_time=True):
    """PF-ODE on the grid `ts` (whole batch, as in `sample_ode`'s fixed path) + Tweedie.

    `negated_time=False` integrates in `sample_ode`'s s = T - t; `True` in s = -t.
    """
    if negated_time:
        sde = NegatedTime(sde)
    s_grid = sde.T - ts
    term = ss.probability_flow_term(sde, BatchedScore(score))
    sol = dfx.diffeqsolve(
        term,
        solver,
        s_grid[0],
        s_grid[-1],
        None,
        x_T,
        stepsize_controller=dfx.StepTo(ts=s_grid),
        max_steps=ts.shape[0] - 1,
        throw=False,
    )
    x = sol.ys[0]
    t_end = ts[-1]
    return x + t_end**2 * BatchedScore(score)(t_end, x)


@eqx.filter_jit
def batched_score(score, t, x):
    return BatchedScore(score)(t, x)


@eqx.filter_jit
def score_loop(score, t, x, num):
    """`num` dependent batched score calls in one compiled loop (no dispatch per call)."""

    def body(i, x):
        return x + 1e-6 * BatchedScore(score)(t, x)

    return jax.lax.fori_loop(0, num, body, x)


def reference(mix64, x_T64):
    """float64 PF-ODE solution from sigma = 80 to 0 (in u = ln sigma: dx/du = x - D(x))."""
    sde = ss.EDMSDE(SIGMA_MIN, SIGMA_MAX)
    score = ss.analytic.marginal_score(mix64, sde)

    def vf(u, x, args):
        sigma = jnp.exp(u)
        return -(sigma**2) * BatchedScore(score)(sigma, x)

    @jax.jit
    def solve(x_T):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(vf),
            dfx.Dopri8(),
            math.log(SIGMA_MAX),
            math.log(1e-7),
            -0.05,
            x_T,
            stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10),
            max_steps=100_000,
        )
        x = sol.ys[0]
        return x + 1e-14 * BatchedScore(score)(1e-7, x), sol.stats["num_steps"]

    x, num_steps = solve(x_T64)
    return np.asarray(x), int(num_steps)


def sliced_w2(x, y, key):
    return ss.sliced_wasserstein(np.asarray(x, np.float32), np.asarray(y, np.float32), key=key)


def timeit(fn, repeats):
    """Best of `repeats` calls after a compiling one."""
    return timed(fn, repeats=repeats)[1]


def interleaved_ratio(run, score_call, nfe, repeats):
    """Median over `repeats` interleaved rounds of run time / (nfe x score-call time), so that
    slow drifts of a shared machine cancel."""
    _, _, times = interleaved({"run": run, "score": score_call}, repeats)
    return ratio([t / nfe for t in times["run"]], times["score"])["median"]


def bench_problem(name, quick, nfes, solver_names, grid_names, repeats):
    path = DATA / f"{name}.npz"
    n = SIZES[name] if not quick else min(SIZES[name], 512)
    key = jr.key(0)
    x_T = SIGMA_MAX * jax.vmap(
        lambda i: jr.normal(jr.fold_in(key, i), (np.load(path)["means"].shape[1],))
    )(jnp.arange(n))
    x_T = np.asarray(x_T, np.float32)

    jax.config.update("jax_enable_x64", True)
    try:
        mix64 = ss.analytic.GaussianMixture.from_npz(path, jnp.float64)
        start = time.perf_counter()
        ref, ref_steps = reference(mix64, jnp.asarray(x_T, jnp.float64))
        ref_time = time.perf_counter() - start
    finally:
        jax.config.update("jax_enable_x64", False)

    mix = ss.analytic.GaussianMixture.from_npz(path, jnp.float32)
    exact = np.asarray(mix.sample(jr.key(1), n))
    sw_key = jr.key(2)
    sde = ss.EDMSDE(SIGMA_MIN, SIGMA_MAX)
    score = ss.analytic.marginal_score(mix, sde)
    x_T = jnp.asarray(x_T)
    t_mid = jnp.asarray(1.0, jnp.float32)
    score_time = timeit(lambda: batched_score(score, t_mid, x_T), 5 * repeats)
    loop_n = 50
    score_loop_time = timeit(lambda: score_loop(score, t_mid, x_T, loop_n), repeats) / loop_n
    out = {
        "n": n,
        "dim": int(x_T.shape[1]),
        "reference": {"steps": ref_steps, "seconds": ref_time, "sw": sliced_w2(ref, exact, sw_key)},
        "score_call_seconds": score_time,
        "score_call_in_loop_seconds": score_loop_time,
        "rows": [],
    }
    print(
        f"\n== {name}: n={n}, dim={x_T.shape[1]}; reference Dopri8 {ref_steps} steps; "
        f"one batched score call {1e3 * score_time:.3f} ms ({1e3 * score_loop_time:.3f} ms "
        f"inside a compiled loop); reference sw "
        f"{out['reference']['sw']:.4f}"
    )
    print(
        f"{'sampler':28s} {'grid':8s} {'NFE':>4s} {'err':>10s} {'sw':>8s} "
        f"{'t/(NFE*score)':>13s} {'median':>7s} {'in loop':>8s} {'compile s':>9s}"
    )
    all_solvers, all_grids = solvers(), grids()
    for sname in solver_names:
        solver, per_step = all_solvers[sname]
        for gname in grid_names:
            for nfe in nfes:
                steps = (nfe - 1) // per_step
                if steps < 1:
                    continue
                ts = all_grids[gname](sde, steps).astype(jnp.float32)
                actual = steps * per_step + 1
                start = time.perf_counter()
                x = jax.block_until_ready(run_fixed(solver, sde, score, x_T, ts))
                compile_s = time.perf_counter() - start
                run_s = timeit(lambda s=solver, g=ts: run_fixed(s, sde, score, x_T, g), repeats)
                x = np.asarray(x)
                err = float(np.mean(np.linalg.norm(x.astype(np.float64) - ref, axis=1)))
                row = {
                    "sampler": sname,
                    "grid": gname,
                    "nfe": actual,
                    "steps": steps,
                    "err": err,
                    "sw": sliced_w2(x, exact, sw_key),
                    "seconds": run_s,
                    "time_ratio": run_s / (actual * score_time),
                    "time_ratio_median_interleaved": interleaved_ratio(
                        lambda s=solver, g=ts: run_fixed(s, sde, score, x_T, g),
                        lambda: batched_score(score, t_mid, x_T),
                        actual,
                        max(3, 2 * repeats),
                    ),
                    "time_ratio_in_loop": run_s / (actual * score_loop_time),
                    "compile_seconds": compile_s,
                }
                out["rows"].append(row)
                print(
                    f"{sname:28s} {gname:8s} {actual:4d} {err:10.3g} {row['sw']:8.4f} "
                    f"{row['time_ratio']:13.2f} {row['time_ratio_median_interleaved']:7.2f} "
                    f"{row['time_ratio_in_loop']:8.2f} {compile_s:9.1f}",
                    flush=True,
                )
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (< 1 min)")
    parser.add_argument("--problems", nargs="+", default=["ring2d", "aniso64"])
    parser.add_argument("--solvers", nargs="+", default=None)
    parser.add_argument("--grids", nargs="+", default=None)
    parser.add_argument("--nfes", nargs="+", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "fast_solvers.json"))
    args = parser.parse_args(argv)
    if args.quick:
        solver_names = args.solvers or ["Euler", "UniPC-3 (3M + corrector)"]
        grid_names = args.grids or ["karras7"]
        nfes = args.nfes or [10]
        problems = args.problems if args.problems != ["ring2d", "aniso64"] else ["ring2d"]
        repeats = 1
    else:
        solver_names = args.solvers or list(solvers())
        grid_names = args.grids or ["karras7", "log_snr", "clipped"]
        nfes = args.nfes or list(NFES)
        problems = args.problems
        repeats = args.repeats
    results = {}
    for name in problems:
        results[name] = bench_problem(name, args.quick, nfes, solver_names, grid_names, repeats)
    payload = {
        "benchmark": "fast_solvers",
        **metadata(
            quick=args.quick,
            sde=f"EDMSDE({SIGMA_MIN}, {SIGMA_MAX})",
            nfes=nfes,
            solvers=solver_names,
            grids=grid_names,
            repeats=repeats,
        ),
        "anchors": ANCHORS,
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=1)
    print(f"\nwrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
