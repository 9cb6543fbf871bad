"""`scoresde train`: train a score model on a built-in dataset; write a checkpoint and a loss curve.

`add_parser(subparsers)` registers the subcommand; `run(args)` does the work. Flags are parsed
into a frozen `TrainConfig` before any library call; `model_from_config(config, key=...)`
builds a fresh model; `skeleton_from_config(config)` the abstract skeleton that `scoresde.load`
needs, from a checkpoint's sidecar
(`TrainConfig(**scoresde.read_sidecar(path)["hyperparameters"])`).
"""

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from .. import (
    _data as _data,
    _networks as _networks,
    _parametrisation as _parametrisation,
    _sde as _sde,
)
from .._training import conditional as _conditional, losses as _losses
from .._training.checkpoint import save
from .._training.fit import adam_with_warmup, fit, num_params
from .common import HelpFormatter, add_no_shard, add_out, local_sharding, note, prepare_out

SDES: dict[str, Callable[[], _sde.AbstractSDE]] = {
    "vp": _sde.VPSDE,
    "subvp": _sde.SubVPSDE,
    "ve": _sde.VESDE,
    "edm": _sde.EDMSDE,
}
PARAMETRISATIONS: dict[str, Callable[..., _parametrisation.AbstractParametrisation]] = {
    "score": _parametrisation.DirectScore,
    "eps": _parametrisation.EpsPrediction,
    "x0": _parametrisation.X0Prediction,
    "v": _parametrisation.VPrediction,
    "edm": _parametrisation.EDMPreconditioning,
}
TOY_DATASETS: dict[str, Callable[..., Any]] = {
    "mixture": _data.gaussian_mixture,
    "moons": _data.two_moons,
    "rings": _data.rings,
    "swissroll": _data.swiss_roll,
    "checkerboard": _data.checkerboard,
}
DATASETS = (*TOY_DATASETS, "digits")
NUM_CLASSES = {"digits": 10}  # class-conditional models: label NUM_CLASSES[...] is the null label
WEIGHTINGS = ("sigma2", "likelihood", "edm")
# (width, depth) of the MLP for 2-D data; (base_channels, channel_mults) of the U-Net.
MLP_SIZES = {"tiny": (64, 2), "small": (128, 3), "medium": (256, 4)}
UNET_SIZES = {"tiny": (8, (1, 2)), "small": (16, (1, 2)), "medium": (32, (1, 2))}
# digits: the data convention trained on, y = 2(k + u)/L - 1; 256 (8 bits, k the 8-bit value) or
# 17 (k the grey level 0..16). Evaluated in the same convention (`scoresde nll`).
LEVELS = (256, 17)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything `scoresde train` needs; stored as the checkpoint's hyper-parameters."""

    dataset: str = "mixture"
    sde: str = "vp"
    parametrisation: str = "eps"
    weighting: str = "sigma2"
    model_size: str = "small"
    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 2e-3
    num_train: int = 20_000
    seed: int = 0
    conditional: bool = False
    p_uncond: float = 0.1
    levels: int = 256

    def __post_init__(self):
        for name, allowed in (
            ("dataset", DATASETS),
            ("sde", tuple(SDES)),
            ("parametrisation", tuple(PARAMETRISATIONS)),
            ("weighting", WEIGHTINGS),
            ("model_size", tuple(MLP_SIZES)),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {getattr(self, name)!r}.")
        for name in ("steps", "batch_size", "num_train"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if self.conditional and self.dataset != "digits":
            raise ValueError(
                f"conditional training needs a labelled dataset (digits); got {self.dataset!r}."
            )
        if not 0 <= self.p_uncond <= 1:
            raise ValueError(f"p_uncond must lie in [0, 1]; got {self.p_uncond}.")
        if isinstance(self.levels, bool) or self.levels not in LEVELS:
            raise ValueError(
                f"levels must be 256 (8-bit dequantisation) or 17 (the digits' grey levels); "
                f"got {self.levels!r}."
            )
        if self.levels != 256 and self.dataset != "digits":
            raise ValueError(
                f"levels={self.levels} is a digits convention; {self.dataset!r} is continuous "
                "2-D data (leave levels at 256)."
            )


# `scoresde train`'s defaults that depend on the data set (flags left unset): for the digits,
# the recipe measured by benchmarks/digits_recipe.py (docs/how-to/train.md); a `TrainConfig`
# itself keeps the generic ones (levels 256: checkpoints written before `levels` existed were
# 8-bit models).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"levels": 17, "weighting": "likelihood", "steps": 3600},
}


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """The `levels`, `weighting` and `steps` that `scoresde train --dataset DATASET` uses when
    their flags are not given."""
    generic = TrainConfig()
    base = {"levels": generic.levels, "weighting": generic.weighting, "steps": generic.steps}
    return {**base, **DATASET_DEFAULTS.get(dataset, {})}


def model_from_config(config: TrainConfig, *, key):
    """The parametrised network that `config` trains (fresh weights from `key`)."""
    sde = SDES[config.sde]()
    wrapper = PARAMETRISATIONS[config.parametrisation]
    if config.dataset == "digits":
        base, mults = UNET_SIZES[config.model_size]
        num_classes = NUM_CLASSES["digits"] if config.conditional else None
        net: _networks.UNet | _networks.MLPScoreNet = _networks.UNet(
            (1, 8, 8),
            base_channels=base,
            channel_mults=mults,
            num_heads=2,
            num_classes=num_classes,
            key=key,
        )
    else:
        width, depth = MLP_SIZES[config.model_size]
        net = _networks.MLPScoreNet(2, width=width, depth=depth, key=key)
    return wrapper(net, sde)


def skeleton_from_config(config: TrainConfig):
    """`model_from_config`'s structure with abstract leaves (`jax.ShapeDtypeStruct`): what
    `scoresde.load` fills from a checkpoint, built without initialising (or compiling) any
    weights."""
    return eqx.filter_eval_shape(model_from_config, config, key=jr.key(0))


def _loss(config, sde):
    if config.weighting == "likelihood":
        return _losses.DenoisingScoreMatching(
            sde, _losses.LikelihoodWeighting(), _losses.ImportanceTime(stratified=True)
        )
    if config.weighting == "edm":
        return _losses.DenoisingScoreMatching(sde, _losses.EDMWeighting(), _losses.EDMTime())
    return _losses.DenoisingScoreMatching(sde, time_sampler=_losses.UniformTime(stratified=True))


def _plot_losses(losses, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no loss curve written.", file=sys.stderr)
        return None
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"running mean ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log" if np.all(losses > 0) else "linear")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


FINAL_SAMPLER, FINAL_STEPS = "dpm++2m", 50  # the end-of-training samples: DPM-Solver++(2M)


def final_samples(model, config, out_dir, num, key):
    """`num` samples of the trained `model` (DPM-Solver++(2M), 50 steps): `samples.npy`, a
    `samples.png` grid (images) or scatter (2-D points), and for digits the sample-quality
    metrics (`scoresde.digit_metrics`) printed and written to `digit_metrics.json`."""
    import numpy as np

    from .sample import draw, plot_samples, report_digit_metrics

    x = np.asarray(draw(model, config, FINAL_SAMPLER, num, FINAL_STEPS, key).x)
    np.save(out_dir / "samples.npy", x)
    written = [out_dir / "samples.npy"]
    if plot_samples(x, out_dir / "samples.png"):
        written.append(out_dir / "samples.png")
    print(f"{num} samples (DPM-Solver++(2M), {FINAL_STEPS} steps) -> "
          + ", ".join(str(w) for w in written))  # fmt: skip
    if config.dataset == "digits" and num >= 2:
        report_digit_metrics(x, out_dir, config.levels)
    return written


def digit_data(images, levels: int):
    """8-bit digit images as the integers a `levels` model sees, and the `dequantize(key, k)`
    that maps them to $y = 2(k + u)/L - 1$: the 8-bit values for 256, the grey levels 0..16
    (`scoresde.digit_levels`) for 17."""
    if levels == 256:
        return images, _data.dequantize
    return _data.digit_levels(images), _Dequantize(levels)


class _Dequantize(eqx.Module):
    """`scoresde.dequantize(key, k, levels=levels)` as a `preprocess(key, batch)`."""

    levels: int = eqx.field(static=True)

    def __call__(self, key, k):
        return _data.dequantize(key, k, levels=self.levels)


def train(config: TrainConfig, out_dir, *, progress: bool = True, sharding=None) -> dict:
    """Run the training `config` describes; write `checkpoint.eqx` (EMA weights), its sidecar,
    `losses.png` and `losses.json` to `out_dir` (from process 0 only). Returns the written
    paths. `sharding`: data-parallel training (see `scoresde.fit`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = jr.key(config.seed)
    key_data, key_init, key_fit = jr.split(key, 3)
    model = model_from_config(config, key=key_init)
    preprocess: Callable | None = None
    loss = _loss(config, model.sde)
    if config.dataset == "digits":
        digits = _data.load_digits()
        train_images, dequantize = digit_data(digits.train, config.levels)
    if config.conditional:
        data = _conditional.pack_labels(train_images, digits.train_labels)
        preprocess = _conditional.UnpackLabels((1, 8, 8), dequantize)
        loss = _conditional.LabelDropoutDSM(
            loss.sde,
            NUM_CLASSES[config.dataset],
            config.p_uncond,
            loss.weighting,
            loss.time_sampler,
            loss.t_eps,
        )
    elif config.dataset == "digits":
        data = jnp.asarray(train_images)
        preprocess = dequantize
    else:
        data = TOY_DATASETS[config.dataset](key_data, config.num_train)
    optimizer = adam_with_warmup(
        config.learning_rate,
        warmup_steps=min(100, config.steps // 10),
        decay_steps=config.steps if config.steps > 1 else None,
    )
    if progress:
        print(
            f"training {num_params(model)} parameters on {config.dataset}; compiling the "
            "training step (first call) ...",
            file=sys.stderr,
            flush=True,
        )
    result = fit(
        model,
        loss,
        data,
        key=key_fit,
        steps=config.steps,
        batch_size=config.batch_size,
        optimizer=optimizer,
        preprocess=preprocess,
        progress=progress,
        sharding=sharding,
    )
    ckpt = out_dir / "checkpoint.eqx"
    hyper = dataclasses.asdict(config)
    sidecar = save(ckpt, result.ema_model, hyperparameters=hyper, ema=True)
    losses = result.losses
    (out_dir / "losses.json").write_text(json.dumps([float(v) for v in losses]))
    png = _plot_losses(losses, out_dir / "losses.png")
    return {
        "model": result.ema_model,
        "checkpoint": ckpt,
        "sidecar": sidecar,
        "loss_curve": png,
        "final_loss": float(losses[-1]),
    }


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `train` on an argparse `subparsers` object."""
    defaults = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a score model on a built-in dataset",
        description="Train a score model on a built-in dataset; writes a checkpoint (EMA "
        "weights + JSON sidecar) and a loss-curve PNG to --out.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default=defaults.dataset,
                   help="2-D toy set, or digits (8x8 images, U-Net)")  # fmt: skip
    p.add_argument("--sde", choices=tuple(SDES), default=defaults.sde, help="forward SDE")
    p.add_argument("--parametrisation", choices=tuple(PARAMETRISATIONS),
                   default=defaults.parametrisation, help="what the network predicts")  # fmt: skip
    p.add_argument("--weighting", choices=WEIGHTINGS, default=None,
                   help="loss weighting over time (default: sigma2; digits: "
                   f"{DATASET_DEFAULTS['digits']['weighting']})")  # fmt: skip
    p.add_argument("--model-size", choices=tuple(MLP_SIZES), default=defaults.model_size,
                   help="network size")  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help=f"optimiser steps (default: {defaults.steps}; digits: "
                   f"{DATASET_DEFAULTS['digits']['steps']})")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="batch size")
    p.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                   help="peak Adam learning rate")  # fmt: skip
    p.add_argument("--num-train", type=int, default=defaults.num_train,
                   help="number of training points for 2-D datasets")  # fmt: skip
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    p.add_argument("--conditional", action="store_true",
                   help="class-conditional U-Net (digits only) with label dropout, for "
                   "`scoresde sample --label --guidance`")  # fmt: skip
    p.add_argument("--p-uncond", type=float, default=defaults.p_uncond,
                   help="with --conditional: probability of replacing a label by the null "
                   "label while training")  # fmt: skip
    p.add_argument("--levels", type=int, default=None,
                   help="digits: the data convention trained on (and evaluated by `scoresde "
                   "nll`), y = 2(k + u)/L - 1: 17 the grey levels 0..16 (the data's own "
                   "resolution; the digits default), 256 the 8-bit values (2-D sets: 256 only)")  # fmt: skip
    add_out(p, "train")
    add_no_shard(p)
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress bar or compile notice")  # fmt: skip
    p.add_argument("--samples", type=int, default=64,
                   help="samples drawn at the end (samples.npy, samples.png and, for digits, "
                   "the sample-quality metrics); 0 for none")  # fmt: skip
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Execute `scoresde train` from parsed arguments; returns the exit status."""
    fallback = dataset_defaults(args.dataset)
    given = {n: fallback[n] if getattr(args, n) is None else getattr(args, n) for n in fallback}
    try:
        config = TrainConfig(
            dataset=args.dataset,
            sde=args.sde,
            parametrisation=args.parametrisation,
            weighting=given["weighting"],
            model_size=args.model_size,
            steps=given["steps"],
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            num_train=args.num_train,
            seed=args.seed,
            conditional=args.conditional,
            p_uncond=args.p_uncond,
            levels=given["levels"],
        )
    except ValueError as e:
        print(f"scoresde train: {e}", file=sys.stderr)
        return 2
    if args.samples < 0:
        print(f"scoresde train: --samples must be >= 0; got {args.samples}", file=sys.stderr)
        return 2
    out = prepare_out(args.out)
    sharding = local_sharding("train", getattr(args, "no_shard", False))
    if sharding is not None and config.batch_size % sharding.mesh.size:
        note("train", f"--batch-size {config.batch_size} does not split over "
             f"{sharding.mesh.size} devices: training on one")  # fmt: skip
        sharding = None
    paths = train(config, out, progress=not args.quiet, sharding=sharding)
    print(f"checkpoint: {paths['checkpoint']} (sidecar {paths['sidecar']})")
    if paths["loss_curve"] is not None:
        print(f"loss curve: {paths['loss_curve']}")
    print(f"final loss: {paths['final_loss']:.4g}")
    if args.samples and jax.process_index() == 0:  # one process draws and writes them
        if not args.quiet:
            note("train", f"drawing {args.samples} samples from the trained model ...")
        final_samples(paths["model"], config, out, args.samples, jr.key(config.seed + 1))
    return 0
