r"""Fast probability-flow ODE solvers as diffrax solvers: exponential integrators and EDM's Heun.

The PF-ODE of a linear SDE is semi-linear. In the half log-SNR $\lambda = \ln(\alpha/\sigma)$ its
exact solution over a step $\lambda_s \to \lambda_t$, $h = \lambda_t - \lambda_s > 0$, is

- noise prediction $\hat\epsilon = -\sigma\,\mathrm{score}$ (DPM-Solver):
  $x_t = \frac{\alpha_t}{\alpha_s} x_s - \sigma_t \int_0^h e^{h - \tau}\hat\epsilon(\lambda_s + \tau)\,d\tau$;
- data prediction $\hat x_0 = (x + \sigma^2\,\mathrm{score})/\alpha$ (DPM-Solver++):
  $x_t = \frac{\sigma_t}{\sigma_s} x_s + \alpha_t \int_0^h e^{\tau - h}\hat x_0(\lambda_s + \tau)\,d\tau$.

Expanding the prediction in a polynomial in $\tau$ with Taylor coefficients $c_k$ integrates
exactly: $\sum_k c_k h^{k+1}\varphi_{k+1}(\pm h)$ with $\varphi_1(z) = (e^z - 1)/z$,
$\varphi_{k+1}(z) = (\varphi_k(z) - 1/k!)/z$. Single-step solvers get the coefficients from extra
evaluations inside the step; multistep solvers from the predictions of earlier steps (one score
evaluation per step).

Every solver here is a `diffrax.AbstractSolver` for the term
[`scoresde.probability_flow_term`][] (in the reversed time $s = T - t$; diffeqsolve wraps it in
`diffrax.WrapTerm`). It reads the SDE and the score from that term, so it works for every SDE with
`marginal`, `log_snr` and `log_snr_inverse` (VP, sub-VP, VE, EDM), on one sample or a whole batch
(the state may have any shape), in `diffrax.diffeqsolve` and in [`scoresde.sample_ode`][]. The
class attributes `evals_at_init` and `evals_per_step` give the exact cost.

The family: `base` (this module: the term, the model's predictions, $\varphi_k$), `single_step`
(DPM-Solver-1/2/3), `multistep` (DPM-Solver++ 2M/3M, UniPC) and `edm` (EDM's Heun).
"""

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._diffrax_private import WrapTerm as _WrapTerm
from .._grid import AbstractTimeGrid, LogSNRGrid
from .._nfe import AbstractCountedSolver
from .._score_calls import checked_score, tweedie
from .._sde import AbstractSDE
from .._terms import ProbabilityFlow

# --------------------------------------------------------------------------------------------
# phi functions, accurate for small arguments


def _phi(k: int, z):
    r"""$\varphi_k(z) = \sum_{j \ge 0} z^j / (j + k)!$, with a Taylor series for small $|z|$."""
    z = jnp.asarray(z)
    small = jnp.abs(z) < 0.5
    zs = jnp.where(small, z, 0.0)
    series = sum(zs**j / float(math.factorial(j + k)) for j in range(9))
    zl = jnp.where(small, 1.0, z)
    closed = jnp.expm1(zl)
    for j in range(1, k):
        closed = closed - zl**j / float(math.factorial(j))
    closed = closed / zl**k
    return jnp.where(small, series, closed)


# --------------------------------------------------------------------------------------------
# Reading the SDE and the score out of the term


def _unwrap(solver, terms):
    """`(sde, score, direction, time)` from `probability_flow_term(sde, score)`, possibly wrapped;
    `time(s)` maps the term's reversed time to the diffusion time."""
    term, direction = terms, 1
    while isinstance(term, _WrapTerm):
        direction = direction * term.direction
        term = term.term
    vf = term.vector_field if isinstance(term, dfx.ODETerm) else None
    if not isinstance(vf, ProbabilityFlow):
        raise TypeError(
            f"{type(solver).__name__} integrates the probability-flow ODE only: pass "
            "terms=scoresde.probability_flow_term(sde, score) (use scoresde.sample_ode, not "
            f"sample_sde); got {type(term).__name__}"
            + (f" of {type(vf).__name__}" if vf is not None else "")
            + "."
        )
    sde = vf.sde
    if not isinstance(sde, AbstractSDE):  # its marginal, log_snr and log_snr_inverse
        raise TypeError(
            f"{type(solver).__name__} needs a scoresde SDE (AbstractSDE: marginal, log_snr, "
            f"log_snr_inverse); got {type(sde).__name__}."
        )
    return sde, vf.score, direction, vf.time


class PFModel(eqx.Module):
    """The score and its noise / data predictions at a diffusion time `t`."""

    sde: AbstractSDE
    score: Callable

    def marginal(self, t):
        alpha, sigma = self.sde.marginal(t)
        return alpha, sigma, self.sde.log_snr(t)

    def at_lambda(self, lam):
        t = self.sde.log_snr_inverse(lam)
        alpha, sigma = self.sde.marginal(t)
        return t, alpha, sigma

    def eps(self, t, x, sigma):
        r"""$\hat\epsilon = -\sigma\,\mathrm{score}$."""
        return (-sigma * checked_score(self.score, t, x)).astype(x.dtype)

    def data(self, t, x):
        r"""$\hat x_0 = (x + \sigma^2\,\mathrm{score}) / \alpha$ (Tweedie's denoiser)."""
        return tweedie(self.sde, self.score, t, x)


def _times(time, direction, t0, t1):
    """Diffusion times of the step `[t0, t1]` in diffeqsolve's (wrapped, reversed) time."""
    return time(direction * t0), time(direction * t1)


def _check_y(solver, y0):
    if not isinstance(y0, (jax.Array, np.ndarray)):
        raise TypeError(
            f"{type(solver).__name__} needs the state y0 to be one array; got {type(y0).__name__}."
        )


class AbstractPFSolver(AbstractCountedSolver):
    """Base of this package's solvers: the term is [`scoresde.probability_flow_term`][].

    Subclasses state their exact cost in the class attributes `evals_at_init` and
    `evals_per_step` (read by [`scoresde.sample_ode`][] to count `nfe`), and the grid they
    sample best on in `default_grid`.
    """

    term_structure: ClassVar = dfx.ODETerm
    interpolation_cls: ClassVar[Callable[..., dfx.LocalLinearInterpolation]] = (
        dfx.LocalLinearInterpolation
    )

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def default_grid(self) -> AbstractTimeGrid:
        """The time grid of fixed steps when the sampler is given none (`grid=None`): the named
        grid with the smallest worst-case error for this solver in `benchmarks/default_grids.py`
        (its ratio to the best grid, over ring2d and aniso64 under VP and EDM and two digits
        U-Nets, at 5, 10 and 20 evaluations). For the exponential integrators
        [`scoresde.LogSNRGrid`][], uniform in the variable they integrate in."""
        return LogSNRGrid()

    def on_fixed_steps(self, steps: int) -> "AbstractPFSolver":
        """This solver as run for exactly `steps` fixed steps ([`scoresde.sample_ode`][] calls
        it): itself, except for solvers that spend their last step differently."""
        del steps
        return self


class _SingleStep(AbstractPFSolver):
    """A solver whose step needs the state alone (no history): subclasses define
    `_step(model, ts, tt, x, last) -> (y1, y_error)` between diffusion times `ts > tt`.

    On a fixed budget (`_budget()` steps; the solver state then counts the steps taken) `last`
    is a traced bool, True on the last step; without one it is `None` (no solver state)."""

    def _budget(self) -> int | None:
        """The number of fixed steps whose last one is `last`; `None`: no step is."""
        return None

    def init(self, terms, t0, t1, y0, args):
        _unwrap(self, terms)
        _check_y(self, y0)
        return None if self._budget() is None else jnp.zeros((), jnp.int32)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        sde, score, direction, time = _unwrap(self, terms)
        model = PFModel(sde, score)
        ts, tt = _times(time, direction, t0, t1)
        budget = self._budget()
        if budget is None:
            last, new_state = None, None
        else:
            last, new_state = solver_state >= budget - 1, solver_state + 1
        y1, y_error = self._step(model, ts, tt, y0, last)
        dense_info = dict(y0=y0, y1=y1)
        return y1, y_error, dense_info, new_state, dfx.RESULTS.successful

    @abc.abstractmethod
    def _step(self, model: PFModel, ts, tt, x, last):
        """`(y1, y_error)` of one step from diffusion time `ts` down to `tt`; `last`: whether it
        is the last step of a fixed budget (`None` without a budget)."""


LONG_STEP = 3.0
"""On a fixed budget, a step longer than this in the half log-SNR takes first-order steps."""


class _Budgeted(_SingleStep):
    """A single-step solver that lowers the order of some steps of a fixed budget
    (`fixed_steps`; the rules: `single_step`'s docstring)."""

    fixed_steps: eqx.AbstractVar[int | None]

    def _budget(self):
        return self.fixed_steps

    def on_fixed_steps(self, steps):
        if self.fixed_steps not in (None, steps):
            raise ValueError(
                f"{type(self).__name__}(fixed_steps={self.fixed_steps}) runs on a grid of "
                f"{steps} steps; pass fixed_steps={steps} or leave it None."
            )
        return dataclasses.replace(self, fixed_steps=steps)  # every other field kept


def _check_fixed_steps(solver):
    steps = solver.fixed_steps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"fixed_steps must be None or an int >= 1; got fixed_steps={steps!r}.")
