r"""Metric estimators: a preconditioner $M$ fitted on a pilot ensemble, one function per
estimator and a small value selecting it.

Each estimator is a function (`covariance_metric`, `fisher_metric`, `fisher_divergence_metric`,
`lanczos_metric`) and an [`scoresde.AbstractMetricEstimator`][] value holding its options
([`scoresde.CovarianceEstimator`][], [`scoresde.FisherEstimator`][],
[`scoresde.FisherDivergenceEstimator`][], [`scoresde.LanczosEstimator`][]), which
[`scoresde.estimate_preconditioner`][] takes as `kind=` (the strings `"covariance"`, `"fisher"`,
`"fisher_divergence"`, `"lanczos"` are aliases, turned into values by `as_metric_estimator`).
The pilot `x_pilot` `(n, *data)` is drawn with its own key and then frozen: the kernels' samples
still depend only on their keys.
"""

import abc
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._checks import check_int, check_positive
from .lanczos import AbstractCurvaturePoints, PilotMean, as_curvature_points, lanczos_curvature
from .preconditioners import (
    AbstractPreconditioner,
    DensePreconditioner,
    DiagonalPreconditioner,
    LowRankPreconditioner,
)

__all__ = [
    "AbstractMetricEstimator",
    "CovarianceEstimator",
    "FisherEstimator",
    "FisherDivergenceEstimator",
    "LanczosEstimator",
    "covariance_metric",
    "fisher_metric",
    "fisher_divergence_metric",
    "lanczos_metric",
    "estimate_preconditioner",
]

_JITTER = 1e-6


def _pilot(x_pilot):
    x = jnp.asarray(x_pilot)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"x_pilot must be a batch (n >= 2, *data_shape); got shape {x.shape}.")
    return x, x.reshape(x.shape[0], -1)


def _scores(name, score, x):
    if not callable(score):
        raise TypeError(f"{name} needs a callable score(x) on one sample; got {score!r}.")
    return jax.vmap(score)(x).reshape(x.shape[0], -1)


def _warn_rank_deficient(what: str, n: int, rank: int, dim: int, jitter, effect: str) -> None:
    """Say that a dense metric fitted on `n` pilot points has rank at most `rank < dim`, and what
    the `jitter` then does along the directions the pilot does not span."""
    warnings.warn(
        f"{what} of n={n} pilot points in d={dim} dimensions has rank at most {rank} < d; "
        f"jitter * tr/d (jitter={float(jitter):g}) is added to its diagonal, so along the "
        f"{dim - rank} directions the pilot does not span {effect}. Use at least "
        f"{n + dim - rank} pilot points, a larger jitter (shrinkage towards tr/d * I), or "
        "FisherDivergenceEstimator() (diagonal).",
        stacklevel=3,
    )


def covariance_metric(x_pilot, *, jitter: float = _JITTER) -> DensePreconditioner:
    r"""$M$ = the pilot's sample covariance $+$ `jitter` $\cdot\,\mathrm{tr}(M)/d$ on the
    diagonal; no score evaluations. From $n \le d$ points the sample covariance has rank at
    most $n - 1 < d$, and only the jitter is left along the other directions: a warning says so."""
    _, flat = _pilot(x_pilot)
    n, dim = flat.shape
    if n - 1 < dim:
        _warn_rank_deficient(
            "The sample covariance",
            n,
            n - 1,
            dim,
            jitter,
            "the metric's variance is only jitter * tr/d (Langevin barely moves there)",
        )
    mat = jnp.cov(flat, rowvar=False).reshape(dim, dim)
    mat = mat + jitter * jnp.trace(mat) / dim * jnp.eye(dim, dtype=mat.dtype)
    return DensePreconditioner(mat)


def fisher_metric(
    score: Callable | None, x_pilot, *, jitter: float = _JITTER
) -> DensePreconditioner:
    r"""$M = F^{-1}$ with $F = E[s s^\top]$ the Fisher matrix of the scores at the pilot points
    (for a Gaussian target $F = \Sigma^{-1}$), `jitter` $\cdot\,\mathrm{tr}(F)/d$ added to $F$'s
    diagonal; `n` score evaluations. From $n < d$ points $F$ has rank at most $n$, and its
    inverse is then the inverse jitter along the other directions: a warning says so."""
    x, flat = _pilot(x_pilot)
    n, dim = flat.shape
    if n < dim:
        _warn_rank_deficient(
            "The Fisher matrix",
            n,
            n,
            dim,
            jitter,
            "the metric's variance is 1 / (jitter * tr(F)/d) (huge: Langevin steps blow up there)",
        )
    s = _scores("the Fisher estimator", score, x)
    fisher = s.T @ s / x.shape[0]
    fisher = fisher + jitter * jnp.trace(fisher) / dim * jnp.eye(dim, dtype=fisher.dtype)
    mat = jnp.linalg.inv(fisher)
    return DensePreconditioner(0.5 * (mat + mat.T))


def fisher_divergence_metric(
    score: Callable | None, x_pilot, *, rank: int | None = None, jitter: float = _JITTER
) -> DiagonalPreconditioner | LowRankPreconditioner:
    r"""$M = P^{-1}$ for the Gaussian $N(m, P^{-1})$ whose score $-P(x - m)$ is closest to the
    scores at the pilot points, $\min_{P, m} \frac1n\sum_i \lVert s(x_i) + P(x_i - m)\rVert^2$.

    Exact for a Gaussian target from ANY pilot whose covariance has full rank (scores carry the
    curvature; the pilot need not be drawn from the target). With centred $x, s$,
    $C = \overline{x x^\top}$, $S = \overline{x s^\top}$: `rank=None` fits a diagonal $P$,
    $p_j = -S_{jj}/C_{jj}$ (a [`scoresde.DiagonalPreconditioner`][]); `rank=k` solves the
    symmetric fit $CP + PC = -(S + S^\top)$ in $C$'s eigenbasis and keeps $M$'s top-$k$
    eigenpairs over the mean $\tau$ of the others, $M \approx D + V_k(\Lambda_k - \tau)V_k^\top$
    with $D$ chosen so that the diagonal of $M$ is kept (exact for $M = \tau I + $ rank $k$; a
    [`scoresde.LowRankPreconditioner`][]). `jitter` floors the pilot's variances (a degenerate
    pilot). `n` score evaluations.
    """
    x, flat = _pilot(x_pilot)
    s = _scores("the Fisher-divergence estimator", score, x)
    return _fisher_divergence_fit(flat, s, rank, jitter)


def _fisher_divergence_fit(x, s, rank, jitter):
    """`fisher_divergence_metric` on flat draws `x` and scores `s`."""
    n, dim = x.shape
    xc, sc = x - x.mean(0, keepdims=True), s - s.mean(0, keepdims=True)
    if rank is None:
        c = jnp.mean(xc**2, 0)
        p = -jnp.mean(xc * sc, 0) / jnp.maximum(c, jitter * jnp.mean(c))
        if not isinstance(p, jax.core.Tracer) and not bool(jnp.all(p > 0)):
            raise ValueError(
                "the diagonal Fisher-divergence fit is not positive definite (scores grow along "
                "some coordinate): the pilot does not see the target's curvature there."
            )
        return DiagonalPreconditioner(1 / p)
    if not isinstance(rank, int) or not 1 <= rank < dim:
        raise ValueError(f"rank must be an int in [1, {dim - 1}]; got rank={rank!r}.")
    cov = xc.T @ xc / n
    cross = xc.T @ sc / n
    lam_c, v_c = jnp.linalg.eigh(cov)
    lam_c = jnp.maximum(lam_c, jitter * jnp.mean(lam_c))  # a floor for a degenerate pilot
    rhs = -v_c.T @ (cross + cross.T) @ v_c
    precision = v_c @ (rhs / (lam_c[:, None] + lam_c[None, :])) @ v_c.T
    lam, v = jnp.linalg.eigh(0.5 * (precision + precision.T))
    if not isinstance(lam, jax.core.Tracer) and not bool(jnp.all(lam > 0)):
        raise ValueError(
            f"the Fisher-divergence fit is not positive definite ({int(jnp.sum(lam <= 0))} "
            "non-positive eigenvalues): the scores at the pilot points are not those of one "
            "Gaussian (a multimodal target, or too few points: n <= dim); use "
            "kind='covariance' or 'lanczos'."
        )
    var = 1 / lam  # M's eigenvalues, largest first below
    order = jnp.argsort(-var)
    var, v = var[order], v[:, order]
    tau = jnp.mean(var[rank:])
    weights = var[:rank] - tau
    factors = v[:, :rank]
    full_diag = jnp.sum(v**2 * var[None, :], axis=1)
    diag = full_diag - jnp.sum(factors**2 * weights[None, :], axis=1)
    return LowRankPreconditioner(diag, factors, weights)


def lanczos_metric(
    score: Callable,
    x_pilot,
    *,
    key,
    rank: int,
    num_iters: int | None = None,
    at=PilotMean(),
) -> LowRankPreconditioner:
    r"""The inverse-Hessian metric from the top-`rank` eigenpairs of $-\partial s/\partial x$ by
    Lanczos, at the points `at` ($2m$ evaluations at the pilot mean for $m$ = `num_iters`
    Lanczos steps, default $\min(\dim, 2\,\mathrm{rank} + 10)$; $2nm$ over the pilot points): the
    `preconditioner` of [`scoresde.lanczos_curvature`][], which also returns the eigenpairs and
    the cost."""
    return lanczos_curvature(
        score, x_pilot, key=key, rank=rank, num_iters=num_iters, at=at
    ).preconditioner


class AbstractMetricEstimator(eqx.Module):
    """A way to fit a metric $M$ on a pilot ensemble: `estimate(score, x_pilot, key=None)`
    returns an [`scoresde.AbstractPreconditioner`][]."""

    @abc.abstractmethod
    def estimate(self, score, x_pilot, *, key=None) -> AbstractPreconditioner:
        """The metric fitted on `x_pilot` `(n, *data)` (with `score` on one sample, where the
        estimator uses it, and `key`, where it is random)."""


def _check_jitter(jitter):
    check_positive("jitter", jitter, strict=False)


class CovarianceEstimator(AbstractMetricEstimator):
    """The pilot's sample covariance (`covariance_metric`); needs no score (`score` may be
    `None`); a [`scoresde.DensePreconditioner`][]. `kind="covariance"`."""

    jitter: float = _JITTER

    def __check_init__(self):
        _check_jitter(self.jitter)

    def estimate(self, score, x_pilot, *, key=None):
        return covariance_metric(x_pilot, jitter=self.jitter)


class FisherEstimator(AbstractMetricEstimator):
    """The inverse Fisher matrix of the scores at the pilot points (`fisher_metric`); a
    [`scoresde.DensePreconditioner`][]. `kind="fisher"`."""

    jitter: float = _JITTER

    def __check_init__(self):
        _check_jitter(self.jitter)

    def estimate(self, score, x_pilot, *, key=None):
        return fisher_metric(score, x_pilot, jitter=self.jitter)


class FisherDivergenceEstimator(AbstractMetricEstimator):
    """The Gaussian score closest to the pilot's scores (`fisher_divergence_metric`):
    diagonal with `rank=None`, low-rank plus diagonal with `rank=k`.
    `kind="fisher_divergence"`."""

    rank: int | None = eqx.field(static=True, default=None)
    jitter: float = _JITTER

    def __check_init__(self):
        if self.rank is not None:
            check_int("rank", self.rank)
        _check_jitter(self.jitter)

    def estimate(self, score, x_pilot, *, key=None):
        return fisher_divergence_metric(score, x_pilot, rank=self.rank, jitter=self.jitter)


class LanczosEstimator(AbstractMetricEstimator):
    """The inverse-Hessian metric of the top-`rank` curvature directions by Lanczos
    (`lanczos_metric`) at the points `at` ([`scoresde.PilotMean`][] or
    [`scoresde.PilotPoints`][]; `"mean"` / `"points"` accepted); needs `key` at `estimate`.
    `kind="lanczos"`."""

    rank: int = eqx.field(static=True)
    num_iters: int | None = eqx.field(static=True, default=None)
    at: AbstractCurvaturePoints = eqx.field(default=PilotMean(), converter=as_curvature_points)

    def __check_init__(self):
        check_int("rank", self.rank)
        if self.num_iters is not None:
            check_int("num_iters", self.num_iters)

    def estimate(self, score, x_pilot, *, key=None):
        if key is None:
            raise TypeError("the Lanczos estimator needs key= (its start vector's key).")
        return lanczos_metric(
            score, x_pilot, key=key, rank=self.rank, num_iters=self.num_iters, at=self.at
        )


_KINDS = ("covariance", "fisher", "fisher_divergence", "lanczos")


def as_metric_estimator(
    kind, *, jitter=None, rank=None, num_iters=None, at=None, key=None
) -> AbstractMetricEstimator:
    """The estimator value for `kind`: an [`scoresde.AbstractMetricEstimator`][] as is (its
    options are its own: passing `jitter`, `rank`, `num_iters` or `at` as well is an error), or
    a name from `"covariance"`, `"fisher"`, `"fisher_divergence"`, `"lanczos"` built from those
    options (the ones a name does not use are ignored, as they always were)."""
    if isinstance(kind, AbstractMetricEstimator):
        given = {
            n: v
            for n, v in (("jitter", jitter), ("rank", rank), ("num_iters", num_iters), ("at", at))
            if v is not None
        }
        if given:
            raise ValueError(
                f"kind={type(kind).__name__}(...) carries its own options; got also "
                f"{', '.join(f'{n}={v!r}' for n, v in given.items())}: set them on the estimator."
            )
        return kind
    if not isinstance(kind, str) or kind not in _KINDS:
        raise ValueError(
            "kind must be a metric estimator (ss.CovarianceEstimator(), ss.FisherEstimator(), "
            "ss.FisherDivergenceEstimator(rank=...), ss.LanczosEstimator(rank=...)) or one of "
            f"{_KINDS}; got kind={kind!r}."
        )
    jitter = _JITTER if jitter is None else jitter
    if kind == "covariance":
        return CovarianceEstimator(jitter)
    if kind == "fisher":
        return FisherEstimator(jitter)
    if kind == "fisher_divergence":
        return FisherDivergenceEstimator(rank, jitter)
    if rank is None or key is None:
        raise TypeError("kind='lanczos' needs rank= and key=.")
    return LanczosEstimator(rank, num_iters, as_curvature_points("mean" if at is None else at))


def estimate_preconditioner(
    score,
    x_pilot,
    *,
    kind="covariance",
    jitter: float | None = None,
    rank: int | None = None,
    key=None,
    num_iters: int | None = None,
    at=None,
) -> AbstractPreconditioner:
    r"""A preconditioner fitted on a pilot ensemble `x_pilot` `(n, *data)` (drawn with its own
    key, then frozen: the kernels' samples still depend only on their keys).

    **Arguments:**

    - `score`: $\nabla\ln p$ on one sample (`None` for the covariance).
    - `kind`: the estimator, a value or its name:
        - [`scoresde.CovarianceEstimator`][] (`"covariance"`, default): the pilot's sample
          covariance; dense, 0 evaluations.
        - [`scoresde.FisherEstimator`][] (`"fisher"`): the inverse of the Fisher matrix
          $E[s s^\top]$ of the scores at the pilot points (for a Gaussian target
          $E[ss^\top] = \Sigma^{-1}$); dense, `n` score evaluations.
        - [`scoresde.FisherDivergenceEstimator`][] (`"fisher_divergence"`): the Gaussian whose
          score is closest to the scores at the pilot points (exact for a Gaussian target from
          any pilot of full rank); diagonal, or low-rank plus diagonal with `rank`; `n`
          evaluations.
        - [`scoresde.LanczosEstimator`][] (`"lanczos"`): the inverse-Hessian metric from the
          top-`rank` eigenpairs of $-\partial s/\partial x$ at the points `at` (the pilot mean,
          $2m$ evaluations for $m$ = `num_iters` Lanczos steps, or averaged over the pilot
          points, $2nm$); needs `rank` and `key`. See [`scoresde.lanczos_curvature`][].
    - `jitter`, `rank`, `num_iters`, `at`: the options of a `kind` given by name (a value
      carries its own). `jitter` (default $10^{-6}$) times the mean variance is added to the
      diagonal before inversion (dense kinds); for `fisher_divergence` it floors the pilot's
      variances (a degenerate pilot).
    - `key`: the key of a random estimator (Lanczos).
    """
    estimator = as_metric_estimator(
        kind, jitter=jitter, rank=rank, num_iters=num_iters, at=at, key=key
    )
    return estimator.estimate(score, x_pilot, key=key)
