"""The `scoresde` command line: `scoresde demo`, `scoresde train`, ...

Only this module turns strings into objects: flags are parsed into frozen dataclasses, then
library functions are called with explicit arguments.
"""

import argparse
import pathlib
import sys

from . import _cli_train


def _add_demo(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="sample an analytic 2-D mixture with several solvers and compare them",
        description="Sample the 8-mode ring mixture (exact score, no training, no downloads) with "
        "several diffrax solvers; print a table and write demo.json and demo.png.",
    )
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("scoresde-out"),
        help="output folder (default: ./scoresde-out)",
    )
    p.add_argument("--num-samples", type=int, default=4096, help="samples per solver")
    p.add_argument("--quick", action="store_true", help="fewer steps and samples (for CI)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    from ._demo import DemoConfig, run_demo

    if args.num_samples < 2:
        raise _UsageError(f"--num-samples must be >= 2; got {args.num_samples}")
    num = min(args.num_samples, 1024) if args.quick else args.num_samples
    run_demo(DemoConfig(out=args.out, num_samples=num, quick=args.quick, seed=args.seed))
    return 0


class _UsageError(Exception):
    pass


def _load_model(path: pathlib.Path):
    """The trained model of a `scoresde train` checkpoint, and its training config."""

    from ._checkpoint import load, read_sidecar

    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    config = _cli_train.TrainConfig(**read_sidecar(path)["hyperparameters"])
    return load(path, _cli_train.skeleton_from_config(config)), config


def _data_shape(config):
    return (1, 8, 8) if config.dataset == "digits" else (2,)


SAMPLERS = ("ode", "sde", "dpm++2m", "pc")


def _add_sample(subparsers):
    p = subparsers.add_parser(
        "sample",
        help="draw samples from a trained checkpoint",
        description="Draw samples from a checkpoint written by `scoresde train`; writes "
        "samples.npy and samples.png to --out.",
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx")
    p.add_argument("--num", type=int, default=1024, help="number of samples")
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="dpm++2m",
        help="ode: adaptive Tsit5; sde: Euler-Maruyama; dpm++2m: DPM-Solver++ 2M; "
        "pc: reverse diffusion + Langevin corrector",
    )
    p.add_argument("--steps", type=int, default=50, help="steps of fixed-step samplers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("scoresde-out"))
    p.set_defaults(func=_run_sample)


def _draw(model, config, sampler, num, steps, key):
    import diffrax as dfx

    from . import _pc, _sample, _solver as _solvers

    shape = (num, *_data_shape(config))
    sde = model.sde
    if sampler == "ode":
        return _sample.sample_ode(sde, model, key=key, shape=shape, solver=dfx.Tsit5())
    if sampler == "sde":
        return _sample.sample_sde(sde, model, key=key, shape=shape, steps=steps, grid="log_snr")
    if sampler == "dpm++2m":
        return _sample.sample_ode(
            sde,
            model,
            key=key,
            shape=shape,
            steps=steps,
            solver=_solvers.DPMSolverPP2M(),
            grid="log_snr",
        )
    return _pc.sample_pc(sde, model, key=key, shape=shape, steps=steps)


def _run_sample(args) -> int:
    import jax.random as jr
    import numpy as np

    if args.num < 1 or args.steps < 1:
        raise _UsageError("--num and --steps must be >= 1")
    model, config = _load_model(args.checkpoint)
    result = _draw(model, config, args.sampler, args.num, args.steps, jr.key(args.seed))
    args.out.mkdir(parents=True, exist_ok=True)
    x = np.asarray(result.x)
    np.save(args.out / "samples.npy", x)
    _plot_samples(x, args.out / "samples.png")
    print(
        f"{args.num} samples ({args.sampler}, mean NFE {float(np.mean(result.nfe)):.0f}) -> "
        f"{args.out / 'samples.npy'}, {args.out / 'samples.png'}"
    )
    return 0


def _plot_samples(x, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    import numpy as np

    if x.ndim == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
        ax.set_aspect("equal")
    else:
        n = min(64, x.shape[0])
        cols = 8
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                ax.imshow(np.clip(x[i, 0], -1, 1), cmap="gray", vmin=-1, vmax=1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _add_nll(subparsers):
    p = subparsers.add_parser(
        "nll",
        help="negative log-likelihood (2-D data) or bits/dim (digits) under a checkpoint",
        description="Evaluate a checkpoint's likelihood on held-out data by the PF-ODE: nats per "
        "sample for 2-D toy sets; bits/dim for the 8-bit digits (8 bits mapped to [-1, 1], uniform "
        "dequantisation). Writes nll.json to --out.",
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx")
    p.add_argument("--num", type=int, default=256, help="number of held-out samples")
    p.add_argument("--divergence", choices=("exact", "hutchinson"), default="exact")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("scoresde-out"))
    p.set_defaults(func=_run_nll)


def _run_nll(args) -> int:
    import json

    import jax.numpy as jnp
    import jax.random as jr

    from . import _data, _divergence, _likelihood

    if args.num < 1:
        raise _UsageError(f"--num must be >= 1; got {args.num}")
    model, config = _load_model(args.checkpoint)
    key = jr.key(args.seed)
    divergence = (
        _divergence.ExactDivergence() if args.divergence == "exact" else _divergence.Hutchinson()
    )
    if config.dataset == "digits":
        k = jnp.asarray(_data.load_digits().test[: args.num])
        r = _likelihood.bits_per_dim(model.sde, model, k, key=key, divergence=divergence)
        report = dict(
            metric="bits_per_dim",
            value=float(jnp.mean(r.bpd)),
            stderr=float(jnp.std(r.bpd) / jnp.sqrt(r.bpd.shape[0])),
        )
    else:
        x = _cli_train.TOY_DATASETS[config.dataset](jr.fold_in(key, 7), args.num)
        r = _likelihood.log_likelihood(model.sde, model, x, key=key, divergence=divergence)
        nll = -r.log_prob
        report = dict(
            metric="nll_nats",
            value=float(jnp.mean(nll)),
            stderr=float(jnp.std(nll) / jnp.sqrt(nll.shape[0])),
        )
    report.update(
        checkpoint=str(args.checkpoint),
        dataset=config.dataset,
        num=args.num,
        divergence=args.divergence,
        mean_nfe=float(jnp.mean(r.nfe)),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nll.json").write_text(json.dumps(report, indent=2))
    print(
        f"{report['metric']} = {report['value']:.4f} +- {report['stderr']:.4f} "
        f"({args.num} held-out samples of {config.dataset}) -> {args.out / 'nll.json'}"
    )
    return 0


def _add_bench(subparsers):
    from ._bench import problems, solvers

    p = subparsers.add_parser(
        "bench",
        help="compare samplers across NFE budgets on problems with known answers",
        description="Run the solver-comparison benchmark: every sampler of an explicit table "
        "on analytic Gaussian mixtures and trained MLP / U-Net models (trained once with "
        "`scoresde train`, cached). Writes bench.json, bench.md and work-precision PNGs to "
        f"--out. Problems: {', '.join(problems.PROBLEMS)}. Samplers: "
        f"{'; '.join(s.name for s in solvers.SAMPLERS)}.",
    )
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run: problems {', '.join(problems.QUICK_PROBLEMS)}, "
                   f"{len(solvers.QUICK_SAMPLERS)} samplers, NFE {list(solvers.QUICK_NFES)}, "
                   "512 samples")  # fmt: skip
    p.add_argument("--problems", nargs="+", metavar="NAME", help="problems to run")
    p.add_argument("--samplers", nargs="+", metavar="NAME",
                   help="samplers to run (quote names with spaces)")  # fmt: skip
    p.add_argument("--nfes", nargs="+", type=int, metavar="N",
                   help="NFE budgets of fixed-step samplers")  # fmt: skip
    p.add_argument("--tolerances", nargs="+", type=float, metavar="TOL",
                   help="rtol = atol of adaptive ODE solvers")  # fmt: skip
    p.add_argument("--num-samples", type=int, help="samples per problem (default: per problem)")
    p.add_argument("--repeats", type=int, help="timed repeats per run (best is kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=pathlib.Path,
                   help="folder for trained checkpoints (default ~/.cache/scoresde/bench)")  # fmt: skip
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("scoresde-out/bench"))
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    from ._bench import BenchConfig, run_bench

    payload = run_bench(
        BenchConfig(
            out=args.out,
            quick=args.quick,
            problems=tuple(args.problems) if args.problems else None,
            samplers=tuple(args.samplers) if args.samplers else None,
            nfes=tuple(args.nfes) if args.nfes else None,
            tolerances=tuple(args.tolerances) if args.tolerances else None,
            num_samples=args.num_samples,
            repeats=args.repeats,
            seed=args.seed,
            cache=args.cache,
        )
    )
    print((args.out / "bench.md").read_text())
    rows = sum(len(p["rows"]) for p in payload["problems"])
    print(
        f"{rows} runs on {len(payload['problems'])} problems in "
        f"{payload['total_seconds']:.0f} s -> {args.out}/bench.json, bench.md, "
        "work_precision_*.png"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scoresde",
        description="Score-based generative modelling with SDEs on JAX.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(subparsers)
    _cli_train.add_parser(subparsers)
    _add_sample(subparsers)
    _add_nll(subparsers)
    _add_bench(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (_UsageError, FileNotFoundError, ValueError) as e:
        print(f"scoresde {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
