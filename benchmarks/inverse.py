"""Inverse problems: guided scores and SMC against the exact posterior, at matched NFE.

Run: `PYTHONPATH=. python benchmarks/inverse.py [--small] [--problems grid25 aniso64 gauss16]` (VP SDE, float64: `condition` underflows far
components' posterior weights to 0 in float32, which `GaussianMixture` refuses; CPU). Problems:

- `grid25`: 25 unit-covariance components on a 5 x 5 grid spaced 8 apart in the first two of
  d = 8 coordinates, uniform weights; one random measurement row (d_y = 1), noise_std 0.5.
- `aniso64`: the 8-component anisotropic mixture of `scoresde/_bench/data/aniso64.npz`;
  a random 8 x 64 A (entries N(0, 1/64)), noise_std 0.1.
- `gauss16`: a Gaussian prior in d = 16 (covariance eigenvalues log-spaced in [0.01, 1], random
  basis), a random 4 x 16 A, noise_std 0.1: guidance by TMPD and the moment twist are exact here.

y is drawn from the model (x ~ prior, y = A x + n). Methods: Posterior (exact guidance), DPS
(scale 1), PiGDM (data_var 1), TMPD, each with `sample_sde` (Euler-Maruyama, fixed steps) and
`sample_ode` (DPMSolverPP2M, log-SNR grid); `sample_smc` with 256 particles: the exact twist
(`LogTwist` of the analytic noisy likelihood: an oracle, showing what the sampler itself reaches),
`MomentTwist()` (TMPD's Gaussian projection; also at 3x the NFE budget),
`TweedieTwist(data_var=tr(Cov)/d)` (the data's mean per-coordinate variance) and the plain TDS
twist. Steps are chosen so that every method spends about the same
NFE per sample (a VJP through the score counts 2). Metrics: sliced Wasserstein to exact posterior
samples (with the two-sample floor: exact vs exact), mode-weight error (SMC: of the weighted
particles), |ln p-hat(y) - ln p(y)| for SMC, NFE and wall time (second call, compiled).
SMC runs `runs` independent 256-particle filters; for SW each run is resampled (multinomial, one
draw per particle) and the runs are pooled; the other SMC metrics are means over runs.

Writes `benchmarks/results/inverse.json` and `benchmarks/results/inverse.png`.
"""

import argparse
import json
import os

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import load_npz, timed

import scoresde as ss

jax.config.update("jax_enable_x64", True)

HERE = os.path.dirname(os.path.abspath(__file__))


def grid25():
    g = 8.0 * (np.arange(5) - 2.0)
    means = np.zeros((25, 8))
    means[:, 0] = np.repeat(g, 5)
    means[:, 1] = np.tile(g, 5)
    prior = ss.analytic.GaussianMixture(
        jnp.full(25, 1 / 25), jnp.asarray(means, jnp.float64), jnp.tile(jnp.eye(8), (25, 1, 1))
    )
    A = jr.normal(jr.key(10), (1, 8))
    return prior, A, 0.5


def aniso64():
    d = load_npz("aniso64")
    covs = np.einsum("kij,kj,klj->kil", d["eigvecs"], d["eigvals"], d["eigvecs"])
    prior = ss.analytic.GaussianMixture(
        jnp.asarray(d["weights"], jnp.float64),
        jnp.asarray(d["means"], jnp.float64),
        jnp.asarray(covs, jnp.float64),
    )
    A = jr.normal(jr.key(20), (8, 64)) / 8.0
    return prior, A, 0.1


def gauss16():
    """A Gaussian prior (a one-component mixture), covariance eigenvalues log-spaced in
    [0.01, 1] in a random basis; a random 4 x 16 A, noise_std 0.1: TMPD is exact here."""
    d = 16
    q, _ = np.linalg.qr(np.asarray(jr.normal(jr.key(30), (d, d)), np.float64))
    cov = (q * np.logspace(-2, 0, d)) @ q.T
    prior = ss.analytic.GaussianMixture(
        jnp.ones(1), jnp.zeros((1, d), jnp.float64), jnp.asarray(cov[None], jnp.float64)
    )
    A = jr.normal(jr.key(31), (4, d)) / 4.0
    return prior, A, 0.1


PROBLEMS = {"grid25": grid25, "aniso64": aniso64, "gauss16": gauss16}


def run_problem(name, prior, A, noise, *, n, nfe_budget, runs, samples):
    sde = ss.VPSDE()
    x_true = prior.sample(jr.key(1), 1)[0]
    m0 = ss.LinearMeasurement(A, jnp.zeros(A.shape[0]), noise)
    m = ss.LinearMeasurement(A, m0.sample_y(jr.key(2), x_true), noise)
    post = prior.condition(m)
    log_py = float(prior.log_evidence(m))
    score = ss.analytic.marginal_score(prior, sde)
    exact_a, exact_b = post.sample(jr.key(3), n), post.sample(jr.key(4), n)
    sw_key = jr.key(5)
    floor = ss.sliced_wasserstein(exact_a, exact_b, key=sw_key)
    samples[(name, "exact posterior", "")] = np.asarray(exact_a)
    d = prior.dim
    rows = []

    def record(method, sampler, x, nfe, wall, mwe=None, **extra):
        row = dict(
            problem=name,
            method=method,
            sampler=sampler,
            sw=ss.sliced_wasserstein(x, exact_a, key=sw_key),
            sw_floor=floor,
            mode_weight_error=ss.mode_weight_error(post, x) if mwe is None else mwe,
            nfe=int(nfe),
            wall_s=wall,
            **extra,
        )
        row["sw_over_floor"] = row["sw"] / floor
        rows.append(row)
        samples[(name, method, sampler)] = np.asarray(x)
        print(
            f"{name:8s} {method:14s} {sampler:10s} SW {row['sw']:.3f} ({row['sw_over_floor']:.2f}x"
            f" floor) mode err {row['mode_weight_error']:.3f} NFE {row['nfe']:4d} "
            f"{wall:6.2f}s" + "".join(f" {k} {v:.3f}" for k, v in extra.items()),
            flush=True,
        )

    guided = {
        "Posterior": ss.guidance.Posterior(
            score, ss.analytic.noisy_likelihood_score(prior, sde, m)
        ),
        "DPS": ss.guidance.DPS(sde, score, m),
        "PiGDM": ss.guidance.PiGDM(sde, score, m),
        "TMPD": ss.guidance.TMPD(sde, score, m),
    }
    for method, g in guided.items():
        cost = g.evals_per_call + 2 * g.vjps_per_call
        steps = max(nfe_budget // cost, 2)
        _, wall, r = timed(
            lambda g=g, steps=steps: ss.sample_sde(
                sde, g, key=jr.key(7), shape=(n, d), steps=steps - 1
            ),
            repeats=1,
        )
        record(method, "EM", r.x, int(r.nfe[0]), wall)
        _, wall, r = timed(
            lambda g=g, steps=steps: ss.sample_ode(
                sde, g, key=jr.key(7), shape=(n, d), solver=ss.DPMSolverPP2M(), steps=steps,
                grid="log_snr",
            ),
            repeats=1,
        )  # fmt: skip
        record(method, "DPM++2M", r.x, int(r.nfe[0]), wall)

    particles = 256
    # The data's mean per-coordinate variance, tr(Cov) / d: a scale a user knows for their data.
    means, covs, w = prior.means, prior.covs, prior.weights
    mean = w @ means
    data_var = float(
        (jnp.einsum("k,kii->", w, covs) + w @ jnp.sum((means - mean) ** 2, axis=1)) / d
    )
    nls = ss.analytic.noisy_likelihood_score(prior, sde, m)
    for label, twist, budget in (
        ("SMC-256 exact twist", ss.LogTwist(nls.log_likelihood), nfe_budget),
        ("SMC-256 moment twist", ss.MomentTwist(), nfe_budget),
        ("SMC-256 moment twist 3x NFE", ss.MomentTwist(), 3 * nfe_budget),
        ("SMC-256 TDS data_var", ss.TweedieTwist(data_var=data_var), nfe_budget),
        ("SMC-256 TDS", ss.TweedieTwist(), nfe_budget),
    ):
        evals, vjps = twist.cost(m)
        steps = max((budget - 1) // (evals + 2 * vjps), 2)

        def smc(twist=twist, steps=steps):
            return [
                ss.sample_smc(
                    sde, score, m, key=jr.key(100 + k), shape=(particles, d), steps=steps,
                    twist=twist,
                )
                for k in range(runs)
            ]  # fmt: skip

        _, wall, results = timed(smc, repeats=1)
        xs, mwes, errs, ess = [], [], [], []
        for k, r in enumerate(results):
            w = jnp.exp(r.log_weights)
            idx = jr.choice(jr.key(200 + k), particles, (particles,), p=w)
            xs.append(r.x[idx])
            comp = jnp.argmax(jax.vmap(post.component_log_probs)(r.x), axis=1)
            mw = jnp.zeros(post.num_components).at[comp].add(w)
            mwes.append(float(jnp.max(jnp.abs(mw - post.weights))))
            errs.append(abs(float(r.log_evidence) - log_py))
            ess.append(float(jnp.min(r.ess)) / particles)
        x = jnp.concatenate(xs)  # runs * 256 == n
        record(
            label, "EM", x, results[0].nfe[0], wall / runs, mwe=float(np.mean(mwes)),
            log_evidence_abs_err=float(np.mean(errs)), min_ess_frac=float(np.mean(ess)),
        )  # fmt: skip
    return rows


def plot(rows, samples, path):
    """Top: posterior samples of grid25 (first two coordinates) by method, EM sampler, beside
    the exact posterior; bottom: sliced W2 over its floor for every row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in samples if k[0] == "grid25" and k[2] in ("", "EM")]
    problems = sorted({r["problem"] for r in rows})
    fig = plt.figure(figsize=(2.6 * len(panels), 8))
    grid = fig.add_gridspec(2, max(len(panels), len(problems)))
    for i, key in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        x = samples[key]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.4)
        ax.set_xlim(-22, 22)
        ax.set_ylim(-22, 22)
        ax.set_aspect("equal")
        ax.set_title(key[1], fontsize=8)
    span = max(len(panels), len(problems)) // len(problems)
    for j, p in enumerate(problems):
        ax = fig.add_subplot(grid[1, j * span : (j + 1) * span])
        sub = [r for r in rows if r["problem"] == p]
        labels = [f"{r['method']}\n{r['sampler']}" for r in sub]
        ax.bar(range(len(sub)), [r["sw_over_floor"] for r in sub])
        ax.axhline(1.0, color="k", lw=1)
        ax.axhline(1.2, color="r", ls="--", lw=1)
        ax.set_xticks(range(len(sub)), labels, rotation=60, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("sliced W2 / two-sample floor")
        ax.set_title(p)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="n=512, NFE 150, 2 SMC runs")
    parser.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    args = parser.parse_args()
    n, budget, runs = (512, 150, 2) if args.small else (1024, 300, 4)
    rows, samples = [], {}
    for name in args.problems:
        prior, A, noise = PROBLEMS[name]()
        rows += run_problem(
            name, prior, A, noise, n=n, nfe_budget=budget, runs=runs, samples=samples
        )
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    out = dict(
        benchmark="inverse",
        params=dict(n=n, nfe_budget=budget, smc_runs=runs, smc_particles=256, small=args.small),
        jax=jax.__version__,
        device=str(jax.devices()[0]),
        rows=rows,
    )
    stem = "inverse" if args.problems == list(PROBLEMS) else "inverse_" + "_".join(args.problems)
    with open(os.path.join(HERE, "results", stem + ".json"), "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote benchmarks/results/{stem}.json")
    if "grid25" in args.problems:
        plot(rows, samples, os.path.join(HERE, "results", stem + ".png"))
        print(f"wrote benchmarks/results/{stem}.png")


if __name__ == "__main__":
    main()
