"""Certified test-set bits/dim of a trained digits model: evaluations against today's default.

The default procedure (`scoresde nll`'s: `bits_per_dim` with Dopri5 at rtol = atol = 1e-5, one
Rademacher probe, one uniform dequantisation draw, every test image, t_eps = 1e-4, float32) is
run `--repeats` times with independent keys; the spread between passes gives its per-sample
noise and so the half-width of its (noise-only, uncertified) interval for the test set's own
mean, and the passes it would need for `--half-width`. Then `estimate_bits_per_dim(...,
half_width=h, population=False)` with `Hutchinson(k)` and `num_repeats=r` dequantisation draws
per sample for each `--configs k:r` plans and returns a certified interval (noise and solver
bias); a configuration whose noise alone exceeds h is refused (and recorded as such). Reported: total score evaluations (NFE; one
evaluation with its k Jacobian-vector products counts as one, as everywhere in the library),
wall seconds (compile included, so the first row pays most of it), the plan, the estimate.

Train the model first (`scoresde train --dataset digits --out runs/digits`, the 17-level
defaults, about 11 minutes on 2 cores), then run:
`python benchmarks/likelihood_certified.py runs/digits/checkpoint.eqx [--half-width 0.01]`.
`--first-step` adds the study behind the planned cheap levels' first step (T/1024 instead of
the default 64th of the interval). Prints a table and writes
`benchmarks/results/likelihood_certified.json` (`--name`).
"""

import argparse
import json
import math
import sys
import time

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import RESULTS, metadata, write  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._cli import nll  # noqa: E402
from scoresde._training.recipes import load_model  # noqa: E402

T_EPS = 1e-4
PLAN_COLUMNS = ("rtol", "pilot_mean_nfe", "sd_difference_nats", "num_tight", "nfe_to_pay")


def default_passes(model, k, common, args) -> dict:
    """`--repeats` passes of the default procedure: bits/dim, NFE and per-sample noise."""
    n = k.shape[0]
    passes, pass_nfe, walls = [], [], []
    for r in range(args.repeats):
        start = time.perf_counter()
        res = ss.bits_per_dim(model.sde, model, k, key=jr.key(100 + r), **common)
        passes.append(jax.block_until_ready(res.bpd))
        walls.append(time.perf_counter() - start)
        pass_nfe.append(int(jnp.sum(res.nfe)))
    # Per-sample noise variance (probes and dequantisation) from the spread over passes.
    noise_var = float(jnp.mean(jnp.var(jnp.stack(passes), axis=0, ddof=1)))
    half_one = 1.96 * math.sqrt(noise_var / n)
    needed = max(1, math.ceil((half_one / args.half_width) ** 2))
    default = dict(
        bpd_per_pass=[float(jnp.mean(p)) for p in passes],
        nfe_per_pass=pass_nfe,
        mean_nfe=pass_nfe[0] / n,
        wall_s=walls,
        noise_sd_per_sample=math.sqrt(noise_var),
        half_width_one_pass=half_one,
        passes_for_half_width=needed,
        nfe_for_half_width=needed * pass_nfe[0],
    )
    print(
        f"default procedure: {default['bpd_per_pass']} bits/dim, {pass_nfe[0]} NFE a pass "
        f"(mean {default['mean_nfe']:.1f}), noise half-width of one pass {half_one:.4f}, "
        f"{needed} passes for +-{args.half_width}; wall {[round(w, 1) for w in walls]} s",
        flush=True,
    )
    return default


def first_step_study(model, k, common) -> list:
    """Cheap solves of 32 images at rtol = atol 1e-2 and 1e-3 with the default first step
    (a 64th of the interval) and with T/1024, against Dopri5 at 1e-6 with the same probes."""
    k = k[:32]
    kw = dict(common, key=jr.key(3), divergence=ss.Hutchinson(4))
    ref = ss.bits_per_dim(model.sde, model, k, rtol=1e-6, atol=1e-6, max_steps=16384, **kw)
    scale = math.prod(k.shape[1:]) * math.log(2)
    rows = []
    for tol in (1e-2, 1e-3):
        for dt0 in (None, model.sde.T / 1024):
            r = ss.bits_per_dim(model.sde, model, k, rtol=tol, atol=tol, dt0=dt0, **kw)
            d = (r.bpd - ref.bpd) * scale  # nats per image, cheap minus tight
            row = dict(rtol=tol, dt0=dt0, mean_nfe=float(jnp.mean(r.nfe)),
                       mean_nats=float(jnp.mean(d)), sd_nats=float(jnp.std(d, ddof=1)),
                       max_nats=float(jnp.max(jnp.abs(d))))  # fmt: skip
            rows.append(row)
            print("first step:", row, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("--half-width", type=float, default=0.01, help="bits/dim, 95 %%")
    parser.add_argument(
        "--configs",
        nargs="*",
        default=["1:1", "4:1", "4:2", "4:3"],
        help="PROBES:DRAWS[:a], Rademacher probes and dequantisation draws per sample (a: "
        "antithetic pairs)",
    )
    parser.add_argument(
        "--tight",
        default=None,
        help="SOLVER:TOL for the tight level (e.g. Dopri5:1e-6; default: the library's)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="passes of the default")
    parser.add_argument("--num", type=int, default=297)
    parser.add_argument("--name", default="likelihood_certified")
    parser.add_argument(
        "--reuse-default",
        action="store_true",
        help="take the default passes from results/likelihood_certified.json",
    )
    parser.add_argument(
        "--first-step", action="store_true", help="also the first-step study (32 images)"
    )
    args = parser.parse_args()
    model, config = load_model(args.checkpoint)
    if config.dataset != "digits":
        raise SystemExit("a digits checkpoint is needed")
    k = nll.held_out(config, args.num, jr.key(0))
    n = k.shape[0]
    common = dict(levels=config.levels, t_eps=T_EPS)

    if args.reuse_default:
        previous = RESULTS / "likelihood_certified.json"  # the default run's
        default = json.loads(previous.read_text())["results"]["default"]
    else:
        default = default_passes(model, k, common, args)
        write(args.name, dict(metadata(), results=dict(default=default)))  # reusable at once
    pass_nfe, needed = default["nfe_per_pass"][0], default["passes_for_half_width"]
    tight = None
    if args.tight:
        solver, tol = args.tight.split(":")
        tight = dict(solver=getattr(dfx, solver)(), rtol=float(tol), atol=float(tol),
                     stepsize_controller=None, dt0=None, max_steps=16384)  # fmt: skip
    study = first_step_study(model, k, common) if args.first_step else None
    rows = []
    for config_text in args.configs:
        probes, draws, *anti = config_text.split(":")
        probes, draws, how = int(probes), int(draws), "antithetic" if anti else "uniform"
        start = time.perf_counter()
        try:
            est = ss.estimate_bits_per_dim(
                model.sde,
                model,
                k,
                key=jr.key(7),
                half_width=args.half_width,
                population=False,
                divergence=ss.Hutchinson(probes),
                num_repeats=draws,
                dequantization=how,
                tight=tight,
                **common,
            )
        except ValueError as err:
            print(f"Hutchinson({probes}), {draws} {how} draws: {err}", flush=True)
            rows.append(dict(probes=probes, draws=draws, dequantization=how, refused=str(err)))
            continue
        jax.block_until_ready(est.bpd)
        wall = time.perf_counter() - start
        total = int(est.nats.total_nfe)
        row = dict(
            probes=probes,
            draws=draws,
            dequantization=how,
            tight=args.tight,
            bpd=float(est.bpd),
            low=float(est.low),
            high=float(est.high),
            stderr_probes=float(est.stderr_probes),
            stderr_bias=float(est.stderr_bias),
            bias_correction_bpd=float(-est.nats.bias_correction / (est.num_dims * math.log(2))),
            cheap_tol=est.nats.cheap_tol,
            plan=[dict(zip(PLAN_COLUMNS, r, strict=True)) for r in est.nats.plan],
            num_tight=int(est.nats.tight_indices.shape[0]),
            cheap_mean_nfe=float(jnp.mean(est.nats.nfe)),
            tight_mean_nfe=float(jnp.mean(est.nats.tight_nfe)),
            total_nfe=total,
            wall_s=wall,
            fewer_than_one_pass=pass_nfe / total,
            fewer_than_passes_for_half_width=needed * pass_nfe / total,
        )
        rows.append(row)
        for r in row["plan"]:
            print("   pilot:", r, flush=True)
        print(
            f"Hutchinson({probes}), {draws} {how} draws: {row['bpd']:.4f} "
            f"[{row['low']:.4f}, {row['high']:.4f}] "
            f"(noise +-{1.96 * row['stderr_probes']:.4f}, "
            f"bias +-{1.96 * row['stderr_bias']:.4f}, "
            f"correction {row['bias_correction_bpd']:+.4f}); plan tol {row['cheap_tol']:g}, "
            f"tight subset {row['num_tight']}; cheap/tight mean NFE {row['cheap_mean_nfe']:.1f}/"
            f"{row['tight_mean_nfe']:.1f}; total NFE {total}: {row['fewer_than_one_pass']:.2f}x "
            f"fewer than one default pass, {row['fewer_than_passes_for_half_width']:.2f}x fewer "
            f"than {needed} passes; wall {wall:.1f} s",
            flush=True,
        )
    payload = metadata(
        checkpoint=args.checkpoint,
        levels=config.levels,
        num=n,
        t_eps=T_EPS,
        half_width=args.half_width,
        configs=args.configs,
        repeats=args.repeats,
    )
    payload["results"] = dict(default=default, certified=rows, first_step=study)
    write(args.name, payload)


if __name__ == "__main__":
    main()
