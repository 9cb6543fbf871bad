"""Does tuning help Euler-Maruyama? `ss.tune_sde_grid` (sliced W2 to a reference sample, common
random numbers; pilot 512, half as many held out) against the named grids, at 10, 20 and 50 steps.

Per problem and step count it prints the tuner's report (pilot / held-out sliced W2 of every
grid and the grid it chose), then the sliced W2 (128 directions) of 2,048 `sample_sde` samples
(Euler-Maruyama, denoised, key 9) on each named grid and on the returned grid to 2,048 exact
data samples, beside the floor (two exact sets).

    python benchmarks/tuned_sde_grids.py ring2d > benchmarks/results/tuned_sde_grids.txt
    python benchmarks/tuned_sde_grids.py aniso64 >> benchmarks/results/tuned_sde_grids.txt
"""

import sys
import time

import jax.random as jr

import scoresde as ss

sys.path.insert(0, "benchmarks")
import _common

from scoresde._tuning.tune_grid import NAMED_GRIDS

prob = sys.argv[1]
mix = _common.load_problem(prob)
sde = ss.VPSDE()
score = ss.analytic.marginal_score(mix, sde)
d = mix.means.shape[1]
data = mix.sample(jr.PRNGKey(42), 2048)
for steps in [10, 20, 50]:
    t = time.perf_counter()
    g = ss.tune_sde_grid(sde, score, steps=steps, key=jr.PRNGKey(0), shape=(512, d))
    i = g.info
    print(
        prob,
        steps,
        i["chosen"],
        i["iterations"],
        {k: (round(v["pilot"], 4), round(v["held_out"], 4)) for k, v in i["rms"].items()},
        f"{time.perf_counter() - t:.0f}s",
        flush=True,
    )
    # independent test: sample_sde with each grid, SW to exact data samples
    res = {}
    for name, grid in list(NAMED_GRIDS.items()) + [("tuned", g)]:
        kw = dict(grid=grid) if name == "tuned" else dict(grid=grid, steps=steps)
        x = ss.sample_sde(sde, score, key=jr.PRNGKey(9), shape=(2048, d), **kw).x
        res[name] = ss.sliced_wasserstein(x, data, key=jr.PRNGKey(3))
    floor = ss.sliced_wasserstein(mix.sample(jr.PRNGKey(43), 2048), data, key=jr.PRNGKey(3))
    print(
        "   test SW to data (2048):",
        {k: round(v, 4) for k, v in res.items()},
        "floor",
        round(floor, 4),
        flush=True,
    )
