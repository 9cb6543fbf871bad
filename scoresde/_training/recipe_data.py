r"""The data a training recipe trains and is evaluated on, by its config's `dataset` and `data`:
the 2-D toy sets (fresh draws), the 8x8 `digits` (at 17 grey levels or 8 bits), the 28x28
`mnist` digits (8 bits) and a user's file (`"file"`, a [`DataFile`][]: 8-bit or float images,
or points).

- `data_shape(config)`, `data_levels(config)`, `num_classes(config)`: one sample's shape, the
  levels $L$ of the convention $y = 2(k + u)/L - 1$ (None for continuous data), the classes of
  a labelled set (None without labels);
- `training_set(config, key)`: the training rows, their labels and the `dequantize(key, k)`
  that maps them to the model's space (None where they are already there);
- `held_out(config, num, key)`: test rows in the same convention;
- `image_splits(config)`: train and test images in the model's space $[-1, 1]$ (bin centres),
  with the test labels (what `scoresde inpaint` completes and compares against).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _data
from .data_file import DataFile, load_split

TOY_DATASETS: dict[str, Callable[..., Any]] = {
    "mixture": _data.gaussian_mixture,
    "moons": _data.two_moons,
    "rings": _data.rings,
    "swissroll": _data.swiss_roll,
    "checkerboard": _data.checkerboard,
}
IMAGE_DATASETS = {"digits": (1, 8, 8), "mnist": (1, 28, 28)}
FILE = "file"  # the `dataset` of a run on a user's file (`TrainConfig.data`)
DATASETS = (*TOY_DATASETS, *IMAGE_DATASETS, FILE)
NUM_CLASSES = {"digits": 10, "mnist": 10}  # label NUM_CLASSES[...] is the null label


class TrainingSet(NamedTuple):
    """Training rows `x`, their integer `labels` (or None) and the `dequantize(key, x)` onto the
    model's space (None when `x` is already there)."""

    x: Any
    labels: np.ndarray | None
    dequantize: Callable | None


class _Dequantize(eqx.Module):
    """`scoresde.dequantize(key, k, levels=levels)` as a `preprocess(key, batch)`."""

    levels: int = eqx.field(static=True)

    def __call__(self, key, k):
        return _data.dequantize(key, k, levels=self.levels)


def digit_data(images, levels: int):
    """8-bit digit images as the integers a `levels` model sees, and the `dequantize(key, k)`
    that maps them to $y = 2(k + u)/L - 1$: the 8-bit values for 256, the grey levels 0..16
    (`scoresde.digit_levels`) for 17."""
    if levels == 256:
        return images, _data.dequantize
    return _data.digit_levels(images), _Dequantize(levels)


def _source(config) -> DataFile:
    assert config.data is not None  # TrainConfig checks dataset "file" has its data
    return config.data


def data_shape(config) -> tuple[int, ...]:
    """Shape of one sample of the data set `config` trains on."""
    if config.dataset == FILE:
        return _source(config).shape
    return IMAGE_DATASETS.get(config.dataset, (2,))


def data_levels(config) -> int | None:
    """The levels of `config`'s data convention: its `levels` for the digits, 256 for mnist and
    8-bit files, None for continuous data (toy sets, float images, points)."""
    if config.dataset == "digits":
        return config.levels
    if config.dataset == "mnist":
        return 256
    if config.dataset == FILE:
        return _source(config).levels
    return None


def num_classes(config) -> int | None:
    """The classes of `config`'s labelled data set (digits and mnist: 10; a file with labels:
    `max(y) + 1`), None for unlabelled data."""
    if config.dataset == FILE:
        return _source(config).num_classes
    return NUM_CLASSES.get(config.dataset)


def is_image(config) -> bool:
    """Whether `config` trains on images `(c, h, w)` (a U-Net) rather than points (an MLP)."""
    return len(data_shape(config)) == 3


def training_set(config, key) -> TrainingSet:
    """The rows `config` trains on: `config.num_train` fresh draws of a toy set from `key`,
    or the training split of the digits, mnist or the file (`config.seed` splits a file)."""
    if config.dataset == "digits":
        digits = _data.load_digits()
        images, dequantize = digit_data(digits.train, config.levels)
        return TrainingSet(images, digits.train_labels, dequantize)
    if config.dataset == "mnist":
        mnist = _data.load_mnist()
        return TrainingSet(mnist.train, mnist.train_labels, _data.dequantize)
    if config.dataset == FILE:
        split = load_split(_source(config), config.seed)
        dequantize = _data.dequantize if _source(config).levels == 256 else None
        return TrainingSet(split.train, split.train_labels, dequantize)
    return TrainingSet(TOY_DATASETS[config.dataset](key, config.num_train), None, None)


def held_out(config, num: int, key):
    """`num` held-out rows of `config`'s data set: for the digits, test images as the integers
    its convention dequantises (8-bit values or grey levels, see `digit_data`); for mnist and
    8-bit files, the 8-bit test images; for float images, the test images mapped onto
    $[-1, 1]$; for points, the test rows; for toy sets, fresh draws from `fold_in(key, 7)`.

    **Raises:** `ValueError` if `num` exceeds the test split."""
    if config.dataset in ("digits", "mnist"):
        test = (_data.load_digits() if config.dataset == "digits" else _data.load_mnist()).test
        rows = test if config.dataset == "mnist" else digit_data(test, config.levels)[0]
    elif config.dataset == FILE:
        rows = load_split(_source(config), config.seed).test
    else:
        return TOY_DATASETS[config.dataset](jr.fold_in(key, 7), num)
    if num > rows.shape[0]:
        raise ValueError(
            f"num={num} exceeds the {config.dataset} test split ({rows.shape[0]} rows); pass "
            f"{rows.shape[0]} or fewer"
        )
    return jnp.asarray(rows[:num])


def test_size(config) -> int | None:
    """Rows in `config`'s test split (None for toy sets, which draw fresh points)."""
    if config.dataset == "digits":
        return int(_data.load_digits().test.shape[0])
    if config.dataset == "mnist":
        return int(_data.load_mnist().test.shape[0])
    if config.dataset == FILE:
        return _source(config).num_test
    return None


class ImageSplits(NamedTuple):
    """Train and test images in the model's space (bin centres of 8-bit or grey-level data),
    and the test labels (None for an unlabelled file)."""

    train: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray | None


def image_splits(config) -> ImageSplits:
    """`config`'s train and test images in $[-1, 1]$ (integer data at its bin centres).

    **Raises:** `ValueError` for a config that does not train on images."""
    if not is_image(config):
        raise ValueError(f"{config.dataset} is point data, not images.")
    if config.dataset == FILE:
        split = load_split(_source(config), config.seed)
        train, test, labels = split.train, split.test, split.test_labels
    else:
        data = _data.load_digits() if config.dataset == "digits" else _data.load_mnist()
        train, test, labels = data.train, data.test, data.test_labels
        if config.dataset == "digits":
            train, test = digit_data(train, config.levels)[0], digit_data(test, config.levels)[0]
    levels = data_levels(config)
    if levels is None:
        return ImageSplits(np.asarray(train), np.asarray(test), labels)

    def centres(k):
        return np.asarray(_data.dequantize(None, jnp.asarray(k), levels=levels))

    return ImageSplits(centres(train), centres(test), labels)
