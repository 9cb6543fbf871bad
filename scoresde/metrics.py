"""Sample-quality metrics: sliced Wasserstein, MMD, mode weights, and the digit metrics.

Re-exports only; every name is also at the top level (`ss.sliced_wasserstein`).
"""

from ._metrics.digits import (
    DigitClassifier as DigitClassifier,
    DigitMetrics as DigitMetrics,
    digit_metrics as digit_metrics,
    frechet_distance as frechet_distance,
)
from ._metrics.sample_distances import (
    median_bandwidth as median_bandwidth,
    mmd2 as mmd2,
    mode_weight_error as mode_weight_error,
    mode_weights as mode_weights,
    sliced_wasserstein as sliced_wasserstein,
)

__all__ = [
    "median_bandwidth",
    "mmd2",
    "mode_weight_error",
    "mode_weights",
    "sliced_wasserstein",
    "DigitClassifier",
    "DigitMetrics",
    "digit_metrics",
    "frechet_distance",
]
