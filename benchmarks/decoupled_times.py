"""A lever measured for issue 27: decoupled network times on top of a tuned grid (LD3's second
set of times), at a budget where the tuned grid alone stalls.

The tuned grid moves only the times t_i where the solver steps. Decoupling also moves the time at
which the network is asked: at grid time t_i the solver is given the score

    s~(t_i, x) = sigma(t'_i) / sigma(t_i) * s(t'_i, x),   lambda(t'_i) = lambda(t_i) + d_i,

(the eps-prediction of time t'_i, read as the one of t_i), with the offsets d_i learned jointly
with the grid's logits by the same L-BFGS and objective as `ss.tune_grid` (end-point error
against a tight solve from the same latents), starting from the tuned grid and d = 0. It doubles
the tuner's parameters (N + N for N steps).

For each (problem, solver, steps): `ss.tune_grid` from a pilot of 256 latents (key 0), then the
joint search on the same 192 fitting latents; the RMS end-point error on the 64 held-out pilot
latents and on the TEST latents of `benchmarks/tuned_grids.py` (key 1, their tight reference),
for every named grid, the tuned grid and the decoupled one, with a 95 % bootstrap interval of
each over the test latents (1000 resamples, seed 0) and of the ratio decoupled / tuned (the
same resampled latents for both).

    python benchmarks/decoupled_times.py                        # ring2d, aniso64: 5 steps, 4 min
    python benchmarks/decoupled_times.py --problems digits-v --solvers 2m   # + 6 min (reference)

Writes `benchmarks/results/decoupled_times.json` (`--tag` to name it otherwise).
"""

import argparse
import math
import pathlib
import sys
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
import default_grids  # noqa: E402
import tuned_grids  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._keys import draw_latents  # noqa: E402
from scoresde._metrics.bootstrap import bootstrap_bounds  # noqa: E402
from scoresde._tuning.grid_solve import (  # noqa: E402
    logits_from_times,
    mean_squared_error,
    solve_on_times,
    times_from_logits,
)
from scoresde._tuning.tune_grid import NAMED_GRIDS, minimise_logits  # noqa: E402

SOLVERS = {"unipc": ss.UniPC(), "2m": ss.DPMSolverPP2M()}
PILOT, FIT = 256, 192
SIZES = {"ring2d": 1024, "aniso64": 512, "digits-v": 256}


class DecoupledScore(eqx.Module):
    """`score` asked at t' instead of t: $\\tilde s(t, x) = \\sigma(t')/\\sigma(t)\\, s(t', x)$
    with $\\lambda(t') = \\lambda(t) + d(t)$, $d$ piecewise linear in t through `offsets` at
    `times` (exact at the grid's nodes, where the multistep solvers ask)."""

    score: object
    sde: object
    times: jax.Array
    offsets: jax.Array

    def __call__(self, t, x):
        offset = jnp.interp(t, self.times[::-1], self.offsets[::-1])
        t_net = self.sde.log_snr_inverse(self.sde.log_snr(t) + offset)
        _, sigma = self.sde.marginal(t)
        _, sigma_net = self.sde.marginal(t_net)
        return (sigma_net / sigma) * self.score(t_net, x)


def solve(sde, score, solver, theta, steps, t_eps, x_T):
    """The solve of parameters `theta` = (grid logits, offsets at the first `steps` nodes)."""
    times = times_from_logits(sde, theta[:steps], t_eps)
    offsets = jnp.concatenate([theta[steps:], jnp.zeros(1, theta.dtype)])  # t_eps: not asked
    return solve_on_times(sde, DecoupledScore(score, sde, times, offsets), solver, times, x_T)


def per_sample_sq(x, ref) -> np.ndarray:
    d = np.asarray(x, np.float64).reshape(len(ref), -1) - np.asarray(ref).reshape(len(ref), -1)
    return np.mean(d**2, axis=1)


def rms_card(sq) -> dict:
    low, high = bootstrap_bounds(lambda rows: math.sqrt(sq[rows].mean()), len(sq), seed=0,
                                 num_resamples=1000)  # fmt: skip
    return dict(rms=math.sqrt(sq.mean()), interval=[low, high])


def run(name, sname, steps, max_iterations) -> dict:
    solver = SOLVERS[sname]
    sde, score, x_test, ref_test, info = tuned_grids.problem(name, SIZES[name], jr.key(1), 400)
    t_eps = default_grids.t_eps(sde)
    shape = (PILOT, *x_test.shape[1:])
    started = time.perf_counter()
    grid = ss.tune_grid(sde, score, solver=solver, steps=steps, key=jr.PRNGKey(0), shape=shape,
                        t_eps=t_eps, max_iterations=max_iterations)  # fmt: skip
    tune_seconds = time.perf_counter() - started
    # the pilot and its reference exactly as tune_grid drew them
    x_T = draw_latents(sde=sde, key=jr.PRNGKey(0), shape=shape, dtype=jnp.float32)
    ref = ss.sample_ode(sde, score, key=jr.PRNGKey(0), shape=shape, solver=dfx.Tsit5(),
                        t_eps=t_eps, x_T=x_T, rtol=1e-5, atol=1e-5, max_steps=100_000).x  # fmt: skip
    fit, check = (x_T[:FIT], ref[:FIT]), (x_T[FIT:], ref[FIT:])

    def error(theta, batch):
        return mean_squared_error(
            solve(sde, score, solver, theta, steps, t_eps, batch[0]), batch[1]
        )

    tuned_logits = logits_from_times(sde, jnp.asarray(grid.times, jnp.float32))
    theta0 = jnp.concatenate([tuned_logits.astype(jnp.float32), jnp.zeros(steps, jnp.float32)])
    started = time.perf_counter()
    theta, iterations = minimise_logits(lambda th, b: jnp.log(error(th, b)), theta0, fit,
                                        max_iterations, False)  # fmt: skip
    joint_seconds = time.perf_counter() - started
    test = jax.jit(lambda th: solve(sde, score, solver, th, steps, t_eps, x_test))
    sq = {}
    for gname, g in NAMED_GRIDS.items():
        logits = logits_from_times(sde, g.times_for(sde, steps, t_eps)).astype(jnp.float32)
        sq[gname] = per_sample_sq(test(jnp.concatenate([logits, jnp.zeros(steps)])), ref_test)
    sq["tuned"] = per_sample_sq(test(theta0), ref_test)
    sq["decoupled"] = per_sample_sq(test(theta), ref_test)
    best_named = min(NAMED_GRIDS, key=lambda g: sq[g].mean())
    gain = bootstrap_bounds(lambda r: math.sqrt(sq["decoupled"][r].mean() / sq["tuned"][r].mean()),
                            len(ref_test), seed=0, num_resamples=1000)  # fmt: skip
    row = dict(
        problem=name, solver=type(solver).__name__, steps=steps, tuned_chosen=grid.info["chosen"],
        held_out={"tuned": math.sqrt(float(error(theta0, check))),
                  "decoupled": math.sqrt(float(error(theta, check)))},
        test={k: rms_card(v) for k, v in sq.items()}, best_named=best_named,
        decoupled_over_tuned=math.sqrt(sq["decoupled"].mean() / sq["tuned"].mean()),
        decoupled_over_tuned_interval=list(gain),
        decoupled_over_best_named=math.sqrt(sq["decoupled"].mean() / sq[best_named].mean()),
        tuned_over_best_named=math.sqrt(sq["tuned"].mean() / sq[best_named].mean()),
        offsets=[float(v) for v in np.asarray(theta[steps:])], iterations=iterations,
        tune_seconds=tune_seconds, joint_seconds=joint_seconds, reference=info,
    )  # fmt: skip
    t = row["test"]
    print(f"{name:9s} {row['solver']:14s} {steps:2d} steps: test RMS best named "
          f"({best_named}) {t[best_named]['rms']:.4g}, tuned {t['tuned']['rms']:.4g} "
          f"{_iv(t['tuned']['interval'])}, decoupled {t['decoupled']['rms']:.4g} "
          f"{_iv(t['decoupled']['interval'])}; decoupled/tuned {row['decoupled_over_tuned']:.2f} "
          f"{_iv(gain)}, decoupled/best named {row['decoupled_over_best_named']:.2f}; held out "
          f"{row['held_out']['tuned']:.4g} -> {row['held_out']['decoupled']:.4g}; "
          f"{iterations} it, {tune_seconds:.0f} + {joint_seconds:.0f} s", flush=True)  # fmt: skip
    return row


def _iv(bounds) -> str:
    return f"[{bounds[0]:.4g}, {bounds[1]:.4g}]"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="+", default=["ring2d", "aniso64"], choices=tuple(SIZES))
    p.add_argument("--solvers", nargs="+", default=["unipc", "2m"], choices=tuple(SOLVERS))
    p.add_argument("--steps", nargs="+", type=int, default=[5])
    p.add_argument("--max-iterations", type=int, default=200)
    p.add_argument("--tag", default="decoupled_times")
    args = p.parse_args(argv)
    rows = [run(name, s, n, args.max_iterations) for name in args.problems
            for s in args.solvers for n in args.steps]  # fmt: skip
    _common.write(args.tag, dict(benchmark="decoupled_times", rows=rows,
                                 **_common.metadata(**vars(args))))  # fmt: skip


if __name__ == "__main__":
    main()
