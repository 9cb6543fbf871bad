"""The likelihood ODE at a budget of about 40 NFE (issue 27, item 4): a tuned fixed grid, and the
tuned grid plus an adaptive re-solve of the points its own error estimate flags.

Target (the likelihood issue's): <= 1e-2 nats RMS solver error at <= 40 mean NFE on `mix64` (a
2-component 64-D mixture, `_common.mix64`). Set-up: VP, t_eps 1e-5, float64, exact score, one
Rademacher probe; the grid tuned by `ss.tune_likelihood_grid` on 256 pilot points (key 1, its
last quarter held out); every figure on 512 TEST points drawn after them, against a per-sample
Dopri8 solve at rtol = atol = 1e-10 with the same probes.

For each fixed-step solver and step count (about 37 NFE each):

- `fixed`: the tuned grid alone;
- `flagged q`: the tuned grid, then the default adaptive solve (Dopri5, rtol = atol = 1e-5) of
  the points whose summed embedded error estimate of delta (the solver's own, |err| summed over
  the steps) exceeds its (1 - q) quantile on the PILOT; mean NFE = fixed NFE + flagged fraction x
  the adaptive solve's mean NFE on the flagged points.

Also the adaptive default alone. RMS errors with 95 % bootstrap intervals over the test points.

    python benchmarks/likelihood_budget.py      # about 3 minutes on 2 cores

Writes `benchmarks/results/likelihood_budget.json`.
"""

import argparse
import math
import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import metadata, mix64, write  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._likelihood.log_likelihood import DIVERGENCE, T_EPS, VARIABLE  # noqa: E402
from scoresde._likelihood.vector_fields import AugmentedFlow  # noqa: E402
from scoresde._metrics.bootstrap import bootstrap_bounds  # noqa: E402
from scoresde._tuning.likelihood_grid import likelihood_probes  # noqa: E402

SDE = ss.VPSDE()
CONFIGS = (("Tsit5", dfx.Tsit5(), 6), ("Bosh3", dfx.Bosh3(), 12))
FRACTIONS = (0.02, 0.05, 0.1, 0.2)
TARGET = {"rms": 1e-2, "nfe": 40}


@eqx.filter_jit
def fixed_with_estimate(score, solver, times, x, probes):
    """`(log_prob, summed |embedded error estimate of delta|)` of each row on `times`."""
    u = VARIABLE.u_of_t(SDE, times[::-1])

    def one(xi, pi):
        term = dfx.ODETerm(AugmentedFlow(SDE, score, DIVERGENCE, VARIABLE, pi))
        y = (xi, jnp.zeros((1,), xi.dtype))
        state = solver.init(term, u[0], u[1], y, None)

        def body(carry, interval):
            y, state, estimate = carry
            y, y_error, _, state, _ = solver.step(term, interval[0], interval[1], y, None,
                                                  state, False)  # fmt: skip
            return (y, state, estimate + jnp.abs(y_error[1][0])), None

        (y, _, estimate), _ = jax.lax.scan(body, (y, state, 0.0), (u[:-1], u[1:]))
        return SDE.prior_log_prob(y[0]) + y[1][0], estimate

    return jax.vmap(one)(x, probes)


def rms_with_interval(errors, seed=0):
    errors = np.asarray(errors)
    rms = lambda rows: math.sqrt(np.mean(errors[rows] ** 2))
    low, high = bootstrap_bounds(rms, errors.shape[0], seed=seed, num_resamples=2000)
    return {"rms": rms(np.arange(errors.shape[0])), "interval": [low, high]}


def reference_log_prob(score, x, key):
    """The per-sample Dopri8 solve at rtol = atol = 1e-10 (probes from `key`), as an array."""
    ref = ss.log_likelihood(SDE, score, x, key=key, solver=dfx.Dopri8(), rtol=1e-10, atol=1e-10,
                            max_steps=100_000)  # fmt: skip
    return np.asarray(ref.log_prob)


def solve_set(score, x, key):
    """The reference and the adaptive default on `x` (probes from `key`)."""
    default = ss.log_likelihood(SDE, score, x, key=key)
    return reference_log_prob(score, x, key), np.asarray(default.log_prob), np.asarray(default.nfe)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pilot", type=int, default=256)
    p.add_argument("--test", type=int, default=512)
    args = p.parse_args(argv)
    started = time.perf_counter()
    mix = mix64(jnp.float64)
    score = ss.analytic.marginal_score(mix, SDE)
    points = mix.sample(jr.key(1), args.pilot + args.test)
    pilot, test = points[: args.pilot], points[args.pilot :]
    key_pilot, key_test = jr.key(0), jr.key(1)
    ref_p, _, _ = solve_set(score, pilot, key_pilot)
    ref_t, default_t, default_nfe = solve_set(score, test, key_test)
    probes_p = likelihood_probes(SDE, score, DIVERGENCE, pilot, key_pilot, T_EPS)
    probes_t = likelihood_probes(SDE, score, DIVERGENCE, test, key_test, T_EPS)
    default = {**rms_with_interval(default_t - ref_t), "nfe": float(default_nfe.mean())}
    print(f"adaptive default (Dopri5, 1e-5): RMS {default['rms']:.2e} "
          f"[{default['interval'][0]:.2e}, {default['interval'][1]:.2e}] at {default['nfe']:.1f} "
          f"mean NFE ({args.test} test points)")  # fmt: skip
    rows = []
    for name, solver, steps in CONFIGS:
        grid = ss.tune_likelihood_grid(SDE, score, pilot, steps=steps, solver=solver,
                                       key=key_pilot)  # fmt: skip
        nfe = grid.info["nfe"]
        times = jnp.asarray(grid.times)
        lp_p, est_p = fixed_with_estimate(score, solver, times, pilot, probes_p)
        lp_t, est_t = fixed_with_estimate(score, solver, times, test, probes_t)
        err_t = np.asarray(lp_t) - ref_t
        fixed = {**rms_with_interval(err_t), "nfe": nfe,
                 "pilot_rms": math.sqrt(np.mean((np.asarray(lp_p) - ref_p) ** 2)),
                 "max_abs": float(np.abs(err_t).max())}  # fmt: skip
        print(f"{name} {steps} steps, tuned grid ({grid.info['chosen']}): RMS {fixed['rms']:.2e} "
              f"[{fixed['interval'][0]:.2e}, {fixed['interval'][1]:.2e}] at {nfe} NFE (pilot "
              f"{fixed['pilot_rms']:.2e}, largest {fixed['max_abs']:.2f} nats)")  # fmt: skip
        flagged = []
        est_p, est_t = np.asarray(est_p), np.asarray(est_t)
        for q in FRACTIONS:
            threshold = float(np.quantile(est_p, 1 - q))
            flag = est_t > threshold
            errors = np.where(flag, default_t - ref_t, err_t)
            mean_nfe = nfe + float(np.sum(default_nfe[flag])) / flag.shape[0]
            entry = {"q": q, "threshold": threshold, "flagged": float(flag.mean()),
                     **rms_with_interval(errors), "nfe": mean_nfe,
                     "rms_unflagged": math.sqrt(np.mean(err_t[~flag] ** 2))}  # fmt: skip
            entry["meets_target"] = entry["rms"] <= TARGET["rms"] and mean_nfe <= TARGET["nfe"]
            flagged.append(entry)
            print(f"   flagged above the pilot's {1 - q:.2f} quantile: {entry['flagged']:.3f} of "
                  f"the test points re-solved, RMS {entry['rms']:.2e} [{entry['interval'][0]:.2e}"
                  f", {entry['interval'][1]:.2e}] at {mean_nfe:.1f} mean NFE (unflagged points "
                  f"alone {entry['rms_unflagged']:.2e})")  # fmt: skip
        rows.append({"solver": name, "steps": steps, "grid_chosen": grid.info["chosen"],
                     "fixed": fixed, "flagged": flagged})  # fmt: skip
    payload = dict(
        benchmark="likelihood_budget",
        **metadata(pilot=args.pilot, test=args.test, t_eps=T_EPS, target=TARGET),
        default=default,
        rows=rows,
        seconds=time.perf_counter() - started,
    )
    write("likelihood_budget", payload)


if __name__ == "__main__":
    main()
