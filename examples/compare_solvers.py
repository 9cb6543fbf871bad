"""Compare ODE and SDE samplers across NFE budgets on a problem whose score is exact.

The data is the 8-mode ring mixture of `ss.analytic.ring_mixture()` (modes of std 0.1 on the unit
circle, weights 0.05 to 0.2) diffused by the VP SDE; `ss.analytic.marginal_score` gives its score
at every noise level, so every error below is the sampler's own. Each sampler is measured by

- `rmse`: for ODE samplers, the root-mean-square distance to a tight-tolerance solution of the
  same probability-flow ODE from the same latents `x_T` (a pathwise error: no sampling noise);
- `sliced W2`: the sliced Wasserstein distance to exact samples of the data (ODE and SDE alike;
  two exact sample sets are this far apart too, printed as the noise floor);
- `mode err`: the largest error of the fraction of samples in each mode;
- `nfe`: score evaluations per sample, as counted by the sampler (`result.nfe`), not as planned.

It prints a table and writes `compare_solvers.png` (work-precision plots: error against NFE,
log-log) and `compare_solvers.json` to `--out`:

    python examples/compare_solvers.py                 # a few minutes on 2 CPU cores (compiling)
    python examples/compare_solvers.py --smoke         # one budget, 256 samples: a quick check
"""

import argparse
import json
import pathlib

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr

import scoresde as ss

# Fixed-step samplers: (name, sampler, arguments, score evaluations per step). A budget of
# `nfe` evaluations gives `nfe // per_step` steps; the table reports the exact count.
FIXED_STEP = [
    # Probability-flow ODE: deterministic given x_T. "log_snr": steps uniform in log-SNR;
    # "clipped_log_snr": the few-step grid for exponential integrators.
    ("Euler", ss.sample_ode, dict(solver=dfx.Euler(), grid="log_snr"), 1),
    ("Heun", ss.sample_ode, dict(solver=dfx.Heun(), grid="log_snr"), 2),
    ("DPM-Solver++ 2M", ss.sample_ode, dict(solver=ss.DPMSolverPP2M(), grid="clipped_log_snr"), 1),
    ("UniPC-3", ss.sample_ode, dict(solver=ss.UniPC(order=3), grid="clipped_log_snr"), 1),
    # Reverse-time SDE: random, so compared in distribution only (+1 NFE: final denoising).
    ("Euler-Maruyama", ss.sample_sde, dict(solver=dfx.Euler(), grid="log_snr"), 1),
    ("ShARK", ss.sample_sde, dict(solver=dfx.ShARK(), grid="log_snr"), 2),
    ("PC (RD + Langevin)", ss.sample_pc, dict(predictor=ss.ReverseDiffusion(),
     corrector=ss.LangevinCorrector(0.01, 1), grid="log_snr"), 2),
]  # fmt: skip


def runs(budgets, tolerances):
    """(name, sampler, keyword arguments) for every sampler and budget."""
    for name, sampler, kwargs, per_step in FIXED_STEP:
        for nfe in budgets:
            yield name, sampler, dict(kwargs, steps=max(nfe // per_step, 1))
    # Adaptive Tsit5, swept over tolerances. Tolerances passed as arrays are traced, so one
    # compilation serves every tolerance (and the reference).
    for tol in tolerances:
        tol = jnp.asarray(tol)
        yield "Tsit5 adaptive", ss.sample_ode, dict(solver=dfx.Tsit5(), rtol=tol, atol=tol)


def main(num=2048, budgets=(10, 20, 40, 80, 160), tolerances=(1e-2, 1e-3, 1e-4, 1e-5), seed=0,
         out="scoresde-out"):  # fmt: skip
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = ss.analytic.ring_mixture()
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(data, sde)
    key_T, key_sample, key_exact, key_sw = jr.split(jr.key(seed), 4)
    shape = (num, 2)
    x_T = sde.prior_sample(key_T, shape)  # the same latents for every sampler

    # Reference: the same ODE from the same latents, adaptive Tsit5 at a tight tolerance.
    tight = jnp.asarray(1e-6)
    ref = ss.sample_ode(sde, score, key=key_sample, shape=shape, x_T=x_T, rtol=tight, atol=tight)
    exact = data.sample(key_exact, num)
    floor = ss.sliced_wasserstein(data.sample(jr.fold_in(key_exact, 1), num), exact, key=key_sw)

    def measure(name, x, nfe, pathwise):
        return dict(
            sampler=name,
            nfe=float(jnp.mean(nfe)),
            rmse=float(jnp.sqrt(jnp.mean(jnp.sum((x - ref.x) ** 2, axis=-1)))) if pathwise else None,
            sliced_w2=ss.sliced_wasserstein(x, exact, key=key_sw),
            mode_err=ss.mode_weight_error(data, x),
        )  # fmt: skip

    rows = [measure("reference (Tsit5, tol 1e-6)", ref.x, ref.nfe, True)]
    for name, sample, kwargs in runs(budgets, tolerances):
        result = sample(sde, score, key=key_sample, shape=shape, x_T=x_T, **kwargs)
        rows.append(measure(name, result.x, result.nfe, pathwise=sample is ss.sample_ode))

    print(f"{num} samples of the 8-mode ring mixture, VP SDE, exact score")
    print(f"{'sampler':<28}{'nfe':>7}{'rmse':>10}{'sliced W2':>11}{'mode err':>10}")
    for r in rows:
        rmse = "-" if r["rmse"] is None else f"{r['rmse']:.2e}"
        print(f"{r['sampler']:<28}{r['nfe']:>7.0f}{rmse:>10}{r['sliced_w2']:>11.4f}"
              f"{r['mode_err']:>10.4f}")  # fmt: skip
    print(f"{'exact vs exact (noise floor)':<28}{'':>7}{'':>10}{floor:>11.4f}")

    report = dict(num=num, noise_floor_sliced_w2=floor, rows=rows)
    (out / "compare_solvers.json").write_text(json.dumps(report, indent=2))
    plot(rows[1:], floor, out / "compare_solvers.png")
    print(f"wrote {out / 'compare_solvers.json'} and {out / 'compare_solvers.png'}")
    return report


def plot(rows, floor, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_ode, ax_sw) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(dict.fromkeys(r["sampler"] for r in rows))
    for i, name in enumerate(names):
        mine = sorted((r for r in rows if r["sampler"] == name), key=lambda r: r["nfe"])
        nfe = [r["nfe"] for r in mine]
        style = dict(color=f"C{i}", marker="o", label=name)
        if mine[0]["rmse"] is not None:
            ax_ode.loglog(nfe, [r["rmse"] for r in mine], **style)
        else:
            style["linestyle"] = "--"
        ax_sw.loglog(nfe, [r["sliced_w2"] for r in mine], **style)
    ax_sw.axhline(floor, color="gray", linewidth=1, label="exact vs exact")
    ax_ode.set(xlabel="NFE per sample", ylabel="RMSE to the reference ODE solution",
               title="ODE samplers: pathwise error")  # fmt: skip
    ax_sw.set(xlabel="NFE per sample", ylabel="sliced W2 to exact samples",
              title="all samplers: distance in distribution (SDE dashed)")  # fmt: skip
    for ax in (ax_ode, ax_sw):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a fast end-to-end check")
    parser.add_argument("--out", default="scoresde-out", help="folder for the PNG and JSON")
    args = parser.parse_args()
    if args.smoke:
        main(num=256, budgets=(8,), tolerances=(1e-2,), out=args.out)
    else:
        main(out=args.out)
