"""Inverse problems: measurements, guided scores (`scoresde.guidance`) and sequential Monte Carlo.

Re-exports only; every name is also at the top level (`ss.sample_smc`) or in `ss.guidance`.
"""

from . import guidance as guidance
from ._inverse.measurement import (
    AbstractMeasurement as AbstractMeasurement,
    LinearMeasurement as LinearMeasurement,
)
from ._inverse.smc import (
    AbstractTwist as AbstractTwist,
    LogTwist as LogTwist,
    MomentTwist as MomentTwist,
    SMCResult as SMCResult,
    TweedieTwist as TweedieTwist,
    sample_smc as sample_smc,
)

__all__ = [
    "guidance",
    "AbstractMeasurement",
    "LinearMeasurement",
    "AbstractTwist",
    "LogTwist",
    "MomentTwist",
    "SMCResult",
    "TweedieTwist",
    "sample_smc",
]
