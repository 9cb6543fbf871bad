"""Exact log-likelihood: `ss.log_likelihood` against the original score-SDE code's approach.

Problems `ring2d` and `aniso64` (exact mixture scores), VP SDE (beta 0.1 to 20), t_eps = 1e-5,
rtol = atol = 1e-5, float32, batches 256 and 1024, the analytic p_T as the prior (so that the error
against the analytic ln p_{t_eps}(x) is the integration error plus the probe noise).

- `scoresde`: `ss.log_likelihood` (Dopri5, per-sample adaptive steps under vmap, fully jitted),
  and next to it `lanes=L` for each `--lanes` value (default 64 128 256): the same per-sample solves
  on L lanes refilled as samples finish; timed in interleaved repeats with the vmapped call.
- `scipy`: the baseline of the original score-SDE code, written here: `scipy.integrate.solve_ivp`
  RK45 on the host over the flattened batch [x (B*D), delta (B)], with a jitted callback that
  returns the drift and the divergence estimate of the whole batch (same probes, same JVP).
- `floor`: mean NFE x the time of one jitted batched drift-plus-divergence evaluation.

Columns: time per batch (compile excluded, best of repeats), mean/max NFE per sample, RMSE per
sample against the analytic log-density, and for the stochastic rows the RMSE against a tight
reference with the same probes (scipy DOP853, rtol = atol = 1e-10): the solver's own error.

Sections (`--only main accuracy variables steps rmse modes`; default all): `accuracy` (time
against the solver's own error at several tolerances, scipy at 1e-5), `variables` (NFE by
integration variable and solver), `steps` (NFE by step-size controller and first step), `rmse`
(per-sample RMSE and cost of the divergence estimators on aniso64), `modes` (one batched
evaluation with JVP vs VJP). `--problems`, `--batches` restrict the main table; `--reference`
adds the tight DOP853 reference. `--quick`: ring2d, batch 256, main table.

The floor is reported three ways: mean NFE x one evaluation at a scalar time (as scipy calls it),
max NFE x that (a vmapped adaptive solve runs until its slowest sample is done), and mean NFE x one
evaluation with a time per sample (as inside the vmapped solves). For `lanes=L` the lane floor is
total NFE / L x one evaluation on L samples (a time per sample).

Run: `python benchmarks/likelihood.py [--quick]`. Writes `benchmarks/results/likelihood*.json`.
"""

import argparse
import functools
import math
import os
import sys

# LAPACK (EigenHutchinson's batched eigh) goes through OpenBLAS, whose threads contend with
# XLA's on a small CPU: 256 eighs of 64x64 took 3.4 s with its default threads and 0.6 s with
# one (shared 2-core CPU). Set before numpy/jax load OpenBLAS; an explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time
import warnings

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import scipy
from scipy.integrate import solve_ivp

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import interleaved, load_problem, metadata, timed, write  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._score_calls import pf_drift  # noqa: E402

warnings.simplefilter("ignore", UserWarning)  # float32 with t_eps < 1e-4: measured on purpose

SDE = ss.VPSDE()
T_EPS = 1e-5
TOL = 1e-5


def _probes(div, key, x, fn):
    return jax.vmap(lambda i, xi: div.init(jr.fold_in(key, i), fn, xi))(jnp.arange(x.shape[0]), x)


def make_eval(score, div, batched_t=False):
    """Jitted batched drift-plus-divergence: (t, x, probes) -> (F, mean estimate).

    `batched_t`: one time per sample, as inside the per-sample adaptive solves (where each
    sample is at its own time); otherwise one scalar time for the batch, as in scipy.
    """

    def one(t, xi, pi):
        fx, est = div(lambda z: pf_drift(SDE, score, t, z), xi, pi)
        return fx, jnp.mean(est)

    return jax.jit(jax.vmap(one, in_axes=(0 if batched_t else None, 0, 0)))


def scipy_baseline(evaluate, x, probes, method="RK45", rtol=TOL, atol=TOL):
    batch, dim = x.shape
    x_np = np.asarray(x, np.float64)
    dtype = x.dtype  # float32 in the main table, float64 in `schedules`

    def fun(t, y):
        fx, div = evaluate(
            jnp.asarray(t, dtype), jnp.asarray(y[: batch * dim].reshape(batch, dim), dtype), probes
        )
        return np.concatenate([np.asarray(fx, np.float64).ravel(), np.asarray(div, np.float64)])

    y0 = np.concatenate([x_np.ravel(), np.zeros(batch)])
    sol = solve_ivp(fun, (T_EPS, SDE.T), y0, method=method, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(sol.message)
    yT = sol.y[:, -1]
    return yT[: batch * dim].reshape(batch, dim), yT[batch * dim :], sol.nfev


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def ours(score, x, divergence, prior, *, sde=SDE, t_eps=T_EPS, tol=TOL, key=None, **options):
    """`ss.log_likelihood` in the benchmark's setting: t_eps, rtol = atol = `tol`, the analytic
    p_T as the prior, probes from `jr.key(1)` unless `key` is given."""
    return ss.log_likelihood(
        sde,
        score,
        x,
        key=jr.key(1) if key is None else key,
        divergence=divergence,
        t_eps=t_eps,
        rtol=tol,
        atol=tol,
        prior_log_prob=prior,
        **options,
    )


def main_table(problems, batches, repeats, quick, reference, lanes_list=(64, 128, 256)):
    rows = []
    for name in problems:
        dist = load_problem(name)
        score = ss.analytic.marginal_score(dist, SDE)
        prior = dist.marginal(SDE, SDE.T).log_prob
        p_T = jax.jit(jax.vmap(prior))
        for batch in batches:
            x = dist.sample(jr.key(0), batch)
            exact_lp = np.asarray(jax.vmap(dist.marginal(SDE, T_EPS).log_prob)(x))
            divs = [("hutchinson", ss.Hutchinson())]
            if not quick and name == "ring2d":
                divs.append(("exact", ss.ExactDivergence()))
            for div_name, div in divs:
                key = jr.key(1)
                # The vmapped solve and each lane count, timed in interleaved repeats (best of).
                variants = {"vmap": None, **{f"lanes{n}": n for n in lanes_list}}
                fns = {
                    name_v: (
                        lambda n=n, div=div, score=score, prior=prior, x=x: ours(
                            score, x, div, prior, lanes=n
                        )
                    )
                    for name_v, n in variants.items()
                }
                outs, firsts, times = interleaved(fns, repeats)
                bests = {k: min(v) for k, v in times.items()}
                first, best, res = firsts["vmap"], bests["vmap"], outs["vmap"]
                nfe = np.asarray(res.nfe)
                # One batched evaluation (the floor's unit) with the same probes.
                fn0 = lambda z: z  # noqa: E731  (Hutchinson/Exact ignore fn in init)
                probes = _probes(div, key, x, fn0)
                evaluate = make_eval(score, div)
                _, t_eval, _ = timed(evaluate, jnp.float32(0.5), x, probes, repeats=10)
                t_rand = jr.uniform(jr.key(2), (batch,), minval=T_EPS, maxval=SDE.T)
                _, t_eval_b, _ = timed(make_eval(score, div, True), t_rand, x, probes, repeats=10)
                # The scipy baseline, same probes.
                start = time.perf_counter()
                zs, delta_s, nfev = scipy_baseline(evaluate, x, probes)
                t_scipy = time.perf_counter() - start
                lp_scipy = np.asarray(p_T(jnp.asarray(zs, jnp.float32))) + delta_s
                row = dict(
                    problem=name,
                    batch=batch,
                    divergence=div_name,
                    ours_time=best,
                    ours_compile=first - best,
                    ours_nfe_mean=float(nfe.mean()),
                    ours_nfe_max=int(nfe.max()),
                    ours_rmse=rmse(res.log_prob, exact_lp),
                    scipy_time=t_scipy,
                    scipy_nfe=int(nfev),
                    scipy_rmse=rmse(lp_scipy, exact_lp),
                    eval_time=t_eval,
                    eval_time_per_sample_t=t_eval_b,
                    floor=float(nfe.mean()) * t_eval,
                    floor_per_sample_t=float(nfe.mean()) * t_eval_b,
                )
                if div.stochastic and reference:
                    zr, delta_r, _ = scipy_baseline(evaluate, x, probes, "DOP853", 1e-10, 1e-10)
                    lp_ref = np.asarray(p_T(jnp.asarray(zr, jnp.float32))) + delta_r
                    row["ours_solver_rmse"] = rmse(res.log_prob, lp_ref)
                    row["scipy_solver_rmse"] = rmse(lp_scipy, lp_ref)
                lane_rows = []
                for name_v, n in variants.items():
                    if n is None:
                        continue
                    r_v = outs[name_v]
                    nfe_v = np.asarray(r_v.nfe)
                    # Floor for lanes: total NFE / L evaluations on L lanes (time per sample).
                    x_l, p_l = x[:n], (None if probes is None else probes[:n])
                    _, t_eval_l, _ = timed(
                        make_eval(score, div, True), t_rand[:n], x_l, p_l, repeats=10
                    )
                    lane_floor = float(nfe_v.sum()) / n * t_eval_l
                    lane_rows.append(
                        dict(
                            lanes=n,
                            time=bests[name_v],
                            compile=firsts[name_v] - bests[name_v],
                            nfe_mean=float(nfe_v.mean()),
                            nfe_max=int(nfe_v.max()),
                            rmse=rmse(r_v.log_prob, exact_lp),
                            max_abs_diff_vs_vmap=float(
                                np.max(np.abs(np.asarray(r_v.log_prob) - np.asarray(res.log_prob)))
                            ),
                            speedup_vs_scipy=t_scipy / bests[name_v],
                            speedup_vs_vmap=best / bests[name_v],
                            eval_time_lanes=t_eval_l,
                            lane_floor=lane_floor,
                            ratio_to_lane_floor=bests[name_v] / lane_floor,
                            ratio_to_floor=bests[name_v] / (float(nfe_v.mean()) * t_eval),
                        )
                    )
                row["lanes"] = lane_rows
                row["speedup_vs_scipy"] = t_scipy / best
                row["ratio_to_floor"] = best / row["floor"]
                row["ratio_to_floor_max_nfe"] = best / (int(nfe.max()) * t_eval)
                row["ratio_to_floor_per_sample_t"] = best / row["floor_per_sample_t"]
                rows.append(row)
                print(
                    f"{name:8s} B={batch:5d} {div_name:10s} ours {best:7.3f}s nfe {nfe.mean():6.1f}"
                    f" (max {nfe.max():4d}) rmse {row['ours_rmse']:.2e}"
                    + (
                        f" solver {row['ours_solver_rmse']:.1e}"
                        if "ours_solver_rmse" in row
                        else ""
                    )
                    + f" | scipy {t_scipy:7.3f}s nfe {nfev:4d} rmse {row['scipy_rmse']:.2e}"
                    + (
                        f" solver {row['scipy_solver_rmse']:.1e}"
                        if "scipy_solver_rmse" in row
                        else ""
                    )
                    + f" | speedup x{row['speedup_vs_scipy']:.1f}, /floor {row['ratio_to_floor']:.2f}"
                    f" (max-NFE {row['ratio_to_floor_max_nfe']:.2f}, per-sample-t {row['ratio_to_floor_per_sample_t']:.2f}), compile {first - best:.1f}s",
                    flush=True,
                )
                for lr in lane_rows:
                    print(
                        f"{'':8s} {'':7s} lanes={lr['lanes']:<4d} {lr['time']:7.3f}s nfe "
                        f"{lr['nfe_mean']:6.1f} rmse {lr['rmse']:.2e} (|diff vs vmap| <= "
                        f"{lr['max_abs_diff_vs_vmap']:.1e}) | speedup x{lr['speedup_vs_scipy']:.1f}"
                        f" vs scipy, x{lr['speedup_vs_vmap']:.2f} vs vmap, /floor "
                        f"{lr['ratio_to_floor']:.2f}, /lane floor {lr['ratio_to_lane_floor']:.2f}"
                        f" (eval on {lr['lanes']} lanes {lr['eval_time_lanes'] * 1e3:.2f} ms),"
                        f" compile {lr['compile']:.1f}s",
                        flush=True,
                    )
    return rows


def variables_table(batch=256):
    rows = []
    for name in ("ring2d", "aniso64"):
        dist = load_problem(name)
        for sde in (ss.VPSDE(), ss.EDMSDE()):
            score = ss.analytic.marginal_score(dist, sde)
            prior = dist.marginal(sde, sde.T).log_prob
            t_eps = T_EPS if isinstance(sde, ss.VPSDE) else sde.sigma_min
            x = dist.sample(jr.key(0), batch)
            exact_lp = np.asarray(jax.vmap(dist.marginal(sde, t_eps).log_prob)(x))
            div = ss.ExactDivergence() if name == "ring2d" else ss.Hutchinson()
            for solver in (dfx.Tsit5(), dfx.Dopri5(), dfx.Dopri8(), dfx.Bosh3()):
                for variable in ("t", "log_snr", "log_sigma"):
                    options = dict(sde=sde, t_eps=t_eps, solver=solver, variable=variable)
                    _, best, res = timed(
                        lambda x, options=options, score=score, div=div, prior=prior: ours(
                            score, x, div, prior, **options
                        ),
                        x,
                        repeats=1,
                    )
                    row = dict(
                        problem=name,
                        sde=type(sde).__name__,
                        solver=type(solver).__name__,
                        variable=variable,
                        nfe_mean=float(res.nfe.mean()),
                        nfe_max=int(res.nfe.max()),
                        time=best,
                        rmse=rmse(res.log_prob, exact_lp),
                        divergence=type(div).__name__,
                    )
                    rows.append(row)
                    print(
                        f"{name:8s} {row['sde']:6s} {row['solver']:6s} {variable:9s} nfe "
                        f"{row['nfe_mean']:6.1f} (max {row['nfe_max']}) {best:.3f}s rmse "
                        f"{row['rmse']:.2e} ({row['divergence']})",
                        flush=True,
                    )
    return rows


def rmse_table(batch=256, lanes=64, rounds=5):
    """Per-sample RMSE and cost of each divergence estimator on aniso64.

    Cost: wall time / that of one plain Rademacher probe, as the median over `rounds` rounds
    that time every estimator once (interleaved, so load changes hit them alike), both for the
    vmapped solve and with `lanes` lanes.
    """
    dist = load_problem("aniso64")
    score = ss.analytic.marginal_score(dist, SDE)
    prior = dist.marginal(SDE, SDE.T).log_prob
    x = dist.sample(jr.key(0), batch)
    exact_lp = np.asarray(jax.vmap(dist.marginal(SDE, T_EPS).log_prob)(x))
    estimators = [
        ss.Hutchinson(1),
        ss.Hutchinson(8),
        ss.Hutchinson(8, "gaussian"),
        ss.Hutchinson(8, orthogonal=True),
        ss.EigenHutchinson(1, orthogonal=False),
        ss.EigenHutchinson(8, orthogonal=False),
        ss.EigenHutchinson(16, orthogonal=False),
        ss.EigenHutchinson(1),
        ss.EigenHutchinson(4),
        ss.EigenHutchinson(8),
        ss.EigenHutchinson(12),
        ss.EigenHutchinson(13),
        ss.EigenHutchinson(14),
        ss.EigenHutchinson(16),
    ]

    fns = {
        (repr(d), n): (lambda d=d, n=n: ours(score, x, d, prior, lanes=n))
        for d in estimators
        for n in (None, lanes)
    }
    results, _, times = interleaved(fns, rounds)
    base = {n: np.array(times[(repr(estimators[0]), n)]) for n in (None, lanes)}
    rows = []
    for div in estimators:
        name, res = repr(div), results[(repr(div), None)]
        ratio = {n: float(np.median(np.array(times[(name, n)]) / base[n])) for n in (None, lanes)}
        row = dict(
            estimator=name,
            time=float(np.median(times[(name, None)])),
            cost_vs_single_probe=ratio[None],
            time_lanes=float(np.median(times[(name, lanes)])),
            lanes=lanes,
            cost_vs_single_probe_lanes=ratio[lanes],
            rmse=rmse(res.log_prob, exact_lp),
            nfe_mean=float(res.nfe.mean()),
            mean_stderr=None if res.stderr is None else float(jnp.mean(res.stderr)),
        )
        rows.append(row)
        print(
            f"{name:58s} rmse {row['rmse']:6.3f} nats  time {row['time']:6.3f}s "
            f"(x{ratio[None]:.2f}; lanes={lanes}: {row['time_lanes']:6.3f}s, "
            f"x{ratio[lanes]:.2f})  nfe {row['nfe_mean']:.1f}"
            + (f"  mean stderr {row['mean_stderr']:.3f}" if row["mean_stderr"] else ""),
            flush=True,
        )
    return rows


def accuracy_table(batch=256, tols=(1e-5, 3e-6, 1e-6), lanes=(None, 256), rounds=5):
    """Work against accuracy on aniso64: the solver's own error (RMSE per sample against a
    tight scipy DOP853 reference, rtol = atol = 1e-10, same probes) and the time, for scipy RK45
    at the benchmark tolerance and for `ss.log_likelihood` at several tolerances. A per-sample
    step-size control at a given tolerance is looser than scipy's one step for the whole
    flattened batch (which the hardest sample drives), so equal accuracy needs a tighter
    tolerance here. Times: median over `rounds` interleaved rounds."""
    dist = load_problem("aniso64")
    score = ss.analytic.marginal_score(dist, SDE)
    prior = dist.marginal(SDE, SDE.T).log_prob
    p_T = jax.jit(jax.vmap(prior))
    x = dist.sample(jr.key(0), batch)
    div, key = ss.Hutchinson(), jr.key(1)
    probes = _probes(div, key, x, lambda z: z)
    evaluate = make_eval(score, div)
    jax.block_until_ready(evaluate(jnp.float32(0.5), x, probes))
    zr, delta_r, _ = scipy_baseline(evaluate, x, probes, "DOP853", 1e-10, 1e-10)
    ref = np.asarray(p_T(jnp.asarray(zr, jnp.float32))) + delta_r

    def scipy_run():
        zs, delta_s, nfev = scipy_baseline(evaluate, x, probes)
        return np.asarray(p_T(jnp.asarray(zs, jnp.float32))) + delta_s, nfev

    runs = {("scipy RK45", TOL, None): scipy_run}
    for tol in tols:
        for n in lanes:
            runs[("scoresde", tol, n)] = lambda tol=tol, n=n: ours(
                score, x, div, prior, tol=tol, key=key, lanes=n
            )
    outs, _, times = interleaved(runs, rounds)
    t_scipy = float(np.median(times[("scipy RK45", TOL, None)]))
    rows = []
    for k, out in outs.items():
        who, tol, n = k
        if who == "scipy RK45":
            lp, nfe_mean, nfe_max = out[0], float(out[1]), int(out[1])
        else:
            lp, nfe_mean, nfe_max = out.log_prob, float(out.nfe.mean()), int(out.nfe.max())
        t = float(np.median(times[k]))
        row = dict(
            who=who,
            tol=tol,
            lanes=n,
            time=t,
            speedup_vs_scipy=t_scipy / t,
            nfe_mean=nfe_mean,
            nfe_max=nfe_max,
            solver_rmse=rmse(lp, ref),
            solver_max_error=float(np.max(np.abs(np.asarray(lp, np.float64) - ref))),
        )
        rows.append(row)
        print(
            f"{who:10s} tol {tol:.0e} lanes {str(n):4s} time {t:.3f}s (x{row['speedup_vs_scipy']:.2f}"
            f" vs scipy) nfe {nfe_mean:6.1f} (max {nfe_max}) solver rmse {row['solver_rmse']:.2e}"
            f" (max {row['solver_max_error']:.2e})",
            flush=True,
        )
    return rows


def steps_table(batch=128):
    """Mean NFE of the default solve (Dopri5 in t, VP) under other step-size controllers and
    first steps: PI/PID coefficients, safety factors, dt0 (default: a 64th of the interval)."""
    from scoresde._likelihood.flow import _augmented_rms

    variants = [
        ("I (default)", {}, None),
        ("PI 0.2/0.6", dict(pcoeff=0.2, icoeff=0.6), None),
        ("PI 0.4/0.3", dict(pcoeff=0.4, icoeff=0.3), None),
        ("PID 0.2/0.6/0.1", dict(pcoeff=0.2, icoeff=0.6, dcoeff=0.1), None),
        ("safety 0.8", dict(safety=0.8), None),
        ("safety 0.95", dict(safety=0.95), None),
        ("dt0 1/256", {}, 1 / 256),
        ("dt0 1/16", {}, 1 / 16),
        ("dt0 1/4", {}, 1 / 4),
    ]
    rows = []
    for name in ("ring2d", "aniso64"):
        dist = load_problem(name)
        score = ss.analytic.marginal_score(dist, SDE)
        prior = dist.marginal(SDE, SDE.T).log_prob
        x = dist.sample(jr.key(0), batch)
        exact_lp = np.asarray(jax.vmap(dist.marginal(SDE, T_EPS).log_prob)(x))
        div = ss.ExactDivergence() if name == "ring2d" else ss.Hutchinson()
        for label, coeffs, dt0 in variants:
            controller = dfx.PIDController(rtol=TOL, atol=TOL, norm=_augmented_rms, **coeffs)
            res = ours(score, x, div, prior, stepsize_controller=controller, dt0=dt0)
            row = dict(
                problem=name,
                variant=label,
                nfe_mean=float(res.nfe.mean()),
                nfe_max=int(res.nfe.max()),
                rmse=rmse(res.log_prob, exact_lp),
                divergence=type(div).__name__,
            )
            rows.append(row)
            print(
                f"{name:8s} {label:16s} nfe {row['nfe_mean']:6.1f} (max {row['nfe_max']}) rmse "
                f"{row['rmse']:.2e} ({row['divergence']})",
                flush=True,
            )
    return rows


def modes_table(batch=1024, repeats=15):
    """One batched evaluation: drift only, + JVP, + VJP, with 1 and 8 probes (interleaved)."""
    rows = []
    for name in ("aniso64", "ring2d"):
        dist = load_problem(name)
        score = ss.analytic.marginal_score(dist, SDE)
        x = dist.sample(jr.key(0), batch)
        t = jnp.float32(0.5)
        fn = lambda z, score=score, t=t: pf_drift(SDE, score, t, z)  # noqa: E731

        def jvp(z, w, fn=fn):
            fx, lin = jax.linearize(fn, z)
            return fx, jnp.sum(jax.vmap(lin)(w) * w)

        def vjp(z, w, fn=fn):
            fx, pull = jax.vjp(fn, z)
            return fx, jnp.sum(jax.vmap(pull)(w)[0] * w)

        def jvp1(z, w, fn=fn):
            fx, jv = jax.jvp(fn, (z,), (w[0],))
            return fx, jnp.sum(jv * w[0])

        v1 = jr.rademacher(jr.key(1), (batch, 1, x.shape[1]), x.dtype)
        v8 = jr.rademacher(jr.key(1), (batch, 8, x.shape[1]), x.dtype)
        cases = {
            "drift only": (jax.jit(jax.vmap(fn)), (x,)),
            "drift + JVP": (jax.jit(jax.vmap(jvp1)), (x, v1)),
            "drift + VJP": (jax.jit(jax.vmap(vjp)), (x, v1)),
            "drift + 8 JVPs (linearize)": (jax.jit(jax.vmap(jvp)), (x, v8)),
            "drift + 8 VJPs": (jax.jit(jax.vmap(vjp)), (x, v8)),
        }
        for f, args in cases.values():
            jax.block_until_ready(f(*args))
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(repeats):  # interleaved, so that load changes hit every case alike
            for label, (f, args) in cases.items():
                start = time.perf_counter()
                jax.block_until_ready(f(*args))
                best[label] = min(best[label], time.perf_counter() - start)
        for label, value in best.items():
            rows.append(
                dict(
                    problem=name, case=label, time=value, ratio_to_drift=value / best["drift only"]
                )
            )
            print(
                f"{name:8s} {label:28s} {value * 1e3:8.2f} ms  (x{value / best['drift only']:.2f})",
                flush=True,
            )
    return rows


def schedules_table(problems, batch, tols, lanes, rounds):
    """Schedules side by side (`ss.PerSample()`, `ss.Lanes(L)`, `ss.SharedSteps()`) and scipy
    RK45 in float64: per-sample SOLVER error (`log_prob` minus a per-sample Dopri8 solve at
    rtol = atol = 1e-10 with the same probes, one Rademacher probe from `jr.key(1)`), mean/max
    NFE per sample, and the wall time (median over `rounds` interleaved rounds, compile excluded),
    at each rtol = atol in `tols` (scipy at 1e-5), VP, t_eps = 1e-5, data from `jr.key(0)`."""
    rows = []
    with jax.enable_x64(True):
        for name in problems:
            dist = load_problem(name, jnp.float64)
            score = ss.analytic.marginal_score(dist, SDE)
            prior = dist.marginal(SDE, jnp.asarray(SDE.T, jnp.float64)).log_prob
            p_T = jax.jit(jax.vmap(prior))
            x = dist.sample(jr.key(0), batch)
            div, key = ss.Hutchinson(), jr.key(1)
            ref = ours(
                score, x, div, prior, solver=dfx.Dopri8(), tol=1e-10, key=key, max_steps=100_000
            ).log_prob
            probes = _probes(div, key, x, lambda z: z)
            evaluate = make_eval(score, div)

            def scipy_run(evaluate=evaluate, x=x, probes=probes, p_T=p_T):
                zs, delta_s, nfev = scipy_baseline(evaluate, x, probes)
                return np.asarray(p_T(jnp.asarray(zs))) + delta_s, nfev

            runs = {("scipy RK45", TOL): scipy_run}
            schedules = {"per-sample": ss.PerSample(), f"lanes{lanes}": ss.Lanes(lanes)}
            schedules["shared"] = ss.SharedSteps()
            for tol in tols:
                for label, schedule in schedules.items():
                    runs[(label, tol)] = functools.partial(
                        ours, score, x, div, prior, tol=tol, key=key, schedule=schedule
                    )
            outs, firsts, times = interleaved(runs, rounds)
            t_scipy = float(np.median(times[("scipy RK45", TOL)]))
            for (who, tol), out in outs.items():
                if who == "scipy RK45":
                    lp, nfe_mean, nfe_max = out[0], float(out[1]), int(out[1])
                else:
                    lp, nfe_mean, nfe_max = out.log_prob, float(out.nfe.mean()), int(out.nfe.max())
                err = np.asarray(lp, np.float64) - np.asarray(ref, np.float64)
                t = float(np.median(times[(who, tol)]))
                row = dict(
                    problem=name,
                    batch=batch,
                    schedule=who,
                    tol=tol,
                    time=t,
                    compile=firsts[(who, tol)] - t,
                    speedup_vs_scipy=t_scipy / t,
                    nfe_mean=nfe_mean,
                    nfe_max=nfe_max,
                    solver_rms_nats=float(np.sqrt(np.mean(err**2))),
                    solver_max_nats=float(np.max(np.abs(err))),
                )
                rows.append(row)
                print(
                    f"{name:8s} B={batch:4d} {who:11s} tol {tol:.0e} {t:7.3f}s (x{t_scipy / t:5.2f}"
                    f" vs scipy) nfe {nfe_mean:6.1f} (max {nfe_max:4d}) solver err RMS "
                    f"{row['solver_rms_nats']:.2e} max {row['solver_max_nats']:.2e} nats",
                    flush=True,
                )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--problems", nargs="*", default=None, help="ring2d aniso64")
    parser.add_argument("--batches", nargs="*", type=int, default=None, help="256 1024")
    parser.add_argument(
        "--reference", action="store_true", help="a tight DOP853 reference, same probes (slow)"
    )
    parser.add_argument(
        "--lanes", nargs="*", type=int, default=[64, 128, 256], help="lane counts to time"
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="sections to run: main accuracy variables steps rmse modes schedules",
    )
    parser.add_argument(
        "--schedule-batch", type=int, default=None, help="batch of `schedules` (256; quick 64)"
    )
    args = parser.parse_args()
    sections = args.only or (
        ["main", "schedules"]
        if args.quick
        else ["main", "schedules", "accuracy", "modes", "rmse", "variables", "steps"]
    )
    problems = args.problems or (["ring2d"] if args.quick else ["ring2d", "aniso64"])
    batches = args.batches or ([256] if args.quick else [256, 1024])
    out = metadata(
        sde="VPSDE(0.1, 20)",
        t_eps=T_EPS,
        rtol=TOL,
        atol=TOL,
        dtype="float32",
        quick=args.quick,
        sections=sections,
        scipy=scipy.__version__,
    )
    if "main" in sections:
        print("== main: scoresde vs scipy RK45 baseline (VP, t_eps 1e-5, tol 1e-5, float32)")
        out["main"] = main_table(
            problems, batches, 1 if args.quick else 7, args.quick, args.reference, args.lanes
        )
    if "schedules" in sections:
        sb = args.schedule_batch or (64 if args.quick else 256)
        print(f"== schedules: per-sample, lanes, shared steps, scipy (float64, batch {sb})")
        out["schedules"] = schedules_table(
            ["ring2d", "aniso64", "mix64"],
            sb,
            (1e-5,) if args.quick else (1e-4, 1e-5, 1e-6),
            min(64, sb) if args.quick else 64,
            1 if args.quick else 3,
        )
    if "modes" in sections:
        print("== one batched evaluation, batch 1024 (best of interleaved repeats)")
        out["modes"] = modes_table()
    if "rmse" in sections:
        print("== per-sample RMSE of divergence estimators, aniso64, batch 256")
        out["rmse"] = rmse_table()
    if "accuracy" in sections:
        print("== time against the solver's own error, aniso64, batch 256 (same probes)")
        out["accuracy"] = accuracy_table()
    if "variables" in sections:
        print("== NFE by integration variable and solver, batch 256, tol 1e-5")
        out["variables"] = variables_table()
    if "steps" in sections:
        print("== NFE by step-size controller and first step (Dopri5 in t), batch 128, tol 1e-5")
        out["steps"] = steps_table()
    suffix = "_quick" if args.quick else ("" if args.only is None else "_" + "_".join(sections))
    if args.schedule_batch is not None:
        suffix += f"_b{args.schedule_batch}"
    write("likelihood" + suffix, out)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f}s ({math.floor(time.perf_counter() - t0)} s)")
