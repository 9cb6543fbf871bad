"""Fast probability-flow ODE solvers: the exponential-integrator family and EDM's Heun."""

from .base import AbstractPFSolver as AbstractPFSolver
from .edm import EDMHeun as EDMHeun, heun_step as heun_step
from .multistep import (
    DPMSolverPP2M as DPMSolverPP2M,
    DPMSolverPP3M as DPMSolverPP3M,
    UniPC as UniPC,
)
from .single_step import (
    DDIM as DDIM,
    DPMSolver1 as DPMSolver1,
    DPMSolver2 as DPMSolver2,
    DPMSolver3 as DPMSolver3,
)
