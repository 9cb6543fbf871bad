"""The percentile bootstrap, written once: the 95 % intervals of the metric cards
(`scoresde._cli.card`) and of `scoresde.digit_metrics`."""

import numpy as np

LEVEL = 0.95


def bootstrap_bounds(
    statistic, num: int, *, seed: int, num_resamples: int, recentre: bool = False
) -> tuple[float, float]:
    """The `LEVEL` bootstrap interval `(low, high)` of `statistic(rows)` over `num` items:
    the outer percentiles of `statistic` on `num_resamples` resamples of `num` row indices
    drawn with replacement (NumPy's generator seeded with `seed`).

    With `recentre`, the interval is moved so that the resamples' median sits on the estimate
    `statistic(arange(num))`, with its half-widths kept: for a statistic biased by the repeats a
    resample holds (a distance between laws fitted to the rows grows with them), whose plain
    percentiles lie beside the estimate's own spread."""
    if num_resamples < 2:
        raise ValueError(f"num_resamples must be >= 2; got {num_resamples}.")
    if num < 2:
        raise ValueError(f"a bootstrap needs at least 2 items; got {num}.")
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, num, num)) for _ in range(num_resamples)]
    low, median, high = np.quantile(draws, [(1 - LEVEL) / 2, 0.5, (1 + LEVEL) / 2])
    if not recentre:
        return float(low), float(high)
    estimate = float(statistic(np.arange(num)))
    return estimate - float(median - low), estimate + float(high - median)
