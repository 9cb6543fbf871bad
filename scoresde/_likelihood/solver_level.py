r"""An accuracy level of the likelihood solve: the solver and its step-size control, as a value.

The certified estimators solve every sample at a cheap level and a random subset at a tight
one; `tight=` takes a [`scoresde.SolverLevel`][] (or, as before, a dict of its fields, read as
changes to the cheap level).
"""

import dataclasses

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp

from .._checks import check_int, check_positive, check_solver


class SolverLevel(eqx.Module):
    """One accuracy level of [`scoresde.log_likelihood`][]'s solve, passed as `tight=` to
    [`scoresde.estimate_mean_log_likelihood`][] and [`scoresde.estimate_bits_per_dim`][].

    - `solver`: any explicit diffrax ODE solver.
    - `rtol`, `atol`: the tolerances of the default `diffrax.PIDController` (error norm as in
      `log_likelihood`); unused with `stepsize_controller` or `nats_tol`.
    - `stepsize_controller`: a diffrax step-size controller instead (default `None`).
    - `dt0`: the first step (default `None`: a 64th of the interval).
    - `max_steps`: the most steps per solve (default 16384, room for tight tolerances).
    - `nats_tol`: control the error of the probe-mean divergence integral in nats instead
      (see `log_likelihood`; default `None`).

    The default tight level is `SolverLevel(diffrax.Dopri8(), 1e-9, 1e-9)` in float64 and
    `SolverLevel(diffrax.Dopri5(), 1e-6, 1e-6)` in float32, where rounding limits both solvers
    and Dopri5 costs fewer evaluations (measured in the likelihood how-to).
    """

    solver: dfx.AbstractSolver
    rtol: float
    atol: float
    stepsize_controller: dfx.AbstractStepSizeController | None = None
    dt0: float | None = None
    max_steps: int = 16384
    nats_tol: float | None = None

    def __check_init__(self):
        check_solver(self.solver, self.stepsize_controller)
        check_positive("rtol", self.rtol)
        check_positive("atol", self.atol, strict=False)
        check_int("max_steps", self.max_steps)
        if self.nats_tol is not None:
            check_positive("nats_tol", self.nats_tol)


def default_tight(dtype) -> SolverLevel:
    """Dopri8 at 1e-9 in float64; Dopri5 at 1e-6 in float32 (see `SolverLevel`)."""
    if dtype == jnp.float64:
        return SolverLevel(dfx.Dopri8(), 1e-9, 1e-9)
    return SolverLevel(dfx.Dopri5(), 1e-6, 1e-6)


FIELDS = tuple(f.name for f in dataclasses.fields(SolverLevel))


def as_tight_level(tight, cheap: SolverLevel, dtype) -> SolverLevel:
    """`tight=` as a value: a [`scoresde.SolverLevel`][]; `None` for the default of `dtype`; or
    a dict of `SolverLevel` fields, the changes to the `cheap` level (fields it does not name
    are the cheap level's). Raises `TypeError`/`ValueError` naming `tight` otherwise."""
    if tight is None:
        return default_tight(dtype)
    if isinstance(tight, SolverLevel):
        return tight
    if isinstance(tight, dict):
        unknown = sorted(set(tight) - set(FIELDS))
        if unknown:
            raise ValueError(
                f"tight as a dict may only change the solve's settings {FIELDS}; got "
                f"{', '.join(map(repr, unknown))} in tight={tight!r} (the tight solves share "
                "the cheap ones' divergence, t_eps and prior: pass those as arguments)."
            )
        return dataclasses.replace(cheap, **tight)
    raise TypeError(
        "tight must be ss.SolverLevel(solver, rtol, atol, ...), a dict of its fields or None "
        f"(the default); got tight={tight!r}."
    )
