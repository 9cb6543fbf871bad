"""`sample_smc`'s default twist against exact answers: mode weights and ln p(y).

Run: `python benchmarks/smc_default.py [--keys 6] [--steps 100]` (VP SDE, float64, CPU).
Problems (exact posterior `prior.condition(m)`, exact ln p(y) `prior.log_evidence(m)`):

- `mode6`: a two-component mixture in d = 6 (weights 0.35 / 0.65, means +-(1, 1, 0.5, 0.5, 0, 0),
  covariance 0.3 I + 0.2 u u^T), observed through a fixed 2 x 6 A with noise std 0.3 at y = A x*,
  x* = -0.1 (1, 1, 0.5, 0.5, 0, 0): posterior mode weights 0.62 / 0.38, ln p(y) = -4.11.
- `howto2d`: the inverse-problems how-to's 2-D problem (Gaussian prior, correlation 0.95, observe
  coordinate 0 = 1.5 with noise std 0.1), here on the VP SDE: no modes, ln p(y) only.

Twists: the old default `TweedieTwist()`, the new default for a `LinearMeasurement`
(`MomentTwist()`), the variance-inflated `TweedieTwist(data_var=1.0)` (closed form), and the new
default for a general likelihood (the same measurement wrapped as an `AbstractMeasurement`
without A: `TweedieTwist(data_var=1.0)` by its CG second-order inflation). Each cell: mean (and
max) over `keys` independent filters of the largest mode-weight error and of |ln p-hat - ln p|,
and the mean smallest ESS as a fraction of the particles.

Writes `benchmarks/results/smc_default.json` (`--out` to change). The ln p(y) error of the good
twists levels off near 0.05 on `mode6` at 100 steps: the evidence of the Euler-Maruyama chain,
not of the SDE; `--problems mode6 --twists 1 --steps 400 --particles 1024 4096 --out
smc_default_steps400.json` shows the floor falling with the steps.
"""

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import RESULTS

import scoresde as ss

jax.config.update("jax_enable_x64", True)
SDE = ss.VPSDE()


class Wrapped(ss.AbstractMeasurement):
    """A `LinearMeasurement` seen only through its likelihood (no A): the general path."""

    inner: ss.LinearMeasurement

    def log_likelihood(self, x):
        return self.inner.log_likelihood(x)


def mode6():
    u = jnp.array([1.0, -1.0, 0.5, 0.0, 0.5, 1.0]) / jnp.sqrt(3.5)
    cov = 0.3 * jnp.eye(6) + 0.2 * jnp.outer(u, u)
    mu = jnp.array([1.0, 1.0, 0.5, 0.5, 0.0, 0.0])
    prior = ss.analytic.GaussianMixture(
        jnp.array([0.35, 0.65]), jnp.stack([-mu, mu]), jnp.stack([cov, cov])
    )
    A = jnp.array([[1.0, 0.0, 0.5, 0.0, -0.3, 0.2], [0.0, 0.6, 0.0, 1.0, 0.0, -0.4]])
    m = ss.LinearMeasurement(A, A @ (-0.1 * mu), 0.3)  # posterior weights 0.62 / 0.38
    return prior, m


def howto2d():
    prior = ss.analytic.Gaussian(jnp.zeros(2), jnp.array([[1.0, 0.95], [0.95, 1.0]]))
    m = ss.LinearMeasurement.from_mask(jnp.array([True, False]), jnp.array([1.5, 0.0]), 0.1)
    return prior, m


TWISTS = {
    "TweedieTwist() (old default)": lambda m: (m, ss.TweedieTwist()),
    "MomentTwist() (new default, linear)": lambda m: (m, None),
    "TweedieTwist(data_var=1) closed form": lambda m: (m, ss.TweedieTwist(data_var=1.0)),
    "TweedieTwist(data_var=1) CG (new default, general)": lambda m: (Wrapped(m), None),
}


def run(prior, m, twist_fn, n, keys, steps):
    post = prior.condition(m)
    mm, twist = twist_fn(m)
    score = ss.analytic.marginal_score(prior, SDE)
    p_T = prior.marginal(SDE, SDE.T)
    d = m.dim_x
    mixture = isinstance(post, ss.analytic.GaussianMixture)

    @jax.jit
    def many(ks):
        def one(k):
            x_T = p_T.sample(jr.fold_in(k, 1), n)
            r = ss.sample_smc(
                SDE, score, mm, key=k, shape=(n, d), steps=steps, twist=twist, x_T=x_T
            )
            if mixture:
                comp = jnp.argmax(jax.vmap(post.component_log_probs)(r.x), axis=1)
                w = jnp.zeros(post.num_components).at[comp].add(jnp.exp(r.log_weights))
                mode_err = jnp.max(jnp.abs(w - post.weights))
            else:
                mode_err = jnp.nan
            return mode_err, r.log_evidence, r.min_ess

        return jax.vmap(one)(ks)

    mode_err, log_z, min_ess = (np.asarray(a) for a in many(jr.split(jr.key(0), keys)))
    z_err = np.abs(log_z - float(prior.log_evidence(m)))
    return {
        "mode_err_mean": float(np.mean(mode_err)),
        "mode_err_max": float(np.max(mode_err)),
        "log_evidence_err_mean": float(np.mean(z_err)),
        "log_evidence_err_max": float(np.max(z_err)),
        "min_ess_frac_mean": float(np.mean(min_ess) / n),
        "exact_log_evidence": float(prior.log_evidence(m)),
        "exact_mode_weights": [float(w) for w in post.weights] if mixture else None,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=6)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--particles", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--problems", nargs="+", default=["mode6", "howto2d"])
    ap.add_argument(
        "--twists",
        nargs="+",
        type=int,
        default=list(range(len(TWISTS))),
        help="indices into TWISTS (0 old default, 1 MomentTwist, 2 closed, 3 CG)",
    )
    ap.add_argument("--out", default="smc_default.json")
    args = ap.parse_args()
    rows = []
    print(
        f"{'problem':8} {'twist':52} {'N':>5} {'mode err mean/max':>18} "
        f"{'|dlnZ| mean/max':>18} {'minESS/N':>8}"
    )
    for pname in args.problems:
        prior, m = {"mode6": mode6, "howto2d": howto2d}[pname]()
        for i, (tname, twist_fn) in enumerate(TWISTS.items()):
            if i not in args.twists:
                continue
            for n in args.particles:
                r = run(prior, m, twist_fn, n, args.keys, args.steps)
                rows.append({"problem": pname, "twist": tname, "particles": n, **r})
                print(
                    f"{pname:8} {tname:52} {n:5d} "
                    f"{r['mode_err_mean']:8.3f}/{r['mode_err_max']:<9.3f} "
                    f"{r['log_evidence_err_mean']:8.3f}/{r['log_evidence_err_max']:<9.3f} "
                    f"{r['min_ess_frac_mean']:8.3f}",
                    flush=True,
                )
    out = {
        "command": "python benchmarks/smc_default.py " + " ".join(sys.argv[1:]),
        "sde": "VPSDE",
        "steps": args.steps,
        "keys": args.keys,
        "dtype": "float64",
        "backend": jax.default_backend(),
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS / args.out}")


if __name__ == "__main__":
    main()
