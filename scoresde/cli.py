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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scoresde",
        description="Score-based generative modelling with SDEs on JAX.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo(subparsers)
    _cli_train.add_parser(subparsers)
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
