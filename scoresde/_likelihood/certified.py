"""Mean log-likelihood of a data set with an error bar split into its sources: the two-level
(cheap everywhere, tight on a random subset) estimator of `two_level.py` on the per-sample
solves of `log_likelihood` and `bits_per_dim`."""

import math

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import check_batch, check_positive
from .._data import num_levels
from .._sde import AbstractSDE
from .batching import AbstractSchedule
from .bits_per_dim import (
    AbstractDequantization,
    UniformDequantization,
    as_dequantization,
    bits_per_dim,
)
from .divergence import AbstractDivergence
from .integration_variable import (
    AbstractIntegrationVariable,
    TimeVariable,
    as_integration_variable,
)
from .log_likelihood import (
    ADJOINT,
    ATOL,
    DIVERGENCE,
    MAX_STEPS,
    RTOL,
    SOLVER,
    T_EPS,
    VARIABLE,
    log_likelihood,
)
from .solver_level import SolverLevel, as_tight_level
from .two_level import MeanLogLikelihood as MeanLogLikelihood, estimate


class BitsPerDimEstimate(eqx.Module):
    r"""Result of [`scoresde.estimate_bits_per_dim`][]: the mean bits/dim `bpd` with its `level`
    interval (`low`, `high`), `stderr` and its parts `stderr_data`, `stderr_probes` (probes and
    dequantisation), `stderr_bias`, all in bits/dim; `nats` holds the estimate of
    $E[\ln p_x]$ it comes from (per-sample values, NFE, the plan), and
    `log_det_jacobian` the map from $x$ to the integer grid:
    $\text{bpd} = -(\text{nats.mean} + \text{log\_det\_jacobian}) / (D\ln 2)$."""

    bpd: Float[Array, ""]
    stderr: Float[Array, ""]
    low: Float[Array, ""]
    high: Float[Array, ""]
    stderr_data: Float[Array, ""]
    stderr_probes: Float[Array, ""]
    stderr_bias: Float[Array, ""]
    log_det_jacobian: Float[Array, ""]
    num_dims: int = eqx.field(static=True)
    nats: MeanLogLikelihood


def _check_divergence(divergence) -> AbstractDivergence:
    if not isinstance(divergence, AbstractDivergence):
        raise TypeError(
            "divergence must be ExactDivergence(), Hutchinson(...) or EigenHutchinson(...); "
            f"got divergence={divergence!r}."
        )
    return divergence


def _cheap_level(*, solver, rtol, atol, stepsize_controller, dt0, max_steps, nats_tol):
    """The cheap level as a value (`rtol`, `atol` default to `log_likelihood`'s) and the names
    of the cheap-level arguments that were given, which a planned estimate refuses."""
    given = dict(rtol=rtol, atol=atol, nats_tol=nats_tol, stepsize_controller=stepsize_controller)
    clash = tuple(name for name, value in given.items() if value is not None)
    cheap = SolverLevel(
        solver=solver,
        rtol=RTOL if rtol is None else rtol,
        atol=ATOL if atol is None else atol,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        nats_tol=nats_tol,
    )
    return cheap, clash


def _first_step(sde, dt0, variable):
    """The planned cheap levels start with a step of T/1024 in t (unless `dt0` or another
    `variable` is given): with the default T/64 a loose tolerance can accept a first step that
    misses a trained model's sharp start near the data."""
    if dt0 is not None or not isinstance(variable, TimeVariable):
        return None
    return sde.T / 1024


def estimate_mean_log_likelihood(
    sde: AbstractSDE,
    score,
    x,
    *,
    key,
    population: bool = True,
    half_width: float | None = None,
    tolerances=(1e-2, 1e-3, 1e-4),
    num_pilot: int | None = None,
    num_tight: int | None = None,
    tight: SolverLevel | dict | None = None,
    level: float = 0.95,
    solver: dfx.AbstractSolver = SOLVER,
    rtol: float | None = None,
    atol: float | None = None,
    t_eps: float = T_EPS,
    divergence: AbstractDivergence = DIVERGENCE,
    prior_log_prob=None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: AbstractIntegrationVariable | str = VARIABLE,
    dt0: float | None = None,
    max_steps: int = MAX_STEPS,
    adjoint: dfx.AbstractAdjoint = ADJOINT,
    throw: bool = True,
    lanes=None,
    progress: bool = False,
    nats_tol: float | None = None,
    schedule: AbstractSchedule | None = None,
    sharding=None,
    chunk_size: int | None = None,
) -> MeanLogLikelihood:
    r"""Mean log-likelihood of the data `x` (nats per sample) with a certified error bar.

    Solves every sample with [`scoresde.log_likelihood`][] (the cheap level), re-solves a
    random subset with the same probes at the `tight` level, and corrects the cheap mean by the subset's mean difference; see
    [`scoresde.MeanLogLikelihood`][] for the parts of the error bar.

    $\hat\mu = \frac1n \sum_i L_i + \frac1m \sum_{j \in S} (L^\star_j - L_j)$: cheap solves $L_i$ on
    all $n$ samples, tight re-solves $L^\star_j$ (the SAME probes and dequantisation) on a random
    subset $S$ of $m$ samples, whose mean difference $d$ corrects the cheap solves' bias (a two-level
    estimator). Two targets:

    - the population, $E_{x \sim \text{data}}[\ln p_{t_\varepsilon}(x)]$:
      $\operatorname{Var}\hat\mu \approx \operatorname{Var}(L)/n + \operatorname{Var}(d)/m +
      2\operatorname{Cov}(L, d)/n$;
    - the data set's own mean $\frac1n\sum_i \ln p_{t_\varepsilon}(x_i)$ (a test set's figure):
      $\operatorname{Var}\hat\mu \approx v/n + (1 - m/n)\operatorname{Var}(d)/m$, with $v$ the
      per-sample noise variance of the probes (and dequantisation), estimated from two independent
      solves of the same samples, $v \approx \overline{(L_a - L_b)^2}/2$.

    Given a half-width $h$ at level $1 - \alpha$, a pilot on a random subset measures, for each
    candidate cheap tolerance, its mean NFE $N_c$ and $\operatorname{Var}(d_c)$, and the tight NFE
    $N^\star$; the plan takes the tolerance and the least $m$ with $z\sqrt{\operatorname{Var}\hat\mu}
    \le h$ that minimise the evaluations still to pay, $(n - p) N_c + (m - p) N^\star$.

    **Arguments:**

    - `solver`, `rtol`, `atol`, `stepsize_controller`, `dt0`, `max_steps`, `nats_tol`: the
      cheap level's solve, as in [`scoresde.log_likelihood`][] (`rtol`, `atol`: default
      `1e-5`, its default); `t_eps`, `divergence`, `prior_log_prob`, `variable`, `adjoint`,
      `throw`, `lanes`, `schedule`, `progress`, `sharding`, `chunk_size`: those of
      [`scoresde.log_likelihood`][], shared by both levels.

    - `key`: the random subsets and every sample's probes (and dequantisation): the cheap and
      tight solves of a sample share them; the noise solves draw independent ones.
    - `population`: `True` (default) for the population mean $E_{x\sim\text{data}}$ (the
      data's spread is part of the error), `False` for the mean over THESE samples (a test set's
      own figure: only the probe and dequantisation noise and the bias correction count, with
      the finite-population factor; the noise is measured by solving the first subset again with
      independent probes).
    - `half_width`: plan for this half-width of the `level` interval: a pilot of `num_pilot`
      samples (default $\min(n, 32)$) is solved tightly and at each cheap `rtol = atol` in
      `tolerances` (first step `dt0` $= T/1024$ in $t$ unless given), and the plan takes the
      tolerance and subset size with the fewest evaluations still to pay (`rtol`, `atol`,
      `nats_tol`, `stepsize_controller` and `num_tight` are then not allowed). The plan uses the pilot's variances, so the realised interval can come out
      somewhat wider or narrower than asked; it is honest either way. Raises `ValueError` if the
      data's spread (population) or the per-sample noise alone is wider than asked.
    - `num_tight`: without a plan, the subset size $m$ (default $\min(n, \max(16, n/8))$).
    - `tight`: the tight level, a [`scoresde.SolverLevel`][] (default: `Dopri8` at
      `rtol = atol = 1e-9` in float64, `Dopri5` at `1e-6` in float32); a dict of its fields
      (`solver`, `rtol`, ...) is still accepted and changes those of the cheap level.
    - `level`: the coverage of the interval `(low, high)`, in $(0, 1)$.
    """
    x = check_batch("x", x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x must hold at least 2 samples; got {n}.")
    divergence = _check_divergence(divergence)
    variable = as_integration_variable(variable)
    cheap, clash = _cheap_level(
        solver=solver,
        rtol=rtol,
        atol=atol,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        nats_tol=nats_tol,
    )
    tight = as_tight_level(tight, cheap, x.dtype)

    def evaluate(indices, key_i, level):
        res = log_likelihood(
            sde,
            score,
            x[indices],
            key=key_i,
            t_eps=t_eps,
            divergence=divergence,
            prior_log_prob=prior_log_prob,
            variable=variable,
            adjoint=adjoint,
            throw=throw,
            lanes=lanes,
            progress=progress,
            schedule=schedule,
            sharding=sharding,
            chunk_size=chunk_size,
            solver=level.solver,
            rtol=level.rtol,
            atol=level.atol,
            stepsize_controller=level.stepsize_controller,
            dt0=level.dt0,
            max_steps=level.max_steps,
            nats_tol=level.nats_tol,
        )
        return res.log_prob, res.nfe, res.stderr

    return estimate(
        evaluate,
        n,
        x.dtype,
        key=key,
        cheap=cheap,
        tight=tight,
        first_step=_first_step(sde, dt0, variable),
        clash=clash,
        num_tight=num_tight,
        level=level,
        population=population,
        half_width=half_width,
        tolerances=tolerances,
        num_pilot=num_pilot,
        noisy=divergence.stochastic,
    )


def estimate_bits_per_dim(
    sde: AbstractSDE,
    score,
    k,
    *,
    key,
    bits=None,
    levels=None,
    low: float = -1.0,
    high: float = 1.0,
    dequantization: AbstractDequantization | str = UniformDequantization(),
    num_repeats: int = 1,
    population: bool = True,
    half_width: float | None = None,
    tolerances=(1e-2, 1e-3, 1e-4),
    num_pilot: int | None = None,
    num_tight: int | None = None,
    tight: SolverLevel | dict | None = None,
    level: float = 0.95,
    solver: dfx.AbstractSolver = SOLVER,
    rtol: float | None = None,
    atol: float | None = None,
    t_eps: float = T_EPS,
    divergence: AbstractDivergence = DIVERGENCE,
    prior_log_prob=None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: AbstractIntegrationVariable | str = VARIABLE,
    dt0: float | None = None,
    max_steps: int = MAX_STEPS,
    adjoint: dfx.AbstractAdjoint = ADJOINT,
    throw: bool = True,
    lanes=None,
    progress: bool = False,
    nats_tol: float | None = None,
    schedule: AbstractSchedule | None = None,
    sharding=None,
    chunk_size: int | None = None,
) -> BitsPerDimEstimate:
    r"""Mean bits/dim of integer data `k` with a certified error bar: the two-level estimator of
    [`scoresde.estimate_mean_log_likelihood`][] on the data convention of
    [`scoresde.bits_per_dim`][] (`bits`/`levels`, `low`, `high`, `dequantization` (a
    [`scoresde.AbstractDequantization`][] or its alias),
    `num_repeats` draws of the dequantisation noise per sample, shared by its cheap and tight
    solves; each draw is one more solve, and the draws' mean is the per-sample figure). The
    dequantisation noise does not shrink with more probes: where it dominates, raise
    `num_repeats`.
    `half_width` is in bits/dim; the other arguments are those of
    [`scoresde.estimate_mean_log_likelihood`][]. For a test set's own figure pass
    `population=False`.
    """
    if half_width is not None:
        check_positive("half_width", half_width)  # in bits/dim, as given (not in nats)
    k = jnp.asarray(k)
    if k.ndim < 2:
        raise ValueError(f"k has shape {k.shape}; expected (batch, *data_shape).")
    n = k.shape[0]
    if n < 2:
        raise ValueError(f"k must hold at least 2 samples; got {n}.")
    num = num_levels(bits, levels)
    num_dims = math.prod(k.shape[1:])
    scale = num_dims * math.log(2)
    dequantization = as_dequantization(dequantization)
    divergence = _check_divergence(divergence)
    variable = as_integration_variable(variable)
    cheap, clash = _cheap_level(
        solver=solver,
        rtol=rtol,
        atol=atol,
        stepsize_controller=stepsize_controller,
        dt0=dt0,
        max_steps=max_steps,
        nats_tol=nats_tol,
    )
    tight = as_tight_level(tight, cheap, jnp.result_type(float))

    def evaluate(indices, key_i, level):
        res = bits_per_dim(
            sde,
            score,
            k[indices],
            key=key_i,
            levels=num,
            low=low,
            high=high,
            dequantization=dequantization,
            num_repeats=num_repeats,
            t_eps=t_eps,
            divergence=divergence,
            prior_log_prob=prior_log_prob,
            variable=variable,
            adjoint=adjoint,
            throw=throw,
            lanes=lanes,
            progress=progress,
            schedule=schedule,
            sharding=sharding,
            chunk_size=chunk_size,
            solver=level.solver,
            rtol=level.rtol,
            atol=level.atol,
            stepsize_controller=level.stepsize_controller,
            dt0=level.dt0,
            max_steps=level.max_steps,
            nats_tol=level.nats_tol,
        )
        return res.log_prob, res.nfe, None if res.stderr is None else res.stderr * scale

    nats = estimate(
        evaluate,
        n,
        jnp.result_type(float),
        key=key,
        cheap=cheap,
        tight=tight,
        first_step=_first_step(sde, dt0, variable),
        clash=clash,
        num_tight=num_tight,
        level=level,
        population=population,
        half_width=None if half_width is None else half_width * scale,
        tolerances=tolerances,
        num_pilot=num_pilot,
        noisy=divergence.stochastic or dequantization.stochastic,
        unit=(scale, "bits/dim"),
    )
    log_det = jnp.asarray(num_dims * math.log((high - low) / num), nats.mean.dtype)
    bpd = -(nats.mean + log_det) / scale
    return BitsPerDimEstimate(
        bpd=bpd,
        stderr=nats.stderr / scale,
        low=-(nats.high + log_det) / scale,
        high=-(nats.low + log_det) / scale,
        stderr_data=nats.stderr_data / scale,
        stderr_probes=nats.stderr_probes / scale,
        stderr_bias=nats.stderr_bias / scale,
        log_det_jacobian=log_det,
        num_dims=num_dims,
        nats=nats,
    )
