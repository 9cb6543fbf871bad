"""Langevin sampling: kernels, preconditioners (metrics) and their estimators, Lanczos curvature,
Ozaki steps and step-size adaptation.

Re-exports only; every name is also at the top level (`ss.MALA`).
"""

from ._langevin.kernels import (
    MALA as MALA,
    AbstractLangevinKernel as AbstractLangevinKernel,
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
    LanczosCurvature as LanczosCurvature,
    lanczos_curvature as lanczos_curvature,
    lanczos_per_level as lanczos_per_level,
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
    estimate_preconditioner as estimate_preconditioner,
)
from ._langevin.step_size_adaptation import (
    StepSizeAdaptation as StepSizeAdaptation,
    adapt_step_size as adapt_step_size,
)

__all__ = [
    "MALA",
    "AbstractLangevinKernel",
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
    "LanczosCurvature",
    "lanczos_curvature",
    "lanczos_per_level",
    "OzakiLangevin",
    "OzakiState",
    "StepSizeAdaptation",
    "adapt_step_size",
]
