"""The adaptive reverse-SDE controller ("Gotta Go Fast") against fixed-step Euler-Maruyama and
diffrax's PIDController, in score evaluations per sample at equal sliced W2.

Problems (exact scores, VP SDE, t_eps = 1e-3, all samplers end with the Tweedie step):

- `aniso64`: the shared 8-component anisotropic mixture in 64-D (`scoresde/_bench/data/aniso64.npz`);
- `rot625`: N(0, Q diag(s^2) Q^T) in 64-D, s log-spaced in [0.02, 0.5] (condition number 625),
  Q a random orthogonal matrix (numpy seed 0).

Methods: `ss.sample_sde_adaptive` at several rtol (atol = 0.156 rtol, the paper's ratio
0.0078 / 0.05), with its steps in t (`adaptive (GGF)`) and in log-SNR (`adaptive log-SNR`,
`log_snr_steps=True`); `ss.sample_sde` with Euler-Maruyama on a uniform grid and on a log-SNR grid at
several step counts; `ss.sample_sde` with `diffrax.PIDController(rtol, atol=rtol)` on Heun and
ShARK as they stand (their own error estimates, a VirtualBrownianTree).

Metrics: `nfe` (mean evaluations per sample, rejected steps and the Tweedie call included);
`sw` (sliced W2, `ss.sliced_wasserstein`, 128 directions, to as many exact samples); `floor` (mean and std of the sw of
four other exact sets against the first: the sampling floor at this n); `excess` =
sqrt(max(sw^2 - floor^2, 0)); on aniso64 also `mode_err` (largest mode-weight error).
Equal SW2: `band` = floor mean + 2 std (indistinguishable from exact at this n). For each method
family, `summary[family].nfe_to_band` is the least nfe whose sw is within the band (for the
fixed-step EM curves, log-log interpolated between the last point above and the first point
within the band); `gain_vs_em` = uniform-grid EM's nfe_to_band / the family's. Each row also gets
`em_nfe_at_equal_sw`: the nfe at which uniform EM's curve reaches that row's sw (log-log
interpolation; meaningful only well above the band) and `gain` = that / the row's nfe.
Where the adaptive controller spends evaluations: its `rejected_fraction`, and
`adaptive_evaluations_down_to_t`: the evaluations from T down to t = 0.1, 0.01 and 1e-3 (runs
stopped there, same key, the paper's rtol = 0.05, Tweedie call excluded), beside
`em_uniform_share_of_steps_down_to_t`.
`seconds`: wall time of one call, compile included (of a second, compiled call with --warm).

Run: `python benchmarks/adaptive_sde.py [--quick] [--n N]`. Writes
`benchmarks/results/adaptive_sde.json` (`adaptive_sde_quick.json` with --quick).
"""

import argparse
import math

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import load_problem, metadata, timed, write

import scoresde as ss
from scoresde._sampling.adaptive_sde import sample_sde_adaptive_with_stats

DIM = 64
ATOL_PER_RTOL = 0.0078 / 0.05  # the paper's pair (rtol 0.05, atol 0.0078)


def rotated_gaussian(kappa_std=(0.02, 0.5), dim=DIM, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    std = np.geomspace(*kappa_std, dim)
    cov = (q * std**2) @ q.T
    return ss.analytic.Gaussian(jnp.zeros(dim), jnp.asarray(0.5 * (cov + cov.T), jnp.float32))


def interp_nfe(curve, target):
    """The nfe at which the (nfe, sw) curve (sorted by nfe) first reaches `target`, log-log
    interpolated; None if it never does; 'below' if its first point already does."""
    if curve[0][1] <= target:
        return "below"
    for (n0, s0), (n1, s1) in zip(curve, curve[1:], strict=False):
        if s1 <= target <= s0:
            if s0 == s1:
                return n1
            w = (math.log(s0) - math.log(target)) / (math.log(s0) - math.log(s1))
            return math.exp(math.log(n0) + w * (math.log(n1) - math.log(n0)))
    return None


def nfe_to_band(rows, band, interpolate):
    """Least nfe of `rows` (one family) with sw <= band; interpolated for a fixed-step curve."""
    curve = sorted((r["nfe"], r["sw"]) for r in rows)
    inside = [c for c in curve if c[1] <= band]
    if not inside:
        return None
    if not interpolate:
        return inside[0][0]
    nfe = interp_nfe(curve, band)
    return inside[0][0] if nfe == "below" else nfe


def run_problem(name, dist, n, rtols, steps_list, grids, pid_tols, pid_solvers, warm):
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(dist, sde)
    exact = np.asarray(dist.sample(jr.key(101), n))
    sw_key = jr.key(7)
    floors = [
        ss.sliced_wasserstein(dist.sample(jr.key(102 + i), n), exact, key=sw_key) for i in range(4)
    ]
    floor, floor_std = float(np.mean(floors)), float(np.std(floors, ddof=1))
    band = floor + 2 * floor_std
    mixture = isinstance(dist, ss.analytic.GaussianMixture)
    rows = []

    def record(method, setting, fn):
        first, best, out = timed(fn, repeats=1 if warm else 0)
        seconds = best if warm else first
        result, extra = out if isinstance(out, tuple) else (out, {})
        x = np.asarray(result.x)
        sw = ss.sliced_wasserstein(x, exact, key=sw_key)
        row = dict(
            method=method,
            setting=setting,
            nfe=float(np.mean(result.nfe)),
            nfe_max=int(np.max(result.nfe)),
            sw=sw,
            excess=math.sqrt(max(sw**2 - floor**2, 0.0)),
            seconds=seconds,
            **extra,
        )
        if mixture:
            row["mode_err"] = ss.mode_weight_error(dist, jnp.asarray(x))
        rows.append(row)
        print(
            f"{method:16s} {setting:>14s} nfe {row['nfe']:8.1f} (max {row['nfe_max']:5d}) "
            f"sw {sw:.4f} excess {row['excess']:.4f} {seconds:6.1f}s"
            + (f" mode_err {row['mode_err']:.3f}" if mixture else "")
            + (f" rejected {extra['rejected_fraction']:.2f}" if extra else ""),
            flush=True,
        )

    def adaptive(rtol, t_eps=1e-3, log_snr_steps=False):
        atol = ATOL_PER_RTOL * rtol
        r, st = sample_sde_adaptive_with_stats(
            sde,
            score,
            key=jr.key(0),
            shape=(n, DIM),
            rtol=rtol,
            atol=atol,
            t_eps=t_eps,
            log_snr_steps=log_snr_steps,
        )
        att, acc = np.asarray(st.attempted), np.asarray(st.accepted)
        return r, dict(
            rtol=rtol,
            atol=atol,
            attempted=float(att.mean()),
            accepted=float(acc.mean()),
            rejected_fraction=float(1 - acc.sum() / att.sum()),
        )

    print(
        f"\n== {name}: n={n}, dim={DIM}; sw floor {floor:.4f} +- {floor_std:.4f} (band {band:.4f})"
    )
    for rtol in rtols:
        record("adaptive (GGF)", f"rtol={rtol:g}", lambda rtol=rtol: adaptive(rtol))
    for rtol in rtols:
        record(
            "adaptive log-SNR",
            f"rtol={rtol:g}",
            lambda rtol=rtol: adaptive(rtol, log_snr_steps=True),
        )
    for grid in grids:
        for steps in steps_list:
            record(
                f"EM {grid}",
                f"steps={steps}",
                lambda steps=steps, grid=grid: ss.sample_sde(
                    sde, score, key=jr.key(0), shape=(n, DIM), steps=steps, grid=grid
                ),
            )
    for solver_name, solver in pid_solvers:
        for tol in pid_tols:
            controller = dfx.PIDController(rtol=jnp.asarray(tol), atol=jnp.asarray(tol))

            def pid(solver=solver, controller=controller):
                return ss.sample_sde(
                    sde,
                    score,
                    key=jr.key(0),
                    shape=(n, DIM),
                    solver=solver,
                    steps=None,
                    stepsize_controller=controller,
                    throw=False,
                )

            record(solver_name, f"tol={tol:g}", pid)

    em = sorted((r["nfe"], r["sw"]) for r in rows if r["method"] == "EM uniform")
    for r in rows:
        eq = interp_nfe(em, r["sw"])
        r["em_nfe_at_equal_sw"] = eq
        r["gain"] = eq / r["nfe"] if isinstance(eq, float) else None
    families = sorted({r["method"] for r in rows}, key=[r["method"] for r in rows].index)
    to_band = {
        m: nfe_to_band([r for r in rows if r["method"] == m], band, m.startswith("EM"))
        for m in families
    }
    em_band = to_band["EM uniform"]
    summary = {
        m: dict(
            nfe_to_band=v,
            gain_vs_em=(em_band / v if v is not None and em_band is not None else None),
        )
        for m, v in to_band.items()
    }
    print(f"\nevaluations per sample to reach sw <= {band:.4f} (the floor band):")
    for m, v in summary.items():
        nfe = "not reached" if v["nfe_to_band"] is None else f"{v['nfe_to_band']:.1f}"
        gain = "" if v["gain_vs_em"] is None else f"  EM / this = {v['gain_vs_em']:.2f}"
        print(f"  {m:16s} {nfe}{gain}")

    # Where the adaptive controller spends its evaluations (the paper's rtol): runs stopped at
    # t = 0.1 and 0.01 (same key and path), without the Tweedie call.
    phases = {}
    for t_stop in (0.1, 0.01, 1e-3):
        r, extra = adaptive(0.05, t_eps=t_stop)
        phases[f"{t_stop:g}"] = float(np.mean(r.nfe)) - 1
    ts = np.asarray(ss.time_grid(sde, 100, t_eps=1e-3))
    em_share = {f"{t:g}": float(np.mean(ts[1:] >= t)) for t in (0.1, 0.01, 1e-3)}
    print(
        "adaptive rtol=0.05, evaluations from T down to t: "
        + ", ".join(f"t={k}: {v:.1f}" for k, v in phases.items())
        + "; uniform EM's share of steps down to t: "
        + ", ".join(f"t={k}: {v:.2f}" for k, v in em_share.items())
    )
    return dict(
        n=n,
        dim=DIM,
        floor=floor,
        floor_std=floor_std,
        band=band,
        rows=rows,
        summary=summary,
        adaptive_evaluations_down_to_t=phases,
        em_uniform_share_of_steps_down_to_t=em_share,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--warm", action="store_true", help="time a second (compiled) call")
    parser.add_argument("--problems", nargs="+", default=["aniso64", "rot625"])
    args = parser.parse_args(argv)
    n = args.n or (512 if args.quick else 4096)
    if args.quick:
        rtols, steps_list, pid_tols = (0.5, 0.2, 0.05), (25, 50, 100, 200), (0.05,)
        grids, pid_solvers = ("uniform",), (("ShARK+PID", dfx.ShARK()),)
    else:
        rtols = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02)
        steps_list = (25, 35, 50, 70, 100, 140, 200, 400)
        pid_tols = (0.2, 0.05, 0.01)
        grids = ("uniform", "log_snr")
        pid_solvers = (("Heun+PID", dfx.Heun()), ("ShARK+PID", dfx.ShARK()))
    problems = {"aniso64": lambda: load_problem("aniso64"), "rot625": rotated_gaussian}
    out = metadata(n=n, rtols=rtols, steps=steps_list, grids=grids, pid_tols=pid_tols, sde="VPSDE")
    out["problems"] = {}
    for name in args.problems:
        out["problems"][name] = run_problem(
            name,
            problems[name](),
            n,
            rtols,
            steps_list,
            grids,
            pid_tols,
            pid_solvers,
            args.warm,
        )
    write("adaptive_sde_quick" if args.quick else "adaptive_sde", out)


if __name__ == "__main__":
    main()
