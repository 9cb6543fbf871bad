"""The solver-comparison suite, by hand: `python benchmarks/suite.py [scoresde bench flags]`.

The same as `scoresde bench` (see `scoresde bench --help` and `scoresde/_bench/`), with the
output folder defaulting to `benchmarks/results/suite/` (quick runs: `.../suite_quick/`).
"""

import pathlib
import sys

from scoresde import cli

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--out" not in argv:
        name = "suite_quick" if "--quick" in argv else "suite"
        argv += ["--out", str(pathlib.Path(__file__).parent / "results" / name)]
    sys.exit(cli.main(["bench", *argv]))
