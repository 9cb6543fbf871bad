"""`scoresde sample`: draw samples from a `scoresde train` checkpoint; write them and a plot."""

import json
import pathlib

import jax.random as jr
import numpy as np

from .. import _data
from .._metrics import digits as _digit_metrics
from .._training.recipes import (
    NUM_CLASSES,
    SAMPLERS,
    TrainConfig,
    draw as draw,
    load_model,
    recipe_score,
)
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
        default="dpm++2m",
        help="ode: adaptive Tsit5; sde: Euler-Maruyama; dpm++2m: DPM-Solver++ 2M; "
        "pc: reverse diffusion + Langevin corrector",
    )
    p.add_argument("--steps", type=int, default=50, help="steps of fixed-step samplers")
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
        null = NUM_CLASSES[config.dataset]
        if not 0 <= label < null:
            raise UsageError(
                f"--label must lie in [0, {null - 1}] for {config.dataset}; got {label}"
            )
        if not guidance >= 0:
            raise UsageError(f"--guidance must be >= 0; got {guidance}")
    return recipe_score(model, config, label, guidance)


def run(args) -> int:
    """Execute `scoresde sample` from parsed arguments; returns the exit status."""
    if args.num < 1 or args.steps < 1:
        raise UsageError("--num and --steps must be >= 1")
    model, config = load_model(args.checkpoint)
    score = conditional_score(model, config, args.label, args.guidance)
    if args.format == "png" and config.dataset != "digits":
        raise UsageError(
            f"--format png writes one image per sample; {config.dataset} is 2-D point data "
            "(use --format npy or npz)"
        )
    out = prepare_out(args.out)
    sharding = local_sharding("sample", args.no_shard)
    if not args.no_progress:
        note("sample", f"compiling the {args.sampler} sampler (first call) ...")
    with library_warnings_as_notes("sample"):
        result = draw(
            model,
            config,
            args.sampler,
            args.num,
            args.steps,
            jr.key(args.seed),
            progress=not args.no_progress,
            score=score,
            sharding=sharding,
        )
    x = np.asarray(result.x)
    nfe = np.asarray(result.nfe)
    if args.format == "npy":
        np.save(out / "samples.npy", x)
        written = [out / "samples.npy"]
        title = sample_title(args.sampler, args.steps, float(np.mean(nfe)), args.label,
                             args.guidance)  # fmt: skip
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
    what = "" if args.label is None else f"label {args.label}, guidance {args.guidance:g}, "
    print(
        f"{args.num} samples ({what}{args.sampler}, mean NFE {float(np.mean(nfe)):.0f}) -> "
        + ", ".join(str(w) for w in written)
    )
    if config.dataset == "digits" and x.shape[0] >= 2:
        report_digit_metrics(x, out, config.levels, label=args.label)
    return 0


def report_digit_metrics(x, out, levels: int = 256, label=None):
    """Digit samples against the real digits (`scoresde.digit_metrics`): one line on stdout and
    digit_metrics.json in `out`; a note instead when scikit-learn is missing. Samples of a
    17-level model (`levels=17`) are quantised to grey levels and compared as 8-bit images.
    With a `label` (samples of one class), the headline is the fraction the classifier assigns
    to that class (`label_fraction` in the JSON), printed before the other metrics, whose class
    TV compares against the data's near-uniform class histogram."""
    if levels != 256:
        x = _data.digit_images(_data.quantize(x, levels=levels))

    try:
        m = _digit_metrics.digit_metrics(x)
    except ImportError:
        note("sample", "digit metrics need scikit-learn (pip install 'scoresde[data]'); skipped")
        return
    report = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in m._asdict().items()}
    headline = ""
    if label is not None:
        fraction = float(m.class_histogram[label])
        report = {"label": label, "label_fraction": fraction, **report}
        headline = f"{fraction:.3f} classified as label {label}; "
    (out / "digit_metrics.json").write_text(json.dumps(report, indent=2))
    print(f"digit metrics: {headline}{_digit_metrics._format(m)} -> {out / 'digit_metrics.json'}")
