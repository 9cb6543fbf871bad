"""Can curvature make score-based samplers faster? Evaluations per sample to reach a KL target.

Problems: a rotated 64-D Gaussian with standard deviations log-spaced in [0.02, 0.5] (condition
number 625) and in [0.1, 0.5] (25); start N(0, I); exact score. Methods: ULA, MALA, MALA with
dual-averaged step, MALA preconditioned by a metric estimated from a pilot (sample covariance,
Fisher, Lanczos), Ozaki (exact Jacobian by jacfwd; fixed Lanczos curvature), and the reverse VP
SDE by Euler-Maruyama (`ss.sample_sde`).

Cost, per sample: score evaluations (a JVP counts 2; `log_prob` with its gradient counts 1, as
for MALA), including a pilot's share (its total divided by the number of samples) and the
step-size adaptation steps. KL is that of a Gaussian fit of the samples (mean, covariance)
against the exact target, minus its sampling floor (the mean KL of the fit of as many EXACT
draws, 4 replicates; printed): an excess KL near 0 is as good as exact sampling can show at
this sample size. The first checkpoint with excess KL <= 0.1 (<= 0.01) gives the figures.

    python benchmarks/curvature.py --quick     # n = 1000 samples, shorter runs
    python benchmarks/curvature.py             # n = 8000

Writes benchmarks/results/curvature.json and benchmarks/results/curvature.png.

`--aniso64` runs the 8-component 64-D mixture `aniso64` instead (the issue's "no worse mode
weights or SW2 than the unpreconditioned samplers"): MALA (fixed step 1/lambda_max), MALA with a
dual-averaged step, MALA with a covariance or Lanczos (rank 32) metric fitted on a pilot, and the
reverse VP SDE (Euler-Maruyama + Tweedie), each at the same budgets of evaluations per sample
(pilot and adaptation included), all Langevin chains started from N(0, I). Metrics: the
largest mode-weight error and sliced W2 (`ss.sliced_wasserstein`, 128 directions) to as many
exact draws, with their two-sample floors (4 other exact sets: mean and std). Writes
benchmarks/results/curvature_aniso64.json (`..._quick.json` with --quick: n = 1024).
"""

import argparse
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import RESULTS, load_problem, metadata, write

import scoresde as ss

jax.config.update("jax_enable_x64", True)

DIM = 64


def problem(lo, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    stds = np.geomspace(lo, 0.5, DIM)
    mean = 0.3 * rng.normal(size=DIM)
    return ss.analytic.Gaussian(
        jnp.asarray(mean), eigvecs=jnp.asarray(q), eigvals=jnp.asarray(stds**2)
    )


def gaussian_kl(mean, cov, target):
    """KL(N(mean, cov) || target), closed form (MATH.md)."""
    prec = np.asarray(jnp.linalg.inv(target.cov))
    diff = np.asarray(target.mean) - mean
    _, logdet_t = np.linalg.slogdet(np.asarray(target.cov))
    sign, logdet_0 = np.linalg.slogdet(cov)
    if sign <= 0:
        return float("inf")
    return 0.5 * float(np.trace(prec @ cov) + diff @ prec @ diff - DIM + logdet_t - logdet_0)


def fit_kl(x, target):
    x = np.asarray(x)
    if not np.all(np.isfinite(x)):
        return float("inf")
    return gaussian_kl(x.mean(0), np.cov(x, rowvar=False), target)


def kl_floor(target, n, reps=4):
    return float(np.mean([fit_kl(target.sample(jr.key(1000 + r), n), target) for r in range(reps)]))


@eqx.filter_jit
def _trace_jit(kernel, x, key, every, count):
    keys = jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(x.shape[0]))
    states = jax.vmap(kernel.init)(x)

    def outer(states, c):
        def inner(states, j):
            step_keys = jax.vmap(lambda k: jr.fold_in(k, c * every + j))(keys)
            states, _ = jax.vmap(kernel.step)(step_keys, states)
            return states, None

        states, _ = jax.lax.scan(inner, states, jnp.arange(every))
        xs = states.x
        m = jnp.mean(xs, axis=0)
        d = xs - m[None]
        return states, (m, d.T @ d / (xs.shape[0] - 1))

    _, (means, covs) = jax.lax.scan(outer, states, jnp.arange(count))
    return means, covs


def kl_trace(kernel, x, key, *, steps, checkpoints, target):
    """KL of the Gaussian fit after every `steps // checkpoints` steps of `kernel` from `x`."""
    every = max(1, steps // checkpoints)
    count = steps // every
    means, covs = _trace_jit(kernel, x, key, every, count)
    kls = [
        gaussian_kl(np.asarray(m), np.asarray(c), target) for m, c in zip(means, covs, strict=True)
    ]
    step_counts = [every * (i + 1) for i in range(count)]
    return step_counts, kls


def _fmt(e):
    return "-" if e is None else f"{e:.0f}"


def first_reaching(evals, kls, floor, level):
    for e, k in zip(evals, kls, strict=True):
        if k - floor <= level:
            return float(e)
    return None


def run_problem(name, target, n, quick, key):
    lam_max = float(1 / jnp.min(target.eigvals))
    floor = kl_floor(target, n)
    x0 = jr.normal(jr.fold_in(key, 0), (n, DIM), jnp.float64)
    cap = (2000 if name == "kappa625" else 600) if quick else 12000
    rows = {}

    def record(label, evals, kls, wall, **extra):
        e01 = first_reaching(evals, kls, floor, 0.1)
        e001 = first_reaching(evals, kls, floor, 0.01)
        rows[label] = dict(
            evals=[float(e) for e in evals],
            kl=[float(k) for k in kls],
            evals_to_kl_0_1=e01,
            evals_to_kl_0_01=e001,
            wall_s=wall,
            **extra,
        )
        print(
            f"  {label:28s} evals to excess KL<=0.1: {_fmt(e01):>8}  <=0.01: {_fmt(e001):>8}  "
            f"final excess KL {kls[-1] - floor:9.4f}  wall {wall:6.1f}s"
        )

    def chain(label, kernel, steps, x=None, extra_evals=0.0, k=1, **extra):
        start = time.perf_counter()
        xs = x0 if x is None else x
        counts, kls = kl_trace(
            kernel, xs, jr.fold_in(key, k), steps=steps, checkpoints=60, target=target
        )
        wall = time.perf_counter() - start + extra.pop("extra_wall", 0.0)
        evals = [extra_evals + kernel.nfe(xs[0], c) for c in counts]
        record(label, evals, kls, wall, **extra)

    # ULA at a fixed step h = c / lambda_max (stable below c = 2); the best of two.
    for c in (0.5,) if quick else (0.5, 1.0):
        chain(f"ULA h={c}/lam_max", ss.UnadjustedLangevin(target.score, c / lam_max), cap, k=1)
    # MALA, fixed step (1/lam_max) and dual-averaged (adaptation steps on the batch, counted).
    chain("MALA h=1/lam_max", ss.MALA(target.log_prob, 1 / lam_max), cap, k=2)

    def adapted_mala(label, pre, steps, adapt=200, pilot_evals=0.0, pilot_wall=0.0, k=3, h0=0.1):
        start = time.perf_counter()
        ad = ss.adapt_step_size(
            ss.MALA(target.log_prob, h0, preconditioner=pre),
            x0,
            key=jr.fold_in(key, 100 + k),
            num_steps=adapt,
        )
        wall = time.perf_counter() - start + pilot_wall
        kernel = ss.MALA(target.log_prob, ad.step_size, preconditioner=pre)
        chain(
            label,
            kernel,
            steps,
            x=ad.x,
            extra_evals=pilot_evals + ad.nfe,
            k=k,
            step_size=float(ad.step_size),
            extra_wall=wall,
        )

    adapted_mala("MALA + dual averaging", ss.IdentityPreconditioner(), cap, h0=0.1 / lam_max)

    # Pilot for covariance / Fisher: 256 ULA chains, 1000 steps at h = 1/lam_max (own key).
    n_pilot, pilot_steps = 256, 1000
    start = time.perf_counter()
    pilot = ss.run_langevin(
        ss.UnadjustedLangevin(target.score, 1 / lam_max),
        x0[:n_pilot],
        key=jr.fold_in(key, 7),
        num_steps=pilot_steps,
    )
    pilot_wall = time.perf_counter() - start
    pilot_cost = n_pilot * (pilot_steps + 1) / n
    steps_pre = 400 if quick else 1000
    cov_pre = ss.estimate_preconditioner(None, pilot.x, kind="covariance")
    adapted_mala(
        "MALA + covariance (pilot)",
        cov_pre,
        steps_pre,
        adapt=100,
        pilot_evals=pilot_cost,
        pilot_wall=pilot_wall,
        k=4,
    )
    fisher_pre = ss.estimate_preconditioner(target.score, pilot.x, kind="fisher")
    adapted_mala(
        "MALA + Fisher (pilot)",
        fisher_pre,
        steps_pre,
        adapt=100,
        pilot_evals=pilot_cost + n_pilot / n,
        pilot_wall=pilot_wall,
        k=5,
    )
    # Fisher-divergence fit on the START ensemble (N(0, I), not the target): 128 score
    # evaluations; scores carry the curvature, so no pilot chain is needed. Rank 32.
    start = time.perf_counter()
    fd_pre = ss.estimate_preconditioner(target.score, x0[:128], kind="fisher_divergence", rank=32)
    adapted_mala(
        "MALA + Fisher-divergence fit rank 32 (start points)",
        fd_pre,
        steps_pre,
        adapt=100,
        pilot_evals=128 / n,
        pilot_wall=time.perf_counter() - start,
        k=12,
    )
    # Lanczos at the start ensemble's mean: rank 32, 64 steps = 128 evaluations in all.
    start = time.perf_counter()
    curv = ss.lanczos_curvature(target.score, x0[:16], key=jr.fold_in(key, 8), rank=32)
    lanczos_wall = time.perf_counter() - start
    adapted_mala(
        "MALA + Lanczos rank 32",
        curv.preconditioner,
        steps_pre,
        adapt=100,
        pilot_evals=curv.evals / n,
        pilot_wall=lanczos_wall,
        k=6,
    )
    # Ozaki, exact Jacobian (2d evaluations per point), h large: one step is the target.
    chain("Ozaki exact J, h=100", ss.OzakiLangevin(target.score, 100.0), 2, k=9)
    if not quick:
        # Ozaki with the fixed Lanczos curvature, 1 evaluation per step: unadjusted, it is ULA
        # with step 1/theta_33 off the top 32 directions, so it is biased there (shown as such).
        chain(
            "Ozaki Lanczos rank 32, h=1",
            ss.OzakiLangevin(target.score, 1.0, curvature=curv),
            400,
            extra_evals=curv.evals / n,
            k=10,
            extra_wall=lanczos_wall,
        )
    # Reverse VP SDE, Euler-Maruyama, `steps` + 1 (denoising) evaluations.
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(target, sde)
    evals, kls = [], []
    start = time.perf_counter()
    grid = (50, 100, 200, 400, 800) if quick else (50, 100, 200, 400, 800, 1600, 3200)
    for steps in grid:
        out = ss.sample_sde(
            sde, score, key=jr.fold_in(key, 11), shape=(n, DIM), solver=dfx.Euler(), steps=steps
        )
        evals.append(int(out.nfe[0]))
        kls.append(fit_kl(out.x, target))
    record("reverse VP SDE (EM)", evals, kls, time.perf_counter() - start)
    return dict(
        kl_floor=floor, condition_number=lam_max * float(jnp.max(target.eigvals)), methods=rows
    )


def run_aniso64(n, budgets, key):
    """Mode-weight error and sliced W2 of each sampler on aniso64 at matched evaluations."""
    target = load_problem("aniso64", jnp.float64)
    lam_max = float(1 / jnp.min(target.eigvals))
    sw_key = jr.fold_in(key, 99)
    exact = target.sample(jr.key(2000), n)
    others = [target.sample(jr.key(2001 + r), n) for r in range(4)]
    sw_floor = [ss.sliced_wasserstein(o, exact, key=sw_key) for o in others]
    mode_floor = [ss.mode_weight_error(target, o) for o in others]
    floor = dict(
        sw=float(np.mean(sw_floor)),
        sw_std=float(np.std(sw_floor, ddof=1)),
        mode_err=float(np.mean(mode_floor)),
        mode_err_std=float(np.std(mode_floor, ddof=1)),
    )
    print(
        f"aniso64: n = {n}, lambda_max = {lam_max:.0f}; two-sample floor: sw {floor['sw']:.4f} "
        f"+- {floor['sw_std']:.4f}, mode-weight error {floor['mode_err']:.4f} "
        f"+- {floor['mode_err_std']:.4f}"
    )
    x0 = jr.normal(jr.fold_in(key, 0), (n, DIM), jnp.float64)
    rows = {}

    def metrics(x):
        x = jnp.asarray(x)
        if not bool(jnp.all(jnp.isfinite(x))):
            return float("inf"), float("inf")
        return ss.sliced_wasserstein(x, exact, key=sw_key), ss.mode_weight_error(target, x)

    def record(label, points, wall, **extra):
        rows[label] = dict(points=points, wall_s=wall, **extra)
        for p in points:
            print(
                f"  {label:30s} evals {p['evals']:7.1f}  sw {p['sw']:.4f}  "
                f"mode-weight error {p['mode_err']:.4f}"
            )

    def chain(label, kernel, x, spent, k, wall=0.0, **extra):
        """Run `kernel` from `x` (after `spent` evaluations per sample) to each budget."""
        start = time.perf_counter()
        points, done = [], spent
        for b, budget in enumerate(budgets):
            steps = int(round(budget - done))
            if steps > 0:
                res = ss.run_langevin(kernel, x, key=jr.fold_in(key, 1000 * k + b), num_steps=steps)
                x, done = res.x, done + float(jnp.mean(res.nfe))
            if done > budget + 2:
                continue  # the pilot alone exceeds this budget
            sw, me = metrics(x)
            points.append(dict(budget=budget, evals=done, sw=sw, mode_err=me))
        record(label, points, wall + time.perf_counter() - start, **extra)

    def adapted(pre, x, spent, num_steps, k):
        ad = ss.adapt_step_size(
            ss.MALA(target.log_prob, 0.1 / lam_max, preconditioner=pre),
            x,
            key=jr.fold_in(key, 100 + k),
            num_steps=num_steps,
        )
        return ss.MALA(target.log_prob, ad.step_size, preconditioner=pre), ad, spent + ad.nfe

    chain("MALA h=1/lam_max", ss.MALA(target.log_prob, 1 / lam_max), x0, 0.0, k=1)
    start = time.perf_counter()
    kernel, ad, spent = adapted(ss.IdentityPreconditioner(), x0, 0.0, 50, k=2)
    chain(
        "MALA + dual averaging",
        kernel,
        ad.x,
        spent,
        k=2,
        wall=time.perf_counter() - start,
        step_size=float(ad.step_size),
    )
    # Pilot (own key): 256 chains, 100 dual-averaged MALA steps from N(0, I); its cost is shared.
    n_pilot = 256
    start = time.perf_counter()
    _, pilot, _ = adapted(
        ss.IdentityPreconditioner(), jr.normal(jr.fold_in(key, 7), (n_pilot, DIM)), 0.0, 100, k=7
    )
    pilot_cost = n_pilot * pilot.nfe / n
    pilot_wall = time.perf_counter() - start

    def preconditioned(label, pre, spent, start, k):
        """MALA under metric `pre`: 50 dual-averaging steps, then the budgets; the wall time
        counts the pilot and the metric's fit (from `start`)."""
        kernel, ad, spent = adapted(pre, x0, spent, 50, k=k)
        chain(label, kernel, ad.x, spent, k=k, wall=pilot_wall + time.perf_counter() - start,
              step_size=float(ad.step_size))  # fmt: skip

    start = time.perf_counter()
    cov_pre = ss.estimate_preconditioner(None, pilot.x, kind="covariance")
    preconditioned("MALA + covariance (pilot)", cov_pre, pilot_cost, start, k=3)
    start = time.perf_counter()
    curv = ss.lanczos_curvature(target.score, pilot.x, key=jr.fold_in(key, 8), rank=32)
    preconditioned("MALA + Lanczos rank 32 (pilot)", curv.preconditioner,
                   pilot_cost + curv.evals / n, start, k=4)  # fmt: skip
    # Fisher-divergence fit on the pilot's points and scores (256 more evaluations, shared):
    # one Gaussian cannot match a multimodal target's scores, and the fit may not be positive
    # definite; the estimator then refuses, and the row records that.
    start = time.perf_counter()
    label = "MALA + Fisher-div. rank 32 (pilot)"
    try:
        fd_pre = ss.estimate_preconditioner(
            target.score, pilot.x, kind="fisher_divergence", rank=32
        )
    except ValueError as e:
        print(f"  {label}: {e}")
        rows[label] = dict(status=f"refused: {e}")
    else:
        preconditioned(label, fd_pre, pilot_cost + n_pilot / n, start, k=5)
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(target, sde)
    start = time.perf_counter()
    points = []
    for budget in budgets:
        out = ss.sample_sde(
            sde,
            score,
            key=jr.fold_in(key, 11),
            shape=(n, DIM),
            solver=dfx.Euler(),
            steps=budget - 1,
        )
        sw, me = metrics(out.x)
        points.append(dict(budget=budget, evals=float(jnp.mean(out.nfe)), sw=sw, mode_err=me))
    record("reverse VP SDE (EM)", points, time.perf_counter() - start)
    return dict(
        n=n,
        lambda_max=lam_max,
        floor=floor,
        pilot_evals_per_sample=pilot_cost,
        lanczos_evals=curv.evals,
        budgets=list(budgets),
        methods=rows,
    )


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items(), strict=True):
        for label, row in res["methods"].items():
            excess = np.maximum(np.asarray(row["kl"]) - res["kl_floor"], 1e-4)
            ax.loglog(row["evals"], excess, label=label, marker="." if len(excess) < 10 else None)
        ax.axhline(0.1, color="k", lw=0.6, ls="--")
        ax.axhline(0.01, color="k", lw=0.6, ls=":")
        ax.set_title(f"{name}: KL of Gaussian fit minus floor {res['kl_floor']:.3f}")
        ax.set_xlabel("score evaluations per sample (pilot included)")
        ax.set_ylabel("excess KL")
        ax.set_ylim(1e-4, 1e3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="n = 1000, shorter runs")
    parser.add_argument("--aniso64", action="store_true", help="the aniso64 mixture instead")
    args = parser.parse_args()
    key = jr.key(0)
    if args.aniso64:
        n = 1024 if args.quick else 4096
        budgets = (100, 300, 1000)
        start = time.perf_counter()
        res = run_aniso64(n, budgets, jr.fold_in(key, 16))
        total = time.perf_counter() - start
        print(f"total wall {total:.1f}s")
        name = "curvature_aniso64" + ("_quick" if args.quick else "")
        write(name, dict(meta=metadata(quick=args.quick, n=n), total_wall_s=total, results=res))
        return
    n = 1000 if args.quick else 8000
    results = {}
    start = time.perf_counter()
    for name, lo in (("kappa625", 0.02), ("kappa25", 0.1)):
        target = problem(lo)
        print(f"{name}: n = {n}")
        results[name] = run_problem(name, target, n, args.quick, jr.fold_in(key, len(results)))
        print(f"  KL sampling floor (exact draws, n = {n}): {results[name]['kl_floor']:.4f}")
    total = time.perf_counter() - start
    print(f"total wall {total:.1f}s")
    name = "curvature"
    write(name, dict(meta=metadata(quick=args.quick, n=n), total_wall_s=total, results=results))
    RESULTS.mkdir(exist_ok=True)
    plot(results, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
