r"""The two-level estimator of a mean log-likelihood, in named steps.

Cheap solves $L_i$ on all $n$ samples, tight re-solves $L^\star_j$ (the same probes and
dequantisation) on a random subset $S$ of $m$ samples; the subset's mean difference
$d = L^\star - L$ corrects the cheap mean's bias. The steps, each returning the evaluations it
made:

1. `_pilot`: on block A (a random subset of $p$ samples: the pilot, or the whole tight subset
   without a plan), the tight solves, the cheap solves at each candidate level and, where the
   per-sample noise must be measured, a second cheap solve with independent probes;
2. `_plan`: the cheap level and subset size $m \ge p$ with the fewest evaluations still to pay
   for the requested half-width (or the one cheap level and $m = p$ without a plan);
3. `_cheap_pass`: cheap solves on block B (the other $n - p$ samples);
4. `_tight_resolves`: tight re-solves of block B's first $m - p$ samples;
5. `_combine`: the bias-corrected mean and its error bar, split into its sources.

`evaluate(indices, key, level) -> (log_prob, nfe, probe_error)` solves the samples `indices`
at a [`scoresde.SolverLevel`][] (`probe_error`: the per-sample standard error over the probes,
or `None`); sample randomness (probes, dequantisation) comes from `key` and the
sample's position, so a sample's cheap and tight solves share it.
"""

import dataclasses
import math
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.stats as jss
import numpy as np
from jaxtyping import Array, Float, Int

from .._checks import check_bool, check_int, check_key, check_positive
from .solver_level import SolverLevel


class MeanLogLikelihood(eqx.Module):
    r"""Result of [`scoresde.estimate_mean_log_likelihood`][] (nats per sample).

    - `mean`: the bias-corrected estimate $\hat\mu$; `low`, `high`: the `level` interval
      $\hat\mu \pm z\,$`stderr` (normal quantile $z$); `population`: which target it is for
      (see the function).
    - `stderr`: its total standard error, and its parts (in quadrature, up to the covariance
      term): `stderr_data` (the spread of $\ln p$ over the data; 0 for a data set's own mean),
      `stderr_probes` (the per-sample noise of the divergence estimator and dequantisation: 0
      without either; from the spread over several probes, or with one probe measured by
      solving the pilot block again with independent probes, counted in `total_nfe`; for the
      population target the data part excludes it) and `stderr_bias` (the standard error of the
      bias correction, with the finite-population factor $1 - m/n$ for a data set's own mean).
    - `bias_correction`: $\frac1m\sum_{j\in S}(L^\star_j - L_j)$; `cheap_mean`: $\frac1n\sum L_i$.
    - `log_prob`: the cheap per-sample $L_i$ (in the order of `x`); `tight_indices`: $S$;
      `tight_log_prob`: $L^\star_j$ on $S$.
    - `nfe`: score evaluations, cheap (per sample) and `tight_nfe` (per sample of $S$);
      `total_nfe`: every evaluation the call made (pilot and noise solves included).
    - `cheap_tol`: the planned cheap `rtol = atol` (`None` without a plan); `plan`: one row
      per candidate tolerance, `(rtol, pilot mean NFE, sd of the tight-minus-cheap difference
      in nats, subset size, evaluations still to pay)` (`None` without a plan).
    """

    mean: Float[Array, ""]
    stderr: Float[Array, ""]
    low: Float[Array, ""]
    high: Float[Array, ""]
    level: float = eqx.field(static=True)
    population: bool = eqx.field(static=True)
    stderr_data: Float[Array, ""]
    stderr_probes: Float[Array, ""]
    stderr_bias: Float[Array, ""]
    bias_correction: Float[Array, ""]
    cheap_mean: Float[Array, ""]
    log_prob: Float[Array, " batch"]
    tight_indices: Int[Array, " subset"]
    tight_log_prob: Float[Array, " subset"]
    nfe: Int[Array, " batch"]
    tight_nfe: Int[Array, " subset"]
    total_nfe: Int[Array, ""]
    cheap_tol: float | None = eqx.field(static=True)
    plan: tuple | None = eqx.field(static=True, default=None)

    def bits_per_dim(self, num_dims: int, log_det_jacobian: float = 0.0):
        r"""`(bpd, stderr)`: $-(\hat\mu + \text{log\_det\_jacobian}) / (D\ln 2)$ for data whose
        density is taken in a space mapped affinely from $x$ (see [`scoresde.bits_per_dim`][]
        for the 8-bit convention; its `log_det_jacobian` goes here)."""
        scale = num_dims * math.log(2)
        return -(self.mean + log_det_jacobian) / scale, self.stderr / scale


class _Solves(NamedTuple):
    """Solves of some samples at one level: per-sample `log_prob`, `nfe` and `probe_error`
    (the per-sample standard error over the probes, or `None`)."""

    log_prob: Array
    nfe: Array
    probe_error: Array | None

    @property
    def evaluations(self) -> int:
        return int(jnp.sum(self.nfe))


def _concat(a: _Solves, b: _Solves | None) -> tuple[Array, Array]:
    """`(log_prob, nfe)` of `a` followed by `b` (if any)."""
    if b is None:
        return a.log_prob, a.nfe
    return jnp.concatenate([a.log_prob, b.log_prob]), jnp.concatenate([a.nfe, b.nfe])


class _Design(NamedTuple):
    """The checked arguments: normal quantile `z`, block A's size `p`, the candidate cheap
    `levels` and their `tolerances` (`None` without a plan)."""

    z: float
    p: int
    levels: tuple[SolverLevel, ...]
    tolerances: tuple[float, ...] | None


def _design(*, n, cheap, first_step, level, half_width, clash, tolerances, num_pilot, num_tight):
    """Check the arguments; with `half_width`, one candidate cheap level per tolerance (first
    step `first_step` where it is not `None`)."""
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1); got level={level!r}.")
    z = float(jss.norm.ppf(0.5 + level / 2))
    if half_width is None:
        p = min(n, max(16, n // 8)) if num_tight is None else check_int("num_tight", num_tight)
        if not 2 <= p <= n:
            raise ValueError(f"num_tight must be in [2, {n}] (the batch); got num_tight={p}.")
        return _Design(z, p, (cheap,), None)
    check_positive("half_width", half_width)
    given = list(clash) + (["num_tight"] if num_tight is not None else [])
    if given:
        raise ValueError(
            f"half_width plans the cheap tolerance and the subset size; do not also pass "
            f"{', '.join(given)}."
        )
    tolerances = tuple(float(t) for t in tolerances)
    if not tolerances or min(tolerances) <= 0:
        raise ValueError(f"tolerances must be positive floats; got {tolerances!r}.")
    p = min(n, 32) if num_pilot is None else check_int("num_pilot", num_pilot, minimum=2)
    if p > n:
        raise ValueError(f"num_pilot must be in [2, {n}] (the batch); got {p}.")
    dt0 = cheap.dt0 if first_step is None else first_step
    levels = tuple(dataclasses.replace(cheap, rtol=t, atol=t, dt0=dt0) for t in tolerances)
    return _Design(z, p, levels, tolerances)


class _Pilot(NamedTuple):
    """Block A's solves: `tight`, `cheap` (one per candidate level) and the per-sample noise
    variance `var_noise` from a second, independent solve (or `None`)."""

    tight: _Solves
    cheap: tuple[_Solves, ...]
    var_noise: Array | None
    evaluations: int


def _pilot(solve, block, key, key_noise, *, tight, levels, measure_noise, noisy) -> _Pilot:
    """Tight and cheap solves of block A, and with `measure_noise` (or for `noisy` solves that
    report no per-sample error over their probes: one probe) a second solve at the last
    (tightest) candidate level with independent probes: $v \\approx \\overline{(L_a -
    L_b)^2}/2$."""
    tight_solves = solve(block, key, tight)
    cheap = tuple(solve(block, key, lv) for lv in levels)
    evaluations = tight_solves.evaluations + sum(c.evaluations for c in cheap)
    var_noise = None
    if measure_noise or (noisy and cheap[-1].probe_error is None):
        again = solve(block, key_noise, levels[-1])
        var_noise = jnp.mean((cheap[-1].log_prob - again.log_prob) ** 2) / 2
        evaluations += again.evaluations
    return _Pilot(tight_solves, cheap, var_noise, evaluations)


class _Plan(NamedTuple):
    """The chosen cheap level `choice`, the subset size `m` and the table of candidates."""

    choice: int
    m: int
    table: tuple | None


def _subset_sizes(*, n, p, cheap, tight_nfe, budget, population):
    """`(subset size, evaluations still to pay)` for each cheap level `(mean NFE, Var d)`."""
    rows = []
    for nfe_c, var_d in cheap:
        if population:
            m = math.ceil(var_d / budget)
        else:  # (1 - m/n) var_d / m <= budget  <=>  m >= var_d / (budget + var_d / n)
            m = math.ceil(var_d / (budget + var_d / n))
        m = min(max(m, p), n)
        rows.append((m, (n - p) * nfe_c + (m - p) * tight_nfe))
    return rows


def _plan(pilot: _Pilot, design: _Design, *, n, half_width, level, population, unit) -> _Plan:
    """The cheap level and subset size with the fewest evaluations still to pay,
    $(n - p) N_c + (m - p) N^\\star$, such that $z\\sqrt{\\operatorname{Var}\\hat\\mu} \\le h$;
    without a plan (`design.tolerances is None`), the one cheap level and $m = p$."""
    if design.tolerances is None:
        return _Plan(0, design.p, None)
    z, p = design.z, design.p
    var_fixed = 0.0 if pilot.var_noise is None else float(pilot.var_noise) / n
    if population:
        var_fixed = float(jnp.var(pilot.tight.log_prob, ddof=1)) / n
    budget = (half_width / z) ** 2 - var_fixed
    if budget <= 0:
        what = "the data's spread" if population else "the per-sample noise"
        factor = var_fixed / (half_width / z) ** 2
        hint = (
            f"an estimator whose noise variance is over {factor:.3g}x smaller (more "
            f"probes; for bits/dim also more dequantisation draws, num_repeats), or more "
            f"samples"
            if not population
            else "more samples, or population=False for the data set's own mean"
        )
        per, name = unit
        raise ValueError(
            f"half_width={half_width / per:g} {name} is out of reach: {what} alone gives "
            f"{z * math.sqrt(var_fixed) / per:.3g} at level {level}; use {hint}."
        )
    tight = pilot.tight.log_prob
    cheap = [
        (float(jnp.mean(c.nfe)), float(jnp.var(tight - c.log_prob, ddof=1))) for c in pilot.cheap
    ]
    sizes = _subset_sizes(
        n=n,
        p=p,
        cheap=cheap,
        tight_nfe=float(jnp.mean(pilot.tight.nfe)),
        budget=budget,
        population=population,
    )
    choice = min(range(len(sizes)), key=lambda i: sizes[i][1])
    table = tuple(
        (tol, nfe_c, math.sqrt(var_d), size, cost)
        for tol, (nfe_c, var_d), (size, cost) in zip(design.tolerances, cheap, sizes, strict=True)
    )
    return _Plan(choice, sizes[choice][0], table)


def _cheap_pass(solve, block, key, level) -> _Solves | None:
    """Cheap solves of block B at the chosen level (`None` if block B is empty)."""
    return solve(block, key, level) if len(block) else None


def _tight_resolves(solve, block, key, tight) -> _Solves | None:
    """Tight re-solves of block B's first samples, `block` (`None` if there are none)."""
    return solve(block, key, tight) if len(block) else None


def _combine(
    *, perm, pilot, plan, cheap_b, tight_b, evaluations, design, noisy, population, level, dtype
) -> MeanLogLikelihood:
    r"""The bias-corrected mean $\hat\mu = \bar L + \bar d$ and its error bar's parts."""
    n, m, z = len(perm), plan.m, design.z
    L, nfe = _concat(pilot.cheap[plan.choice], cheap_b)
    tight, tight_nfe = _concat(pilot.tight, tight_b)
    d = tight - L[:m]
    var_l = jnp.var(L, ddof=1)
    var_d = jnp.var(d, ddof=1)
    errors: list = [pilot.cheap[plan.choice].probe_error]
    errors += [] if cheap_b is None else [cheap_b.probe_error]
    if not noisy:
        var_probes = jnp.zeros((), dtype)
    elif pilot.var_noise is not None:
        var_probes = pilot.var_noise.astype(dtype) / n
    else:  # several probes: their spread, per sample (one probe: measured by the pilot)
        var_probes = jnp.mean(jnp.concatenate(errors) ** 2) / n
    if population:
        cov = jnp.sum((L[:m] - jnp.mean(L[:m])) * (d - jnp.mean(d))) / (m - 1)
        var_bias = var_d / m
        variance = var_l / n + var_bias + 2 * cov / n
        var_data = var_l / n - var_probes
    else:
        var_bias = (1 - m / n) * var_d / m
        variance = var_probes + var_bias
        var_data = jnp.zeros((), dtype)
    mean = jnp.mean(L) + jnp.mean(d)
    stderr = jnp.sqrt(jnp.maximum(variance, 0.0))
    inverse = np.argsort(perm)
    return MeanLogLikelihood(
        mean=mean,
        stderr=stderr,
        low=mean - z * stderr,
        high=mean + z * stderr,
        level=float(level),
        population=population,
        stderr_data=jnp.sqrt(jnp.maximum(var_data, 0.0)),
        stderr_probes=jnp.sqrt(var_probes),
        stderr_bias=jnp.sqrt(var_bias),
        bias_correction=jnp.mean(d),
        cheap_mean=jnp.mean(L),
        log_prob=L[inverse],
        tight_indices=jnp.asarray(perm[:m]),
        tight_log_prob=tight,
        nfe=nfe[inverse],
        tight_nfe=tight_nfe,
        total_nfe=jnp.asarray(evaluations),
        cheap_tol=None if design.tolerances is None else design.tolerances[plan.choice],
        plan=plan.table,
    )


def estimate(
    evaluate,
    n: int,
    dtype,
    *,
    key,
    cheap: SolverLevel,
    tight: SolverLevel,
    first_step: float | None,
    clash,
    num_tight,
    level,
    population,
    half_width,
    tolerances,
    num_pilot,
    noisy: bool,
    unit=(1.0, "nats"),
) -> MeanLogLikelihood:
    """The two-level estimate of the mean of `n` samples solved by `evaluate` (see the module
    doc). `cheap`: the cheap level (with `half_width`, the candidates change its tolerances and,
    unless `first_step` is `None`, its first step); `clash`: the names of cheap-level arguments
    the caller was given, refused with `half_width`; `noisy`: whether the samples' solves are
    random (probes, dequantisation); `unit`: (nats per unit, name) for messages."""
    population = check_bool("population", population)

    def solve(indices, key_i, level_i) -> _Solves:
        return _Solves(*evaluate(indices, key_i, level_i))

    design = _design(
        n=n,
        cheap=cheap,
        first_step=first_step,
        level=level,
        half_width=half_width,
        clash=clash,
        tolerances=tolerances,
        num_pilot=num_pilot,
        num_tight=num_tight,
    )
    k_perm, k_a, k_b, k_noise = jr.split(check_key(key), 4)
    perm = np.asarray(jr.permutation(k_perm, n))
    block_a, block_b = perm[: design.p], perm[design.p :]
    planned = design.tolerances is not None
    pilot = _pilot(
        solve,
        block_a,
        k_a,
        k_noise,
        tight=tight,
        levels=design.levels,
        measure_noise=noisy and (planned or not population),
        noisy=noisy,
    )
    plan = _plan(
        pilot, design, n=n, half_width=half_width, level=level, population=population, unit=unit
    )
    cheap_b = _cheap_pass(solve, block_b, k_b, design.levels[plan.choice])
    tight_b = _tight_resolves(solve, block_b[: plan.m - design.p], k_b, tight)
    evaluations = pilot.evaluations + sum(
        s.evaluations for s in (cheap_b, tight_b) if s is not None
    )
    return _combine(
        perm=perm,
        pilot=pilot,
        plan=plan,
        cheap_b=cheap_b,
        tight_b=tight_b,
        evaluations=evaluations,
        design=design,
        noisy=noisy,
        population=population,
        level=level,
        dtype=dtype,
    )
