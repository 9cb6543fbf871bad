"""Metric cards: the settings and the interval that every figure a command writes carries.

A figure read later from `nll.json`, `sample.json`, `inpaint.json`, `train.json` or
`digit_metrics.json` names what it was measured on and how: the model (checkpoint, data set,
SDE, parametrisation, training steps, EMA weights), the data convention (levels and
dequantisation, or continuous data), the number of items and the seed, and the method's own
settings (solver, steps or tolerance, NFE). Each figure has a 95 % interval beside it, with its
kind named (`interval_kind`): normal over items, bootstrap over items, certified, or a range.
"""

import math
import pathlib

import numpy as np

from .._metrics.bootstrap import bootstrap_bounds
from .._training.checkpoint import read_sidecar
from .._training.recipes import TrainConfig

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile
EMA_DECAY = 0.999  # the recipes' (`scoresde.fit`'s default)


def data_convention(config: TrainConfig) -> str:
    """How the model's space relates to the data: `y = 2(k + u)/L - 1` for images of L levels
    (k the level, u uniform on [0, 1) when dequantised), or continuous data."""
    levels = config.data_levels
    if levels is None:
        if config.data is not None and config.data.data_range is not None:
            low, high = config.data.data_range
            return f"continuous, [{low:g}, {high:g}] mapped onto [-1, 1]"
        return "continuous (as given)"
    return f"{levels} levels, y = 2(k + u)/{levels} - 1 (u uniform: dequantised)"


def model_card(checkpoint, config: TrainConfig) -> dict:
    """The model part of a card: checkpoint, data set, SDE, parametrisation, training steps,
    whether the weights are the EMA's (and its decay), levels and data convention."""
    meta = read_sidecar(checkpoint)
    ema = bool(meta.get("ema")) or bool(meta.get("train_state"))
    return dict(
        checkpoint=str(pathlib.Path(checkpoint)),
        dataset=config.dataset,
        sde=config.sde,
        parametrisation=config.parametrisation,
        training_steps=config.steps,
        ema=ema,
        ema_decay=EMA_DECAY if ema else None,
        levels=config.data_levels,
        data_convention=data_convention(config),
    )


def normal_interval(values) -> dict:
    """Mean of `values` (one per item) with its standard error and 95 % normal interval (both
    None for a single item: no spread to read)."""
    v = np.asarray(values, np.float64).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"a card's mean needs finite values; got {v.size} with non-finite ones.")
    mean = float(v.mean())
    if v.size == 1:
        return dict(value=mean, stderr=None, interval=None, interval_kind="none: one item")
    stderr = float(v.std(ddof=1) / math.sqrt(v.size))
    return dict(
        value=mean,
        stderr=stderr,
        interval=[mean - Z_95 * stderr, mean + Z_95 * stderr],
        interval_kind=f"normal, over {v.size} items",
    )


def bootstrap_interval(statistic, num: int, *, seed: int, num_resamples: int = 1000) -> dict:
    """`statistic(rows)` on all `num` items with its 95 % percentile bootstrap interval over
    `num_resamples` resamples of the items (with replacement; NumPy's generator from `seed`)."""
    value = float(statistic(np.arange(num)))
    if num < 2:
        return dict(value=value, interval=None, interval_kind="none: one item")
    low, high = bootstrap_bounds(statistic, num, seed=seed, num_resamples=num_resamples)
    return dict(
        value=value,
        interval=[float(low), float(high)],
        interval_kind=f"bootstrap over {num} items ({num_resamples} resamples, seed {seed})",
    )


def nfe_card(nfe) -> dict:
    """Score evaluations per item: the mean, and the range over items as its interval."""
    n = np.asarray(nfe, np.float64).ravel()
    return dict(nfe_mean=float(n.mean()), nfe_range=[float(n.min()), float(n.max())])
