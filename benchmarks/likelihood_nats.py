"""Error control in nats: NFE to reach a stated per-sample solver error, `nats_tol=` against the
default norm (RMS over x's entries and the mean delta at one rtol = atol).

Problems `ring2d`, `aniso64` (the shared benchmark mixtures) and `mix64` (a 2-component 64-D
mixture: means +-0.5 * ones, weights 0.3 / 0.7, diagonal variances log-spaced in [0.01, 1] and
reversed for the second component), VP SDE, t_eps = 1e-5, float64, `Hutchinson()` (one fixed
Rademacher probe per sample, from `jr.key(1)`), the analytic p_T as the prior, batch 64 data
samples from `jr.key(0)`. Solver error = `log_prob` minus that of a tight solve with the SAME
probes (Dopri8, rtol = atol = 1e-10). Reported per setting: mean and max NFE per sample, RMS and
max solver error (nats).

Run: `python benchmarks/likelihood_nats.py [--problems ...] [--batch 64]`. Prints a table and
writes `benchmarks/results/likelihood_nats.json`.
"""

import argparse
import sys

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import load_problem, metadata, mix64, write  # noqa: E402

import scoresde as ss  # noqa: E402

SDE = ss.VPSDE()
T_EPS = 1e-5


def problem(name):
    mix = mix64() if name == "mix64" else load_problem(name, jnp.float64)
    return mix, ss.analytic.marginal_score(mix, SDE)


def run(mix, score, x, **options):
    prior = mix.marginal(SDE, jnp.asarray(SDE.T, x.dtype)).log_prob
    return ss.log_likelihood(
        SDE, score, x, key=jr.key(1), t_eps=T_EPS, prior_log_prob=prior, **options
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--problems", nargs="+", default=["ring2d", "aniso64", "mix64"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--settings", nargs="+", default=None)
    args = parser.parse_args()
    results = {}
    for name in args.problems:
        mix, score = problem(name)
        x = mix.sample(jr.key(0), args.batch)
        ref = run(mix, score, x, solver=dfx.Dopri8(), rtol=1e-10, atol=1e-10, max_steps=100_000)
        rows = []
        for label, options in settings_list(args.settings):
            r = run(mix, score, x, **options)
            err = np.asarray(r.log_prob - ref.log_prob)
            row = dict(
                setting=label,
                mean_nfe=float(np.mean(r.nfe)),
                max_nfe=int(np.max(r.nfe)),
                rms_nats=float(np.sqrt(np.mean(err**2))),
                max_nats=float(np.max(np.abs(err))),
            )
            rows.append(row)
            print(
                f"{name:8s} {label:40s} NFE mean {row['mean_nfe']:6.1f} max {row['max_nfe']:4d}"
                f"  err RMS {row['rms_nats']:.2e} max {row['max_nats']:.2e}",
                flush=True,
            )
        results[name] = dict(reference_mean_nfe=float(np.mean(ref.nfe)), rows=rows)
    write(
        "likelihood_nats",
        dict(metadata(batch=args.batch, t_eps=T_EPS, dtype="float64"), results=results),
    )


def settings_list(which):
    out = [
        (f"rtol=atol={tol:g}", dict(rtol=tol, atol=tol)) for tol in (1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
    ]
    out += [(f"nats_tol={nt:g}", dict(nats_tol=nt)) for nt in (3e-2, 1e-2, 3e-3, 1e-3, 3e-4)]
    if which:
        out = [o for o in out if any(w in o[0] for w in which)]
    return out


if __name__ == "__main__":
    main()
