"""The solver a saved [`scoresde.TimeGrid`][] was tuned for, back from its name.

`TimeGrid.solver` holds `tune_grid.solver_name(solver)` (the class name, and the order where the
solver has one: `"UniPC(3)"`, `"DPMSolverPP2M"`, `"DPMSolver1"` for DDIM). `solver_from_name`
turns such a name back into the solver value; the table is built by applying `solver_name` to
the solvers it knows, so the two cannot drift apart.
"""

import diffrax as dfx

from .._solver import (
    DPMSolver1,
    DPMSolver2,
    DPMSolver3,
    DPMSolverPP2M,
    DPMSolverPP3M,
    EDMHeun,
    UniPC,
)
from .tune_grid import solver_name

_KNOWN = (
    DPMSolver1(),  # = DDIM
    DPMSolver2(),
    DPMSolver3(),
    DPMSolverPP2M(),
    DPMSolverPP3M(),
    UniPC(1),
    UniPC(2),
    UniPC(3),
    UniPC(1, corrector=False),
    UniPC(2, corrector=False),
    UniPC(3, corrector=False),
    EDMHeun(),
    # diffrax's explicit Runge-Kutta solvers (tune_grid takes them on fixed steps too)
    dfx.Euler(),
    dfx.Heun(),
    dfx.Midpoint(),
    dfx.Ralston(),
    dfx.Bosh3(),
    dfx.Tsit5(),
    dfx.Dopri5(),
)

SOLVERS: dict[str, dfx.AbstractSolver] = {solver_name(s): s for s in _KNOWN}
"""The solver of each name `solver_name` gives (default arguments; a budgeted solver's
`fixed_steps` is set by the sampler from the grid)."""


def solver_from_name(name: str) -> dfx.AbstractSolver:
    """The solver `name` stands for (a key of `SOLVERS`, e.g. a `TimeGrid`'s `solver`).

    **Raises:** `ValueError` naming `name` and the known names if it is none of them."""
    if not isinstance(name, str) or name not in SOLVERS:
        if name == "":
            raise ValueError("the grid names no solver (TimeGrid.solver is empty).")
        raise ValueError(f"unknown solver name {name!r}; known: {', '.join(sorted(SOLVERS))}.")
    return SOLVERS[name]
