"""Mean log-likelihood of a data set with an error bar split into its sources: a two-level
(cheap everywhere, tight on a random subset) estimator and the plan that sizes it."""

import math

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.stats as jss
import numpy as np
from jaxtyping import Array, Float, Int

from .._checks import check_batch, check_bool, check_int, check_key, check_positive
from .._data import num_levels
from .divergence import Hutchinson
from .flow import bits_per_dim, log_likelihood

_PLANNED = ("rtol", "atol", "nats_tol", "stepsize_controller")


class MeanLogLikelihood(eqx.Module):
    r"""Result of [`scoresde.estimate_mean_log_likelihood`][] (nats per sample).

    - `mean`: the bias-corrected estimate $\hat\mu$; `low`, `high`: the `level` interval
      $\hat\mu \pm z\,$`stderr` (normal quantile $z$); `population`: which target it is for
      (see the function).
    - `stderr`: its total standard error, and its parts (in quadrature, up to the covariance
      term): `stderr_data` (the spread of $\ln p$ over the data; 0 for a data set's own mean),
      `stderr_probes` (the per-sample noise of the divergence estimator and dequantisation: 0
      without either, NaN where it was not measured: one stochastic probe, population target,
      no plan; the data part then includes it) and `stderr_bias` (the standard error of the
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


def _default_tight(dtype) -> dict:
    """Dopri8 at 1e-9 in float64; Dopri5 at 1e-6 in float32, where rounding limits both solvers
    and Dopri5 costs fewer evaluations (measured in the likelihood how-to)."""
    f64 = dtype == jnp.float64
    tol = 1e-9 if f64 else 1e-6
    return dict(
        solver=dfx.Dopri8() if f64 else dfx.Dopri5(),
        rtol=tol,
        atol=tol,
        nats_tol=None,
        stepsize_controller=None,
        dt0=None,
        max_steps=16384,
    )


def _first_step(sde, likelihood_kwargs):
    """The planned cheap levels start with a step of T/1024 in t (unless `dt0` or another
    `variable` is given): with the default T/64 a loose tolerance can accept a first step that
    misses a trained model's sharp start near the data."""
    if "dt0" in likelihood_kwargs or likelihood_kwargs.get("variable", "t") != "t":
        return None
    return sde.T / 1024


def _plan(*, n, p, cheap, tight_nfe, budget, population):
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


def _estimate(
    sde,
    evaluate,
    n,
    dtype,
    *,
    key,
    num_tight,
    tight,
    level,
    population,
    half_width,
    tolerances,
    num_pilot,
    noisy,
    likelihood_kwargs,
    unit=(1.0, "nats"),
) -> MeanLogLikelihood:
    """The two-level estimator for `evaluate(indices, key, overrides) -> (log_prob, nfe,
    stderr)` (`stderr`: the per-sample probe error, or None), whose samples draw their randomness
    (probes, dequantisation) from `key` and their position; `unit`: (nats per unit, name) for
    messages."""
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1); got level={level!r}.")
    population = check_bool("population", population)
    tight = _default_tight(dtype) if tight is None else tight
    if not isinstance(tight, dict):
        raise TypeError(f"tight must be a dict of log_likelihood arguments; got {tight!r}.")
    z = float(jss.norm.ppf(0.5 + level / 2))
    planned = half_width is not None
    if planned:
        check_positive("half_width", half_width)
        clash = [k for k in _PLANNED if k in likelihood_kwargs]
        if clash or num_tight is not None:
            given = clash + (["num_tight"] if num_tight is not None else [])
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
    else:
        p = min(n, max(16, n // 8)) if num_tight is None else check_int("num_tight", num_tight)
        if not 2 <= p <= n:
            raise ValueError(f"num_tight must be in [2, {n}] (the batch); got num_tight={p}.")
    key = check_key(key)
    k_perm, k_a, k_b, k_noise = jr.split(key, 4)
    perm = np.asarray(jr.permutation(k_perm, n))
    block_a, block_b = perm[:p], perm[p:]
    total = 0

    probe_errors = []  # the cheap solves' per-sample probe errors, where the estimator has them

    def solve(indices, k, overrides, *, cheap=False):
        nonlocal total
        log_prob, nfe, err = evaluate(indices, k, {**likelihood_kwargs, **overrides})
        total += int(jnp.sum(nfe))
        if cheap:
            probe_errors.append(err)
        return log_prob, nfe

    # Block A (the pilot, or the whole tight subset without a plan): tight and cheap solves.
    tight_a, tight_nfe_a = solve(block_a, k_a, tight)
    first_step = _first_step(sde, likelihood_kwargs)
    start = {} if first_step is None else dict(dt0=first_step)
    candidates = [dict(rtol=t, atol=t, **start) for t in tolerances] if planned else [{}]
    pilot = [solve(block_a, k_a, c, cheap=True) for c in candidates]
    var_noise = None
    if noisy and (planned or not population):  # independent probes on block A, the tightest level
        again, _ = solve(block_a, k_noise, candidates[-1])
        var_noise = jnp.mean((pilot[-1][0] - again) ** 2) / 2
    m = p
    c = 0
    plan = None
    if planned:
        var_fixed = 0.0 if var_noise is None else float(var_noise) / n
        if population:
            var_fixed = float(jnp.var(tight_a, ddof=1)) / n
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
        cheap = [(float(jnp.mean(nfe)), float(jnp.var(tight_a - lp, ddof=1))) for lp, nfe in pilot]
        sizes = _plan(
            n=n,
            p=p,
            cheap=cheap,
            tight_nfe=float(jnp.mean(tight_nfe_a)),
            budget=budget,
            population=population,
        )
        c = min(range(len(sizes)), key=lambda i: sizes[i][1])
        m = sizes[c][0]
        plan = tuple(
            (tol, nfe_c, math.sqrt(var_d), size, cost)
            for tol, (nfe_c, var_d), (size, cost) in zip(tolerances, cheap, sizes, strict=True)
        )
    cheap_a, nfe_a = pilot[c]
    # Block B: cheap solves on the rest, tight re-solves on its first m - p samples.
    if len(block_b):
        cheap_b, nfe_b = solve(block_b, k_b, candidates[c], cheap=True)
        if m > p:
            tight_b, tight_nfe_b = solve(block_b[: m - p], k_b, tight)
            tight_a = jnp.concatenate([tight_a, tight_b])
            tight_nfe_a = jnp.concatenate([tight_nfe_a, tight_nfe_b])
        L = jnp.concatenate([cheap_a, cheap_b])
        nfe = jnp.concatenate([nfe_a, nfe_b])
    else:
        L, nfe = cheap_a, nfe_a
    d = tight_a - L[:m]
    var_l = jnp.var(L, ddof=1)
    var_d = jnp.var(d, ddof=1)
    errors = [probe_errors[c]] + probe_errors[len(candidates) :]
    if not noisy:
        var_probes = jnp.zeros((), dtype)
    elif var_noise is not None:
        var_probes = var_noise.astype(dtype) / n
    elif all(e is not None for e in errors):  # several probes: their spread, per sample
        var_probes = jnp.mean(jnp.concatenate(errors) ** 2) / n
    else:
        var_probes = jnp.full((), jnp.nan, dtype)
    if population:
        cov = jnp.sum((L[:m] - jnp.mean(L[:m])) * (d - jnp.mean(d))) / (m - 1)
        var_bias = var_d / m
        variance = var_l / n + var_bias + 2 * cov / n
        var_data = var_l / n - jnp.nan_to_num(var_probes)
    else:
        var_bias = (1 - m / n) * var_d / m
        variance = jnp.nan_to_num(var_probes) + var_bias
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
        tight_log_prob=tight_a,
        nfe=nfe[inverse],
        tight_nfe=tight_nfe_a,
        total_nfe=jnp.asarray(total),
        cheap_tol=tolerances[c] if planned else None,
        plan=plan,
    )


def estimate_mean_log_likelihood(
    sde,
    score,
    x,
    *,
    key,
    population: bool = True,
    half_width: float | None = None,
    tolerances=(1e-2, 1e-3, 1e-4),
    num_pilot: int | None = None,
    num_tight: int | None = None,
    tight: dict | None = None,
    level: float = 0.95,
    **likelihood_kwargs,
) -> MeanLogLikelihood:
    r"""Mean log-likelihood of the data `x` (nats per sample) with a certified error bar.

    Solves every sample with [`scoresde.log_likelihood`][] and `likelihood_kwargs` (the cheap
    level), re-solves a random subset with the same probes and `likelihood_kwargs` updated by
    `tight`, and corrects the cheap mean by the subset's mean difference; see
    [`scoresde.MeanLogLikelihood`][] for the parts of the error bar.

    $\hat\mu = \frac1n \sum_i L_i + \frac1m \sum_{j \in S} (L^\star_j - L_j)$: cheap solves $L_i$ on
    all $n$ samples, tight re-solves $L^\star_j$ (the SAME probes and dequantisation) on a random
    subset $S$ of $m$ samples, whose mean difference $d$ corrects the cheap solves' bias (a two-level
    estimator). Two targets:

    - the population, $E_{x \sim \text{data}}[\ln p_{t_\varepsilon}(x)]$:
      $\operatorname{Var}\hat\mu \approx \operatorname{Var}(L)/n + \operatorname{Var}(d)/m
      + 2\operatorname{Cov}(L, d)/n$;
    - the data set's own mean $\frac1n\sum_i \ln p_{t_\varepsilon}(x_i)$ (a test set's figure):
      $\operatorname{Var}\hat\mu \approx v/n + (1 - m/n)\operatorname{Var}(d)/m$, with $v$ the
      per-sample noise variance of the probes (and dequantisation), estimated from two independent
      solves of the same samples, $v \approx \overline{(L_a - L_b)^2}/2$.

    Given a half-width $h$ at level $1 - \alpha$, a pilot on a random subset measures, for each
    candidate cheap tolerance, its mean NFE $N_c$ and $\operatorname{Var}(d_c)$, and the tight NFE
    $N^\star$; the plan takes the tolerance and the least $m$ with $z\sqrt{\operatorname{Var}\hat\mu}
    \le h$ that minimise the evaluations still to pay, $(n - p) N_c + (m - p) N^\star$.

    **Arguments** (beyond [`scoresde.log_likelihood`][]'s, which go to the cheap level):

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
    - `tight`: the tight level's `log_likelihood` arguments (default: `Dopri8` at
      `rtol = atol = 1e-9` in float64, `Dopri5` at `1e-6` in float32).
    - `level`: the coverage of the interval `(low, high)`, in $(0, 1)$.
    """
    x = check_batch("x", x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x must hold at least 2 samples; got {n}.")
    divergence = likelihood_kwargs.get("divergence", Hutchinson())

    def evaluate(indices, k, kwargs):
        res = log_likelihood(sde, score, x[indices], key=k, **kwargs)
        return res.log_prob, res.nfe, res.stderr

    return _estimate(
        sde,
        evaluate,
        n,
        x.dtype,
        key=key,
        num_tight=num_tight,
        tight=tight,
        level=level,
        population=population,
        half_width=half_width,
        tolerances=tolerances,
        num_pilot=num_pilot,
        noisy=divergence.stochastic,
        likelihood_kwargs=likelihood_kwargs,
    )


def estimate_bits_per_dim(
    sde,
    score,
    k,
    *,
    key,
    bits=None,
    levels=None,
    low: float = -1.0,
    high: float = 1.0,
    dequantization: str = "uniform",
    num_repeats: int = 1,
    population: bool = True,
    half_width: float | None = None,
    tolerances=(1e-2, 1e-3, 1e-4),
    num_pilot: int | None = None,
    num_tight: int | None = None,
    tight: dict | None = None,
    level: float = 0.95,
    **likelihood_kwargs,
) -> BitsPerDimEstimate:
    r"""Mean bits/dim of integer data `k` with a certified error bar: the two-level estimator of
    [`scoresde.estimate_mean_log_likelihood`][] on the data convention of
    [`scoresde.bits_per_dim`][] (`bits`/`levels`, `low`, `high`, `dequantization`,
    `num_repeats` draws of the dequantisation noise per sample, shared by its cheap and tight
    solves; each draw is one more solve, and the draws' mean is the per-sample figure). The
    dequantisation noise does not shrink with more probes: where it dominates, raise
    `num_repeats`.
    `half_width` is in bits/dim; the other arguments are those of
    [`scoresde.estimate_mean_log_likelihood`][]. For a test set's own figure pass
    `population=False`.
    """
    k = jnp.asarray(k)
    if k.ndim < 2:
        raise ValueError(f"k has shape {k.shape}; expected (batch, *data_shape).")
    n = k.shape[0]
    if n < 2:
        raise ValueError(f"k must hold at least 2 samples; got {n}.")
    num = num_levels(bits, levels)
    num_dims = math.prod(k.shape[1:])
    scale = num_dims * math.log(2)
    divergence = likelihood_kwargs.get("divergence", Hutchinson())
    convention = dict(
        levels=num, low=low, high=high, dequantization=dequantization, num_repeats=num_repeats
    )

    def evaluate(indices, key_i, kwargs):
        res = bits_per_dim(sde, score, k[indices], key=key_i, **convention, **kwargs)
        return res.log_prob, res.nfe, None if res.stderr is None else res.stderr * scale

    nats = _estimate(
        sde,
        evaluate,
        n,
        jnp.result_type(float),
        key=key,
        num_tight=num_tight,
        tight=tight,
        level=level,
        population=population,
        half_width=None if half_width is None else half_width * scale,
        tolerances=tolerances,
        num_pilot=num_pilot,
        noisy=divergence.stochastic or dequantization != "none",
        likelihood_kwargs=likelihood_kwargs,
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
