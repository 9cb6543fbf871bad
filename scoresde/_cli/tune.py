"""`scoresde tune`: the time grid (and, by default, the solver) for a budget of network
evaluations, tuned for a `scoresde train` checkpoint; written as `TimeGrid` JSON for
`scoresde sample --grid`."""

import math
import pathlib

import jax.random as jr

from .._solver import DDIM, DPMSolver2, DPMSolverPP2M, DPMSolverPP3M, EDMHeun, UniPC
from .._training.recipes import data_shape, load_model, recipe_score
from .._tuning.time_grid import TimeGrid
from .._tuning.tune_grid import solver_name, split_pilot, tune_grid
from .._tuning.tune_sampler import steps_for_budget, tune_sampler
from .common import HelpFormatter, UsageError, add_no_progress, library_warnings_as_notes, note

# The solvers `--solver` names (`auto`: every one of `tune_sampler.default_candidates()`).
SOLVERS = {
    "unipc": UniPC,
    "dpm++2m": DPMSolverPP2M,
    "dpm++3m": DPMSolverPP3M,
    "ddim": DDIM,
    "dpm2": DPMSolver2,
    "edm-heun": EDMHeun,
}
DEFAULT_OUT = pathlib.Path("grid.json")


def add_parser(subparsers):
    """Register `tune` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "tune",
        help="tune the time grid (and solver) of a checkpoint for a budget of evaluations",
        description="Tune the time grid of a fixed-step probability-flow solver for a "
        "checkpoint written by `scoresde train` and a budget of --nfe network evaluations: "
        "minimise the end-point error against a tight solve from the same latents on a pilot "
        "batch (a quarter of it held out to choose between the tuned grid and the named "
        "ones). --solver auto tunes every candidate solver at the most steps the budget "
        "affords and prints the table; a named solver tunes that one. The winner's grid is "
        "written as JSON to --out; sample with it by `scoresde sample CHECKPOINT --grid FILE`.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx")
    p.add_argument(
        "--nfe", type=int, required=True, help="the budget: network evaluations per sample"
    )
    p.add_argument(
        "--solver",
        choices=(*SOLVERS, "auto"),
        default="auto",
        help="unipc: UniPC (order 3); dpm++2m, dpm++3m: DPM-Solver++; ddim; dpm2: "
        "DPM-Solver-2; edm-heun: EDM's Heun; auto: every candidate (also UniPC of order 2), "
        "the smallest held-out error wins",
    )
    p.add_argument(
        "--pilot",
        type=int,
        default=256,
        help="pilot latents (a quarter held out): each iteration solves them all",
    )
    p.add_argument(
        "--max-iterations", type=int, default=MAX_ITERATIONS, help="L-BFGS iterations per grid"
    )
    p.add_argument(
        "--fit-size",
        type=int,
        default=FIT_SIZE,
        help="pilot latents in each iteration's gradient (the rest join the held-out check); "
        "an iteration's cost is proportional to it",
    )
    p.add_argument(
        "--network-times",
        action="store_true",
        help="also tune the time at which the network is asked at each step (decoupled "
        "times; about twice the tuning time), kept where the held-out latents gain",
    )
    p.add_argument(
        "--network-scales",
        action="store_true",
        help="also tune a scale of the network's output at each step, jointly with the network "
        "times; kept where the held-out latents gain",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the pilot latents")
    p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="the grid's JSON file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_no_progress(p)
    p.set_defaults(func=run)
    return p


# A network's tuning is priced by its gradient: each L-BFGS iteration differentiates the solver's
# network evaluations on every fitting latent. Measured on the digits U-Net, UniPC at 10 NFE,
# pilot 256, quiet 2-core CPU (`python benchmarks/tuning_cost.py`): all 192 fitting latents and
# 200 iterations took 404 s for a test RMS of 0.00748 [0.00668, 0.00845]; 64 latents and 30
# iterations took 119 s for 0.00736 [0.00661, 0.00818]. The library's `tune_grid` keeps every
# latent and 200 iterations: on the 64-D mixture aniso64 a fit of 64 latents overfits.
FIT_SIZE = 64
MAX_ITERATIONS = 30


def check_out_file(path, overwrite: bool) -> pathlib.Path:
    """The `--out` file, its folder created: a `UsageError` for a folder, or an existing file
    without `--overwrite`, before any computation."""
    path = pathlib.Path(path)
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; pass a file name (e.g. {path / 'grid.json'})")
    if path.exists() and not overwrite:
        raise UsageError(f"--out {path} exists; pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot create its folder ({e.strerror or e})") from None
    return path


def _check_flags(args):
    if args.nfe < 1:
        raise UsageError(f"--nfe must be >= 1; got {args.nfe}")
    if args.pilot < 2:
        raise UsageError(f"--pilot must be >= 2 (some latents to fit, some held out); got "
                         f"{args.pilot}")  # fmt: skip
    if args.max_iterations < 0:
        raise UsageError(f"--max-iterations must be >= 0; got {args.max_iterations}")
    if args.fit_size < 1:
        raise UsageError(f"--fit-size must be >= 1; got {args.fit_size}")
    if args.solver != "auto":
        solver = SOLVERS[args.solver]()
        steps = steps_for_budget(solver, args.nfe)
        if steps < 1:
            raise UsageError(
                f"--solver {args.solver} costs {solver.evals_at_init} + "
                f"{solver.evals_per_step} per step evaluations; --nfe {args.nfe} affords no step"
            )
        return solver, steps
    return None, None


def _rms(value) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "-"


def print_table(rows):
    """The candidates of `tune_sampler`, best first: one line each."""
    print(f"{'solver':<15} {'steps':>5} {'NFE':>4} {'tuned RMS':>10}  "
          f"{'best named grid':<16} {'its RMS':>9} {'seconds':>8}")  # fmt: skip
    for row in rows:
        named = row["best_named_grid"] or "-"
        print(f"{row['solver']:<15} {row['steps']:>5} {row['nfe']:>4} {_rms(row['tuned']):>10}  "
              f"{named:<16} {_rms(row['best_named']):>9} {row['seconds']:>8.1f}")  # fmt: skip


def print_grid_errors(grid: TimeGrid):
    """The held-out RMS error of the tuned grid and of every named grid (`grid.info`)."""
    rms = grid.info["rms"]
    print(f"{'grid':<16} {'pilot RMS':>10} {'held-out RMS':>13}")
    for name, errors in sorted(rms.items(), key=lambda kv: kv[1]["held_out"]):
        print(f"{name:<16} {_rms(errors['pilot']):>10} {_rms(errors['held_out']):>13}")


def run(args) -> int:
    """Execute `scoresde tune` from parsed arguments; returns the exit status."""
    solver, steps = _check_flags(args)
    out = check_out_file(args.out, args.overwrite)
    model, config = load_model(args.checkpoint)
    score = recipe_score(model, config)
    shape = (args.pilot, *data_shape(config))
    key = jr.key(args.seed)
    progress = not args.no_progress
    fit = split_pilot(args.pilot, 0.25, args.fit_size, shape)
    if progress:
        what = "every candidate solver" if solver is None else solver_name(solver)
        note("tune", f"tuning {what} for {args.nfe} evaluations on {fit} pilot latents "
             f"({args.pilot - fit} held out); compiling the reference solve (first "
             "call) ...")  # fmt: skip
    with library_warnings_as_notes("tune"):
        if solver is None:
            result = tune_sampler(
                model.sde, score, nfe=args.nfe, key=key, shape=shape,
                max_iterations=args.max_iterations, fit_size=args.fit_size,
                network_times=args.network_times, network_scales=args.network_scales,
                progress=progress,
            )  # fmt: skip
            grid, solver = result.grid, result.solver
            print_table(result.table)
        else:
            if progress:
                note("tune", f"{solver_name(solver)}, {steps} steps ...")
            grid = tune_grid(
                model.sde, score, solver=solver, steps=steps, key=key, shape=shape,
                max_iterations=args.max_iterations, fit_size=args.fit_size,
                network_times=args.network_times, network_scales=args.network_scales,
                progress=False,
            )  # fmt: skip
            print_grid_errors(grid)
    nfe = int(solver.evals_at_init) + grid.steps * int(solver.evals_per_step)
    grid = TimeGrid(grid.times, grid.solver, {**grid.info, "checkpoint": str(args.checkpoint),
                                              "nfe": nfe}, grid.network_times,
                    grid.network_scales)  # fmt: skip
    grid.to_json(out)
    chosen = grid.info["chosen"]
    print(
        f"{grid.solver}, {grid.steps} steps, NFE {nfe}, grid {chosen}, held-out RMS "
        f"{_rms(grid.info['rms'][chosen]['held_out'])} -> {out}"
    )
    print(f"sample with: scoresde sample {args.checkpoint} --grid {out}")
    return 0
