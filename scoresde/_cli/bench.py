"""`scoresde bench`: the argparse front end of `run_bench`."""

import pathlib

from .._bench import problems as problems, solvers as solvers
from .._bench.suite import BenchConfig, run_bench
from .common import HelpFormatter, add_out, check_out


def add_parser(subparsers):
    """Register `bench` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "bench",
        help="compare samplers across NFE budgets on problems with known answers",
        description="Run the solver-comparison benchmark: every sampler of an explicit table "
        "on analytic Gaussian mixtures and trained MLP / U-Net models (trained once with "
        "`scoresde train`, cached). Writes bench.json, bench.md and work-precision PNGs to "
        f"--out. Problems: {', '.join(problems.PROBLEMS)}. Samplers: "
        f"{'; '.join(s.name for s in solvers.SAMPLERS)}.",
        formatter_class=HelpFormatter,
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
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--cache", type=pathlib.Path,
                   help="folder for trained checkpoints (default ~/.cache/scoresde/bench)")  # fmt: skip
    add_out(p, "bench")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Execute `scoresde bench` from parsed arguments; returns the exit status."""
    check_out(args.out)
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
