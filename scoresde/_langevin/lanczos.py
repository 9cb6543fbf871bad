r"""Curvature from scores: the top eigenpairs of the Hessian of $-\ln p$ by Lanczos with JVPs.

The Hessian of $-\ln p$ is $H = -\partial s/\partial x$, and $Hv = -\mathrm{jvp}(s, x, v)$ costs one
JVP (counted as 2 score evaluations). Lanczos with full reorthogonalisation builds an orthonormal
Krylov basis $V_m$ of $\{v_0, Hv_0, \dots, H^{m-1}v_0\}$ and the tridiagonal $T_m = V_m^\top H V_m$;
the largest eigenpairs of $T_m$ (Ritz pairs $\theta_i$, $V_m y_i$) approximate those of $H$
(exactly once $m = \dim$ or the Krylov space is invariant).

With the top-$k$ Ritz pairs $(\theta_i, u_i)$ and the next Ritz value $\theta_{k+1}$ as the level
of the rest of the spectrum, the inverse-Hessian metric is
$M = \theta_{k+1}^{-1}(I - UU^\top) + U\,\mathrm{diag}(\theta^{-1})U^\top$, a
[`scoresde.LowRankPreconditioner`][] with diagonal $\theta_{k+1}^{-1}$ and weights
$\theta_i^{-1} - \theta_{k+1}^{-1} \le 0$: the $k$ stiffest directions get their own scale, the
rest the scale of the stiffest remaining one (so the preconditioned curvature is at most 1).
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from .._checks import check_int, check_key
from .kernels import AnnealedLangevin
from .preconditioners import LowRankPreconditioner

__all__ = [
    "AbstractCurvaturePoints",
    "PilotMean",
    "PilotPoints",
    "LanczosCurvature",
    "lanczos_curvature",
    "lanczos_per_level",
]


class AbstractCurvaturePoints(eqx.Module):
    r"""Where the curvature $H = -\partial s/\partial x$ is evaluated: `points(x_pilot)` gives a
    batch of points, and $H$ is averaged over them (one JVP per point per Lanczos step)."""

    @abc.abstractmethod
    def points(self, x_pilot: Array) -> Array:
        """A batch `(m, *data)` of evaluation points from the pilot batch `(n, *data)`."""


class PilotMean(AbstractCurvaturePoints):
    """$H$ at the pilot mean (`at="mean"`): one JVP per Lanczos step."""

    def points(self, x_pilot):
        return jnp.mean(x_pilot, axis=0, keepdims=True)


class PilotPoints(AbstractCurvaturePoints):
    """$H$ averaged over the `n` pilot points (`at="points"`): `n` JVPs per Lanczos step."""

    def points(self, x_pilot):
        return x_pilot


_AT_ALIASES: dict[str, type[AbstractCurvaturePoints]] = {"mean": PilotMean, "points": PilotPoints}


def as_curvature_points(at) -> AbstractCurvaturePoints:
    """The evaluation-point value for `at`: a [`scoresde.AbstractCurvaturePoints`][] as is, or
    its alias `"mean"` ([`scoresde.PilotMean`][]) / `"points"` ([`scoresde.PilotPoints`][])."""
    if isinstance(at, AbstractCurvaturePoints):
        return at
    if isinstance(at, str) and at in _AT_ALIASES:
        return _AT_ALIASES[at]()
    raise ValueError(
        "at must be ss.PilotMean(), ss.PilotPoints() (or another AbstractCurvaturePoints), or "
        f"one of {tuple(_AT_ALIASES)}; got at={at!r}."
    )


class LanczosCurvature(eqx.Module):
    """The result of [`scoresde.lanczos_curvature`][]: the top `rank` eigenvalues (descending) and
    eigenvectors (columns) of the Hessian of $-\\ln p$, the next Ritz value `floor`, the metric
    `preconditioner` and the cost `evals` in score evaluations (a JVP counts 2)."""

    eigvals: Float[Array, " k"]
    eigvecs: Float[Array, "dim k"]
    floor: Array
    preconditioner: LowRankPreconditioner
    evals: int = eqx.field(static=True)


def _lanczos(matvec, v0, num_iters, key):
    """Lanczos with full (twice-repeated Gram-Schmidt) reorthogonalisation; on breakdown
    ($\\beta_j \\approx 0$) the next vector is a fresh random one orthogonal to the basis and
    $\\beta_j = 0$. Returns the tridiagonal's diagonal, off-diagonal and the basis (rows)."""
    dim = v0.shape[0]
    dtype = v0.dtype
    basis = jnp.zeros((num_iters + 1, dim), dtype).at[0].set(v0 / jnp.linalg.norm(v0))

    def orthogonalise(w, basis):
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        return w

    def body(j, carry):
        basis, alpha, beta, scale = carry
        v = basis[j]
        w = matvec(v)
        a = jnp.dot(w, v)
        w = orthogonalise(w, basis)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(a) + b)
        broke = b <= 1e3 * jnp.finfo(dtype).eps * scale
        fresh = orthogonalise(jr.normal(jr.fold_in(key, j), (dim,), dtype), basis)
        fresh = orthogonalise(fresh, basis)
        nxt = jnp.where(broke, fresh / jnp.linalg.norm(fresh), w / jnp.where(broke, 1, b))
        basis = basis.at[j + 1].set(nxt)
        return basis, alpha.at[j].set(a), beta.at[j].set(jnp.where(broke, 0, b)), scale

    alpha = jnp.zeros((num_iters,), dtype)
    beta = jnp.zeros((num_iters,), dtype)
    carry = (basis, alpha, beta, jnp.zeros((), dtype))
    basis, alpha, beta, _ = jax.lax.fori_loop(0, num_iters, body, carry)
    return alpha, beta[:-1], basis[:num_iters]


def lanczos_curvature(
    score: Callable,
    x_pilot,
    *,
    key,
    rank: int,
    num_iters: int | None = None,
    at="mean",
) -> LanczosCurvature:
    r"""Top-`rank` eigenpairs of $H = -\partial\,\mathrm{score}/\partial x$ by Lanczos with JVPs,
    and the inverse-Hessian metric built from them (see the module docstring).

    **Arguments:**

    - `score`: $\nabla\ln p$ on one sample.
    - `x_pilot`: a pilot batch `(n, *data)` (drawn with its own key, then frozen).
    - `key`: the Lanczos start vector's key (and fresh vectors on breakdown).
    - `rank`: $k \ge 1$, with $k < \dim$.
    - `num_iters`: Lanczos iterations $m$ ($k < m \le \dim$); default $\min(\dim, 2k + 10)$.
    - `at`: where $H$ is evaluated: [`scoresde.PilotMean`][] (`"mean"`, default): at the pilot
      mean, one JVP per iteration ($2m$ evaluations); [`scoresde.PilotPoints`][] (`"points"`):
      averaged over the `n` pilot points, $n$ JVPs per iteration ($2nm$).

    Ritz values are clipped below at $\theta_{k+1}$ (for a non-convex $-\ln p$ the metric stays
    positive definite); a non-positive $\theta_{k+1}$ is an error (no curvature to precondition by).
    """
    x = jnp.asarray(x_pilot)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x_pilot must be a batch (n, *data_shape); got shape {x.shape}.")
    if not callable(score):
        raise TypeError("lanczos curvature needs a callable score(x) on one sample.")
    at = as_curvature_points(at)
    key = check_key(key)
    shape = x.shape[1:]
    dim = int(jnp.size(x[0]))
    rank = check_int("rank", rank)
    if rank >= dim:
        raise ValueError(f"rank must be < the dimension {dim}; got rank={rank}.")
    num_iters = min(dim, 2 * rank + 10) if num_iters is None else check_int("num_iters", num_iters)
    if not rank < num_iters <= dim:
        raise ValueError(f"need rank < num_iters <= dim = {dim}; got num_iters={num_iters}.")
    points = at.points(x)
    eigvals, eigvecs, floor = _run(score, points, key, rank, num_iters, shape)
    if not bool(floor > 0):
        raise ValueError(
            f"the Hessian of -ln p has no positive curvature beyond the top {rank} directions "
            f"(Ritz value {float(floor):.3g}); use a smaller rank or a covariance estimate."
        )
    diag = jnp.full((dim,), 1 / floor, eigvecs.dtype)
    metric = LowRankPreconditioner(diag, eigvecs, 1 / eigvals - 1 / floor)
    evals = 2 * num_iters * points.shape[0]
    return LanczosCurvature(eigvals, eigvecs, floor, metric, evals)


@eqx.filter_jit
def _run(score, points, key, rank, num_iters, shape):
    def hvp(v):
        def one(p):
            _, jv = jax.jvp(score, (p,), (v.reshape(shape).astype(p.dtype),))
            return -jnp.reshape(jv, (-1,))

        return jnp.mean(jax.vmap(one)(points), axis=0)

    dim = points[0].size
    key_0, key_b = jr.split(key)
    v0 = jr.normal(key_0, (dim,), points.dtype)
    alpha, beta, basis = _lanczos(hvp, v0, num_iters, key_b)
    t = jnp.diag(alpha) + jnp.diag(beta, 1) + jnp.diag(beta, -1)
    theta, y = jnp.linalg.eigh(t)
    theta, y = theta[::-1], y[:, ::-1]
    floor = theta[rank]
    vecs = (basis.T @ y[:, :rank]).reshape(dim, rank)
    return jnp.maximum(theta[:rank], floor), vecs, floor


class _ScoreAt(eqx.Module):
    """`score(t, x)` at a fixed time, as a score of `x` alone (`t` a traced leaf: one compile
    serves every level)."""

    score: Callable
    t: Array

    def __call__(self, x):
        return self.score(self.t.astype(x.dtype), x)


def lanczos_per_level(
    kernel,
    x_pilot,
    *,
    key,
    rank: int,
    num_iters: int | None = None,
    at="mean",
) -> list[LanczosCurvature]:
    r"""One [`scoresde.lanczos_curvature`][] per noise level of an annealed Langevin `kernel`:
    level $i$ gets the top-`rank` eigenpairs of the Hessian of $-\ln p_{t_i}$ (the score at the
    level's time $t_i$, the start vector from `fold_in(key, i)`), at the pilot's mean or points
    (`at`). Pass `[c.preconditioner for c in result]` as the kernel's `preconditioner=`; the cost
    is the sum of the `evals`, $2mL$ score evaluations for $L$ levels at the pilot mean.
    """
    if not isinstance(kernel, AnnealedLangevin):
        raise TypeError(f"kernel must be a scoresde.AnnealedLangevin; got {type(kernel).__name__}.")
    key = check_key(key)
    return [
        lanczos_curvature(
            _ScoreAt(kernel.score, t),
            x_pilot,
            key=jr.fold_in(key, i),
            rank=rank,
            num_iters=num_iters,
            at=at,
        )
        for i, t in enumerate(kernel.times())
    ]
