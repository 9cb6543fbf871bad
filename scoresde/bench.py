"""The solver-comparison benchmark of `scoresde bench`, from Python.

`scoresde.bench.run(...)` runs the same suite as the command (the same problems, samplers,
metrics and reference solutions) and returns its rows; see the command-line documentation for
the problems, samplers and metrics.
"""

import pathlib

from ._bench import problems as _problems, solvers as _solvers
from ._bench.suite import BenchConfig as _BenchConfig, run_bench as _run_bench

__all__ = ["PROBLEMS", "SAMPLERS", "run"]

PROBLEMS: tuple[str, ...] = tuple(_problems.PROBLEMS)
"""Names of the benchmark problems (`ring2d`, `aniso64`, `toy2d-mlp`, `digits-unet`)."""

SAMPLERS: tuple[str, ...] = tuple(s.name for s in _solvers.SAMPLERS)
"""Names of the samplers the benchmark compares (diffrax ODE and SDE solvers, exponential
integrators, predictor-corrector)."""


def run(
    problems=None,
    samplers=None,
    budgets=None,
    *,
    out=None,
    quick: bool = False,
    tolerances=None,
    num_samples: int | None = None,
    repeats: int | None = None,
    seed: int = 0,
    cache=None,
) -> list[dict]:
    """Run the benchmark and return one row per (problem, sampler, budget) run.

    **Arguments:**

    - `problems`, `samplers`: names from `PROBLEMS` and `SAMPLERS` (default: all, or the quick
      selection with `quick=True`).
    - `budgets`: NFE budgets of the fixed-step samplers (each takes as many steps as fit, one
      evaluation kept for the final denoising step); `tolerances`: rtol = atol of the adaptive
      ones.
    - `out`: a folder to write `bench.json`, `bench.md` and the work-precision PNGs to, as
      `scoresde bench --out` does; `None` writes nothing.
    - `quick`: the smoke-run selection and sizes of `scoresde bench --quick`.
    - `num_samples`, `repeats`, `seed`: samples per problem, timed repeats (the best is kept),
      the seed of every random draw. `cache`: the folder of trained checkpoints (default
      `~/.cache/scoresde/bench`).

    **Returns:** the rows of `bench.json`, each with its `problem` name added: `sampler`,
    `family`, `budget`, `setting`, `status` and, for `status == "ok"`, `nfe_mean`, `nfe_max`,
    `err_ref`, `sliced_w2`, `mmd2`, `mode_weight_error`, `wall_s`, `compile_s`.

    **Raises:** `ValueError` for an unknown problem or sampler name, or a bad budget.
    """

    def names(value):
        return None if value is None else ((value,) if isinstance(value, str) else tuple(value))

    payload = _run_bench(
        _BenchConfig(
            out=None if out is None else pathlib.Path(out),
            quick=quick,
            problems=names(problems),
            samplers=names(samplers),
            nfes=None if budgets is None else tuple(int(b) for b in budgets),
            tolerances=None if tolerances is None else tuple(float(t) for t in tolerances),
            num_samples=num_samples,
            repeats=repeats,
            seed=seed,
            cache=None if cache is None else pathlib.Path(cache),
        )
    )
    return [{"problem": p["name"], **row} for p in payload["problems"] for row in p["rows"]]
