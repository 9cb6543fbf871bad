"""The `scoresde` command line: `scoresde demo`, `scoresde train`, ...

The commands live in `scoresde._cli` (one module each, with `add_parser` and `run`); this module
assembles the top-level parser and turns usage errors into one-line messages. Only the command
modules turn strings into objects: flags are parsed into frozen dataclasses, then library
functions are called with explicit arguments.
"""

import argparse
import sys

from ._cli import (
    bench as bench,
    demo as demo,
    inpaint as inpaint,
    nll as nll,
    sample as sample,
    train as train,
    tune as tune,
)
from ._cli.common import UsageError


def build_parser() -> argparse.ArgumentParser:
    """The `scoresde` parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="scoresde",
        description="Score-based generative modelling with SDEs on JAX.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (demo, train, sample, tune, inpaint, nll, bench):
        command.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    """Run the `scoresde` command line on `argv` (default `sys.argv[1:]`); the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, FileNotFoundError, ValueError) as e:
        print(f"scoresde {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
