"""`scoresde train`: train a score model on a built-in dataset or a file (`--data`); write a
checkpoint and a loss curve.

`add_parser(subparsers)` registers the subcommand; `run(args)` parses the flags into a frozen
`TrainConfig` (a file becomes its `DataFile`: path, SHA-256, shape, levels, split) and calls the
recipe library (`scoresde._training.recipes`: the config, the model built from it, the training
run), then draws the end-of-training samples.
"""

import argparse
import dataclasses
import json
import math
import pathlib
import shlex
import signal
import sys
import time

import jax
import jax.random as jr
import numpy as np

from .._training.data_file import DataFileError, file_sha256, read_data_file
from .._training.fit import LOSS_WINDOW
from .._training.recipes import (
    DATASET_DEFAULTS,
    DATASETS,
    LEVELS,
    MLP_SIZES,
    MNIST_GPU_FLAGS,
    NUM_CLASSES as NUM_CLASSES,
    PARAMETRISATIONS,
    SDES,
    TOY_DATASETS as TOY_DATASETS,
    WEIGHTINGS,
    TrainConfig,
    dataset_defaults,
    digit_data as digit_data,
    draw,
    model_from_config as model_from_config,
    skeleton_from_config as skeleton_from_config,
    train,
)
from .._training.runs import (
    DEFAULT_CHECKPOINT_EVERY,
    LOSSES_FILE,
    STATE_FILE,
    StopOnSignal,
    clear_run,
    existing_run,
    read_losses,
)
from .card import model_card, normal_interval
from .common import (
    HelpFormatter,
    UsageError,
    add_no_shard,
    add_out,
    local_sharding,
    note,
    prepare_out,
    read_run_config,
)
from .figures import plot_samples, sample_title
from .sample import report_digit_metrics

FINAL_SAMPLER, FINAL_STEPS = "dpm++2m", 50  # the end-of-training samples: DPM-Solver++(2M)


def write_train_card(out_dir, paths, config, *, seconds: float) -> dict:
    """`train.json`: the run's metric card (`scoresde._cli.card`): its settings (the config, the
    EMA weights saved, `num` the training rows) and the final loss, the mean of the last steps' losses with a 95 % normal
    interval over them (each a fresh batch), beside the wall time of this call."""
    losses = read_losses(out_dir / LOSSES_FILE, config.steps)
    last = losses[np.isfinite(losses)][-LOSS_WINDOW:]
    card = dict(
        settings=dict(
            **model_card(paths["checkpoint"], config),
            num=paths["num_train"],
            seed=config.seed,
            batch_size=config.batch_size,
            config=dataclasses.asdict(config),
        ),  # fmt: skip
        final_loss=dict(**normal_interval(last), window=int(last.size))
        if last.size
        else dict(value=None, interval=None, interval_kind="no finite loss in the run", window=0),
        wall_s=seconds,
        checkpoint=str(paths["checkpoint"]),
    )
    (out_dir / "train.json").write_text(json.dumps(card, indent=2, default=str))
    return card


def final_samples(model, config, out_dir, num, key, *, settings: dict | None = None):
    """`num` samples of the trained `model` (DPM-Solver++(2M), 50 steps): `samples.npy`, a
    `samples.png` grid (images) or scatter (2-D points), and for digits the sample-quality
    metrics (`scoresde.digit_metrics`) printed and written to `digit_metrics.json`."""
    result = draw(model, config, FINAL_SAMPLER, num, FINAL_STEPS, key)
    x = np.asarray(result.x)
    np.save(out_dir / "samples.npy", x)
    written = [out_dir / "samples.npy"]
    title = sample_title(FINAL_SAMPLER, FINAL_STEPS, float(np.mean(np.asarray(result.nfe))))
    title = f"{config.dataset} after {config.steps} training steps, {title}"
    if plot_samples(x, out_dir / "samples.png", title):
        written.append(out_dir / "samples.png")
    print(f"{num} samples (DPM-Solver++(2M), {FINAL_STEPS} steps) -> "
          + ", ".join(str(w) for w in written))  # fmt: skip
    if config.dataset in ("digits", "mnist") and num >= 2:
        sample_settings = (
            None
            if settings is None
            else dict(
                settings, num=num, seed=config.seed + 1, sampler=FINAL_SAMPLER, steps=FINAL_STEPS
            )
        )
        report_digit_metrics(x, out_dir, config.levels, mnist=config.dataset == "mnist",
                             settings=sample_settings)  # fmt: skip
    return written


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train` on an argparse `subparsers` object."""
    defaults = TrainConfig()
    mnist = DATASET_DEFAULTS["mnist"]
    p = subparsers.add_parser(
        "train",
        help="train a score model on a built-in dataset or your own file",
        description="Train a score model on a built-in dataset or on your own file (--data); "
        "writes a checkpoint (EMA weights + JSON sidecar) and a loss-curve PNG to --out. "
        f"--dataset mnist: 28x28 digits at 256 levels, {mnist['steps']} steps of batch "
        f"{mnist['batch_size']} by default (about an hour on 2 CPU cores: 0.28 s a step); on a "
        f"GPU add {MNIST_GPU_FLAGS}.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--dataset", choices=[d for d in DATASETS if d != "file"], default=None,
                   help=f"2-D toy set (default: {defaults.dataset}), digits (8x8 images) or "
                   "mnist (28x28 images); not with --data")  # fmt: skip
    p.add_argument("--data", type=pathlib.Path, default=None, metavar="FILE",
                   help="train on your own .npy or .npz (its array x, labels y optional): "
                   "images (n, c, h, w), h and w divisible by 4, as uint8 (256 levels) or floats "
                   "with --data-range; or points (n, d). A tenth is held out (split by --seed); "
                   "the path and SHA-256 go into the checkpoint")  # fmt: skip
    p.add_argument("--data-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="with --data: the value range of float images (e.g. 0 1 or -1 1), "
                   "mapped onto [-1, 1]")  # fmt: skip
    p.add_argument("--sde", choices=tuple(SDES), default=defaults.sde, help="forward SDE")
    p.add_argument("--parametrisation", choices=tuple(PARAMETRISATIONS),
                   default=defaults.parametrisation, help="what the network predicts")  # fmt: skip
    p.add_argument("--weighting", choices=WEIGHTINGS, default=None,
                   help="loss weighting over time (default: sigma2; digits and mnist: "
                   f"{DATASET_DEFAULTS['digits']['weighting']})")  # fmt: skip
    p.add_argument("--model-size", choices=tuple(MLP_SIZES), default=defaults.model_size,
                   help="network size")  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimiser steps (default: {defaults.steps}; digits: "
                   f"{DATASET_DEFAULTS['digits']['steps']}; mnist: {mnist['steps']})")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"batch size (default: {defaults.batch_size}; mnist: "
                   f"{mnist['batch_size']})")  # fmt: skip
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                   help="peak Adam learning rate")  # fmt: skip
    p.add_argument("--num-train", type=int, default=defaults.num_train,
                   help="number of training points for 2-D datasets")  # fmt: skip
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    p.add_argument("--conditional", action="store_true",
                   help="class-conditional U-Net (digits, mnist, or a --data file with labels y) "
                   "with label dropout, for "
                   "`scoresde sample --label --guidance`")  # fmt: skip
    p.add_argument("--p-uncond", type=float, default=defaults.p_uncond,
                   help="with --conditional: probability of replacing a label by the null "
                   "label while training")  # fmt: skip
    p.add_argument("--levels", type=int, default=None,
                   help="digits: the data convention trained on (and evaluated by `scoresde "
                   "nll`), y = 2(k + u)/L - 1: 17 the grey levels 0..16 (the data's own "
                   "resolution; the digits default), 256 the 8-bit values (other data: 256 "
                   "only; mnist and uint8 files are 8-bit, float files and points continuous)")  # fmt: skip
    add_out(p, "train")
    p.add_argument("--checkpoint-every", type=int, default=DEFAULT_CHECKPOINT_EVERY,
                   metavar="N", help=f"save the whole training state to --out/{STATE_FILE} "
                   "every N steps (and at the end, and on Ctrl-C or SIGTERM); 0: only then")  # fmt: skip
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help=f"continue the run in --out from its {STATE_FILE}, with its "
                       "settings (flags given must agree with them)")  # fmt: skip
    again.add_argument("--overwrite", action="store_true",
                       help="delete an earlier run's outputs in --out first (without it, or "
                       "--resume, a folder holding a run is refused)")  # fmt: skip
    add_no_shard(p)
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress bar or compile notice")  # fmt: skip
    p.add_argument("--samples", type=int, default=64,
                   help="samples drawn at the end (samples.npy, samples.png and, for digits, "
                   "the sample-quality metrics); 0 for none")  # fmt: skip
    p.set_defaults(func=run)
    return p


def _explicit_flags(args, config: TrainConfig) -> dict:
    """The config fields whose flags `args` sets to something other than their defaults."""
    defaults = TrainConfig()
    given = {}
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        if name in ("weighting", "steps", "levels", "batch_size", "dataset", "data"):
            # None unless the flag is given
            if getattr(args, name) is not None:
                given[name] = getattr(config, name)
        elif getattr(config, name) != getattr(defaults, name):
            given[name] = getattr(config, name)
    return given


def _resumed_config(args, config: TrainConfig, out) -> TrainConfig:
    """The config of the run to resume in `out`; flags given must agree with it."""
    stored = read_run_config(out / STATE_FILE)
    for name, value in _explicit_flags(args, config).items():
        if getattr(stored, name) != value:
            flag = "--" + name.replace("_", "-")
            if name == "data" and stored.data is not None:
                raise UsageError(
                    f"--resume: --data {value.path} (sha256 {value.sha256[:12]}...) is not the "
                    f"data the run in {out} trained on ({stored.data.path}, sha256 "
                    f"{stored.data.sha256[:12]}...); drop --data to continue on the recorded file"
                )
            raise UsageError(
                f"--resume continues the run in {out} with its own settings; {flag} {value} "
                f"differs from its {name}={getattr(stored, name)!r} (drop the flag, or start a "
                "new run with --overwrite or another --out)"
            )
    return stored


def _check_unchanged(source):
    """Refuse to resume on a data file that is gone or whose content changed."""
    path = pathlib.Path(source.path)
    if not path.is_file():
        raise UsageError(f"--resume: the run's data file {path} is gone")
    if file_sha256(path) != source.sha256:
        raise UsageError(
            f"--resume: the run's data file {path} changed since it started (sha256 "
            f"{source.sha256[:12]}... recorded); restore it, or start a new run with --overwrite"
        )


def _prepare_run(args, config: TrainConfig, out) -> TrainConfig:
    """Check `--out` against `--resume` / `--overwrite`; the config to train."""
    if args.resume:
        if not (out / STATE_FILE).exists():
            raise UsageError(
                f"--resume: {out} holds no {STATE_FILE} to continue from; start a new run "
                "without --resume"
            )
        resumed = _resumed_config(args, config, out)
        if resumed.data is not None:
            _check_unchanged(resumed.data)
        return resumed
    earlier = existing_run(out)
    if earlier and not args.overwrite:
        raise UsageError(
            f"--out {out} already holds a training run ({', '.join(p.name for p in earlier)}); "
            "pass --resume to continue it or --overwrite to replace it"
        )
    if earlier:
        clear_run(out)
        note("train", f"--overwrite: removed the earlier run's {len(earlier)} file(s) in {out}")
    return config


def _check_flags(args, given: dict):
    """Refuse bad values by their flags (`--learning-rate`, not the `TrainConfig` field
    `learning_rate`), before the config checks them again; `given`: the data-set defaults
    filled in."""
    for flag, value in (("--steps", given["steps"]), ("--batch-size", given["batch_size"]),
                        ("--num-train", args.num_train)):  # fmt: skip
        if value < 1:
            raise UsageError(f"{flag} must be >= 1; got {value}")
    if not (math.isfinite(args.learning_rate) and args.learning_rate > 0):
        raise UsageError(f"--learning-rate must be a finite number > 0; got {args.learning_rate}")
    if not 0 <= args.p_uncond <= 1:
        raise UsageError(f"--p-uncond must lie in [0, 1]; got {args.p_uncond}")
    if args.data is not None and args.dataset is not None:
        raise UsageError(f"--data {args.data} and --dataset {args.dataset}: pass one of them")
    if args.data_range is not None and args.data is None:
        raise UsageError("--data-range goes with --data (the range of a file's float images)")
    dataset = "file" if args.data is not None else args.dataset or TrainConfig().dataset
    if args.conditional and dataset in TOY_DATASETS:
        raise UsageError(
            "--conditional needs a labelled data set (--dataset digits or mnist, or --data with "
            f"labels y); got --dataset {dataset}"
        )
    if given["levels"] not in LEVELS:
        raise UsageError(
            "--levels must be 256 (8-bit dequantisation) or 17 (the digits' grey levels); got "
            f"{given['levels']}"
        )
    if given["levels"] != 256 and dataset != "digits":
        what = f"--dataset {dataset}" if args.data is None else f"--data {args.data}"
        raise UsageError(
            f"--levels {given['levels']} is a digits convention; {what} has its own (mnist and "
            "uint8 images: 256; float images and points: continuous; leave --levels out)"
        )
    if args.samples < 0:
        raise UsageError(f"--samples must be >= 0; got {args.samples}")
    every = getattr(args, "checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
    if every < 0:
        raise UsageError(f"--checkpoint-every must be >= 0; got {every}")


def run(args: argparse.Namespace) -> int:
    """Execute `scoresde train` from parsed arguments; returns the exit status."""
    dataset = "file" if getattr(args, "data", None) is not None else args.dataset
    dataset = dataset or TrainConfig().dataset
    fallback = dataset_defaults(dataset)
    given = {n: fallback[n] if getattr(args, n) is None else getattr(args, n) for n in fallback}
    try:
        _check_flags(args, given)
        source = None
        if args.data is not None:
            source = read_data_file(args.data, data_range=args.data_range)
    except (UsageError, DataFileError) as e:
        print(f"scoresde train: error: {e}", file=sys.stderr)
        return 2
    try:
        config = TrainConfig(
            dataset=dataset,
            sde=args.sde,
            parametrisation=args.parametrisation,
            weighting=given["weighting"],
            model_size=args.model_size,
            steps=given["steps"],
            batch_size=given["batch_size"],
            learning_rate=args.learning_rate,
            num_train=args.num_train,
            seed=args.seed,
            conditional=args.conditional,
            p_uncond=args.p_uncond,
            levels=given["levels"],
            data=source,
        )
    except ValueError as e:  # a check `_check_flags` lacks: the library's own words
        print(f"scoresde train: error: {e}", file=sys.stderr)
        return 2
    every = getattr(args, "checkpoint_every", DEFAULT_CHECKPOINT_EVERY)
    out = prepare_out(args.out)
    config = _prepare_run(args, config, out)
    sharding = local_sharding("train", getattr(args, "no_shard", False))
    if sharding is not None and config.batch_size % sharding.mesh.size:
        note("train", f"--batch-size {config.batch_size} does not split over "
             f"{sharding.mesh.size} devices: training on one")  # fmt: skip
        sharding = None
    resume_hint = f"scoresde train --resume --out {shlex.quote(str(out))}"
    start = time.perf_counter()
    try:
        with StopOnSignal() as stop:
            paths = train(config, out, progress=not args.quiet, sharding=sharding,
                          checkpoint_every=every or None, resume=args.resume, stop=stop)  # fmt: skip
    except KeyboardInterrupt:  # a second Ctrl-C: quit at once, keep the last saved state
        last = out / STATE_FILE
        kept = f"the last periodic checkpoint {last} is kept" if last.exists() else "nothing saved"
        note("train", f"interrupted twice: stopped without saving; {kept}"
             + (f"; resume with: {resume_hint}" if last.exists() else ""))  # fmt: skip
        return 128 + int(signal.SIGINT)
    if paths["interrupted"]:
        signum = stop.signum if stop.signum is not None else signal.SIGINT
        saved = f"saved to {paths['state']}" if paths["state"] else "nothing saved"
        note("train", f"interrupted at step {paths['step']} of {config.steps}; {saved}; resume "
             f"with: {resume_hint}")  # fmt: skip
        return 128 + int(signum)
    print(f"checkpoint: {paths['checkpoint']} (sidecar {paths['sidecar']})")
    if paths["loss_curve"] is not None:
        print(f"loss curve: {paths['loss_curve']}")
    window = min(LOSS_WINDOW, config.steps)
    card = write_train_card(out, paths, config, seconds=time.perf_counter() - start)
    spread = ("" if card["final_loss"]["interval"] is None else
              ", 95 % interval [{:.4g}, {:.4g}]".format(*card["final_loss"]["interval"]))  # fmt: skip
    print(f"final loss: {paths['final_loss']:.4g} (mean of the last {window} steps, as on the "
          f"progress bar{spread}) -> {out / 'train.json'}")  # fmt: skip
    if args.samples and jax.process_index() == 0:  # one process draws and writes them
        if not args.quiet:
            note("train", f"drawing {args.samples} samples from the trained model ...")
        try:
            final_samples(paths["model"], config, out, args.samples, jr.key(config.seed + 1),
                          settings=card["settings"])  # fmt: skip
        except KeyboardInterrupt:
            note("train", f"interrupted while drawing the samples; the trained checkpoint "
                 f"{paths['checkpoint']} is complete")  # fmt: skip
            return 128 + int(signal.SIGINT)
    return 0
