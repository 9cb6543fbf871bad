"""Is the default t_eps = 1e-5 accurate in float32? Log-likelihood error against the analytic
density at several t_eps, float32 and float64 side by side (exact divergence, VP, Dopri5).

Problems: ring2d and aniso64 (the shared problem set), and `narrow2d-S`: three 2-D Gaussians of
std S (0.01, 0.001) at (+-0.5, +-0.5), data sharper than the VP blur sigma(1e-5) ~ 1e-3 at the
smallest S, where the score grows like 1/sigma^2 near the data.

Run: `python benchmarks/likelihood_precision.py` (about 5 minutes on 2 CPU cores). Prints and
writes `benchmarks/results/likelihood_precision.json`: per problem, precision and t_eps, the RMS
error in nats over 64 data samples against the exact ln p_{t_eps} (tol 1e-5 in float32, 1e-6 in
float64), the mean NFE, and `max_abs_vs_float64`: the largest per-sample difference between the
float32 and the float64 result (float32 rows), which separates float32's rounding from what both
precisions share (the solver tolerance and the prior N(0, I) standing in for p_T). Each precision
runs in its own process (x64 is a global switch).
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
T_EPS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)
NARROW = (1e-2, 1e-3)  # component stds of the narrow 2-D mixtures


def measure(x64: bool) -> dict:
    import warnings

    import jax

    jax.config.update("jax_enable_x64", x64)
    import jax.numpy as jnp
    import numpy as np
    from _common import load_npz

    import scoresde as ss

    warnings.simplefilter("ignore")  # below 1e-5 float32 warns: that is what is measured
    dt = jnp.float64 if x64 else jnp.float32
    tol = 1e-6 if x64 else 1e-5
    problems = {}
    for name in ("ring2d", "aniso64"):
        d = load_npz(name)
        covs = np.einsum("kij,kj,klj->kil", d["eigvecs"], d["eigvals"], d["eigvecs"])
        problems[name] = (d["weights"], d["means"], covs)
    for std in NARROW:
        means = np.array([[-0.5, -0.5], [0.5, 0.5], [0.5, -0.5]])
        problems[f"narrow2d-{std:g}"] = (
            np.full(3, 1 / 3),
            means,
            np.stack([np.eye(2) * std**2] * 3),
        )
    out = {}
    for name, (weights, means, covs) in problems.items():
        mix = ss.analytic.GaussianMixture(
            jnp.asarray(weights, dt), jnp.asarray(means, dt), jnp.asarray(covs, dt)
        )
        sde = ss.VPSDE()
        score = ss.analytic.marginal_score(mix, sde)
        # the same 64 points in both processes: drawn with NumPy, rounded to float32
        rng = np.random.default_rng(1)
        comp = rng.choice(len(weights), size=64, p=np.asarray(weights) / np.sum(weights))
        z = rng.standard_normal((64, np.shape(means)[1]))
        chol = np.linalg.cholesky(np.asarray(covs)[comp])
        points = np.asarray(means)[comp] + np.einsum("nij,nj->ni", chol, z)
        x = jnp.asarray(points.astype(np.float32).astype(np.float64), dt)
        for t_eps in T_EPS:
            r = ss.log_likelihood(
                sde, score, x, divergence=ss.ExactDivergence(), t_eps=t_eps, rtol=tol, atol=tol
            )
            exact = jax.vmap(mix.marginal(sde, jnp.asarray(t_eps, dt)).log_prob)(x)
            err = float(jnp.sqrt(jnp.mean((r.log_prob - exact) ** 2)))
            out[f"{name} t_eps={t_eps:g}"] = dict(
                rmse_nats=err,
                mean_nfe=float(jnp.mean(r.nfe)),
                log_prob=np.asarray(r.log_prob, np.float64).tolist(),
            )
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("32", "64"):
        print(json.dumps(measure(sys.argv[1] == "64")))
        return
    results = {}
    for bits in ("32", "64"):
        proc = subprocess.run(
            [sys.executable, __file__, bits], capture_output=True, text=True, check=True
        )
        results[f"float{bits}"] = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in results["float32"]:
        a, b = results["float32"][key], results["float64"][key]
        a["max_abs_vs_float64"] = max(
            abs(p - q) for p, q in zip(a.pop("log_prob"), b["log_prob"], strict=True)
        )
        b.pop("log_prob")
        print(
            f"{key:26s} float32 {a['rmse_nats']:.2e} nats ({a['mean_nfe']:.0f} NFE)   "
            f"float64 {b['rmse_nats']:.2e} nats ({b['mean_nfe']:.0f} NFE)   "
            f"|f32 - f64| <= {a['max_abs_vs_float64']:.1e}"
        )
    path = os.path.join(HERE, "results", "likelihood_precision.json")
    with open(path, "w") as f:
        json.dump(dict(benchmark="likelihood_precision", results=results), f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
