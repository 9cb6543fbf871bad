"""Is the default t_eps = 1e-5 accurate in float32? Log-likelihood error against the analytic
density at several t_eps, float32 and float64 side by side (exact divergence, VP, Dopri5).

Run: `python benchmarks/likelihood_precision.py` (a few minutes on 2 CPU cores). Prints and writes
`benchmarks/results/likelihood_precision.json`: per problem, precision and t_eps, the RMS error in
nats over 64 data samples (tol 1e-5 in float32, 1e-6 in float64) and the mean NFE. Each
precision runs in its own process (x64 is a global switch).
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
T_EPS = (1e-3, 1e-4, 1e-5, 1e-6, 1e-7)


def measure(x64: bool) -> dict:
    import warnings

    import jax

    jax.config.update("jax_enable_x64", x64)
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np
    from _common import load_npz

    import scoresde as ss

    warnings.simplefilter("ignore")  # below 1e-5 float32 warns: that is what is measured
    dt = jnp.float64 if x64 else jnp.float32
    tol = 1e-6 if x64 else 1e-5
    out = {}
    for name in ("ring2d", "aniso64"):
        d = load_npz(name)
        covs = np.einsum("kij,kj,klj->kil", d["eigvecs"], d["eigvals"], d["eigvecs"])
        mix = ss.analytic.GaussianMixture(
            jnp.asarray(d["weights"], dt), jnp.asarray(d["means"], dt), jnp.asarray(covs, dt)
        )
        sde = ss.VPSDE()
        score = ss.analytic.marginal_score(mix, sde)
        x = jnp.asarray(np.asarray(mix.sample(jr.key(1), 64), np.float64), dt)
        for t_eps in T_EPS:
            r = ss.log_likelihood(
                sde, score, x, divergence=ss.ExactDivergence(), t_eps=t_eps, rtol=tol, atol=tol
            )
            exact = jax.vmap(mix.marginal(sde, jnp.asarray(t_eps, dt)).log_prob)(x)
            err = float(jnp.sqrt(jnp.mean((r.log_prob - exact) ** 2)))
            out[f"{name} t_eps={t_eps:g}"] = dict(rmse_nats=err, mean_nfe=float(jnp.mean(r.nfe)))
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
        print(
            f"{key:26s} float32 {a['rmse_nats']:.2e} nats ({a['mean_nfe']:.0f} NFE)   "
            f"float64 {b['rmse_nats']:.2e} nats ({b['mean_nfe']:.0f} NFE)"
        )
    path = os.path.join(HERE, "results", "likelihood_precision.json")
    with open(path, "w") as f:
        json.dump(dict(benchmark="likelihood_precision", results=results), f, indent=2)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
