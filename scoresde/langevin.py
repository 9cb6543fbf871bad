"""Langevin sampling: kernels, preconditioners (metrics) and their estimators, Lanczos curvature,
Ozaki steps and step-size adaptation.

Re-exports only; every name is also at the top level (`ss.MALA`).
"""

from ._langevin.kernels import (
    MALA as MALA,
    AbstractFixedCostKernel as AbstractFixedCostKernel,
    AbstractLangevinKernel as AbstractLangevinKernel,
    AbstractStepSizeKernel as AbstractStepSizeKernel,
    AnnealedLangevin as AnnealedLangevin,
    AnnealedLangevinState as AnnealedLangevinState,
    LangevinInfo as LangevinInfo,
    LangevinResult as LangevinResult,
    LangevinState as LangevinState,
    MALAState as MALAState,
    UnadjustedLangevin as UnadjustedLangevin,
    annealed_langevin as annealed_langevin,
    run_langevin as run_langevin,
)
from ._langevin.lanczos import (
    AbstractCurvaturePoints as AbstractCurvaturePoints,
    LanczosCurvature as LanczosCurvature,
    PilotMean as PilotMean,
    PilotPoints as PilotPoints,
    lanczos_curvature as lanczos_curvature,
    lanczos_per_level as lanczos_per_level,
)
from ._langevin.metric_estimators import (
    AbstractMetricEstimator as AbstractMetricEstimator,
    CovarianceEstimator as CovarianceEstimator,
    FisherDivergenceEstimator as FisherDivergenceEstimator,
    FisherEstimator as FisherEstimator,
    LanczosEstimator as LanczosEstimator,
    estimate_preconditioner as estimate_preconditioner,
)
from ._langevin.ozaki import (
    OzakiLangevin as OzakiLangevin,
    OzakiState as OzakiState,
)
from ._langevin.preconditioners import (
    AbstractPreconditioner as AbstractPreconditioner,
    DensePreconditioner as DensePreconditioner,
    DiagonalPreconditioner as DiagonalPreconditioner,
    IdentityPreconditioner as IdentityPreconditioner,
    LowRankPreconditioner as LowRankPreconditioner,
)
from ._langevin.step_size_adaptation import (
    StepSizeAdaptation as StepSizeAdaptation,
    adapt_step_size as adapt_step_size,
)

__all__ = [
    "MALA",
    "AbstractLangevinKernel",
    "AbstractFixedCostKernel",
    "AbstractStepSizeKernel",
    "AnnealedLangevin",
    "AnnealedLangevinState",
    "LangevinInfo",
    "LangevinResult",
    "LangevinState",
    "MALAState",
    "UnadjustedLangevin",
    "annealed_langevin",
    "run_langevin",
    "AbstractPreconditioner",
    "DensePreconditioner",
    "DiagonalPreconditioner",
    "IdentityPreconditioner",
    "LowRankPreconditioner",
    "estimate_preconditioner",
    "AbstractMetricEstimator",
    "CovarianceEstimator",
    "FisherEstimator",
    "FisherDivergenceEstimator",
    "LanczosEstimator",
    "AbstractCurvaturePoints",
    "PilotMean",
    "PilotPoints",
    "LanczosCurvature",
    "lanczos_curvature",
    "lanczos_per_level",
    "OzakiLangevin",
    "OzakiState",
    "StepSizeAdaptation",
    "adapt_step_size",
]
