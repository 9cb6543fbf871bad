r"""Preconditioners for Langevin kernels: a fixed symmetric positive-definite metric $M$.

Preconditioned Langevin moves by $x' = x + \epsilon M\,\nabla\ln p(x) + \sqrt{2\epsilon}\,M^{1/2}z$,
which leaves $p$ invariant in the limit $\epsilon \to 0$ (and exactly under MALA's correction,
with the proposal density $N(x'; x + \epsilon M\nabla\ln p(x), 2\epsilon M)$). With $M$ the
target's covariance a Gaussian's condition number becomes 1.

Each preconditioner acts on ONE sample of any shape (flattened inside) and offers
`apply(v)` $= Mv$, `sqrt_apply(v)` $= Lv$ with $LL^\top = M$, `inverse_apply(v)` $= M^{-1}v$ and
`log_det()` $= \ln\det M$.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "AbstractPreconditioner",
    "IdentityPreconditioner",
    "DiagonalPreconditioner",
    "DensePreconditioner",
    "LowRankPreconditioner",
    "estimate_preconditioner",
]


def _flat(fn, v):
    """Apply a map of flat vectors to a sample `v` of any shape."""
    v = jnp.asarray(v)
    return fn(v.reshape(-1)).reshape(v.shape).astype(v.dtype)


class AbstractPreconditioner(eqx.Module):
    """A fixed SPD metric $M$ on flattened samples (see the module docstring)."""

    @abc.abstractmethod
    def apply(self, v): ...

    @abc.abstractmethod
    def sqrt_apply(self, v): ...

    @abc.abstractmethod
    def inverse_apply(self, v): ...

    @abc.abstractmethod
    def log_det(self) -> Array: ...


class IdentityPreconditioner(AbstractPreconditioner):
    """$M = I$: the plain kernels."""

    def apply(self, v):
        return jnp.asarray(v)

    def sqrt_apply(self, v):
        return jnp.asarray(v)

    def inverse_apply(self, v):
        return jnp.asarray(v)

    def log_det(self):
        return jnp.zeros(())


def _check_finite_positive(name, value):
    if not isinstance(value, jax.core.Tracer):
        if not bool(jnp.all(jnp.isfinite(value))) or not bool(jnp.all(value > 0)):
            raise ValueError(f"{name} must be finite and > 0 everywhere.")


class DiagonalPreconditioner(AbstractPreconditioner):
    r"""$M = \mathrm{diag}(\text{scale})$: `scale` holds the variances (one per entry of the
    flattened sample, or a scalar)."""

    scale: Float[Array, " dim"] = eqx.field(converter=jnp.asarray)

    def __check_init__(self):
        if self.scale.ndim > 1:
            raise ValueError(f"scale must be a scalar or 1-D; got shape {self.scale.shape}.")
        _check_finite_positive("scale", self.scale)

    def apply(self, v):
        return _flat(lambda u: self.scale * u, v)

    def sqrt_apply(self, v):
        return _flat(lambda u: jnp.sqrt(self.scale) * u, v)

    def inverse_apply(self, v):
        return _flat(lambda u: u / self.scale, v)

    def log_det(self):
        return jnp.sum(jnp.log(self.scale))


class DensePreconditioner(AbstractPreconditioner):
    """$M$ = `cov`, a dense SPD matrix on the flattened sample (Cholesky factor $L$)."""

    cov: Float[Array, "dim dim"]
    chol: Float[Array, "dim dim"]

    def __init__(self, cov):
        cov = jnp.asarray(cov)
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(f"cov must be a square matrix; got shape {cov.shape}.")
        chol = jnp.linalg.cholesky(cov)
        if not isinstance(chol, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(chol))):
            raise ValueError("cov must be symmetric positive definite (its Cholesky failed).")
        self.cov, self.chol = cov, chol

    def apply(self, v):
        return _flat(lambda u: self.cov @ u, v)

    def sqrt_apply(self, v):
        return _flat(lambda u: self.chol @ u, v)

    def inverse_apply(self, v):
        return _flat(lambda u: jax.scipy.linalg.cho_solve((self.chol, True), u), v)

    def log_det(self):
        return 2 * jnp.sum(jnp.log(jnp.diag(self.chol)))


class LowRankPreconditioner(AbstractPreconditioner):
    r"""$M = D + U\,\mathrm{diag}(s)\,U^\top$: a positive diagonal `diag` ($D$) plus a rank-$k$
    part (`factors` $U$, `(dim, k)`; `weights` $s$, `(k,)`). The weights may be negative (a
    low-rank downdate, e.g. a metric that shrinks a few stiff directions) as long as $M$ stays
    positive definite.

    With $D^{-1/2}U = QR$ (thin QR) and $R\,\mathrm{diag}(s)R^\top = V\Lambda V^\top$, write
    $Q \leftarrow QV$: $M = D^{1/2}(I + Q\Lambda Q^\top)D^{1/2}$, so
    $M^{p} \to D^{1/2}(I + Q((1 + \Lambda)^{p} - 1)Q^\top)$-type products:
    $M^{1/2} = D^{1/2}(I + Q(\sqrt{1 + \Lambda} - 1)Q^\top)$,
    $M^{-1} = D^{-1/2}(I + Q((1 + \Lambda)^{-1} - 1)Q^\top)D^{-1/2}$ (Woodbury),
    $\ln\det M = \sum\ln D + \sum\ln(1 + \Lambda)$: every product costs $O(dk)$.
    """

    diag: Float[Array, " dim"]
    q: Float[Array, "dim k"]
    lam: Float[Array, " k"]

    def __init__(self, diag, factors, weights):
        diag, factors, weights = jnp.asarray(diag), jnp.asarray(factors), jnp.asarray(weights)
        if diag.ndim != 1 or factors.ndim != 2 or factors.shape[0] != diag.shape[0]:
            raise ValueError(
                f"need diag (dim,) and factors (dim, k); got diag {diag.shape}, factors "
                f"{factors.shape}."
            )
        if weights.shape != (factors.shape[1],):
            raise ValueError(f"weights must have shape ({factors.shape[1]},); got {weights.shape}.")
        _check_finite_positive("diag", diag)
        if not isinstance(weights, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(weights))):
            raise ValueError("weights must be finite.")
        q, r = jnp.linalg.qr(factors / jnp.sqrt(diag)[:, None])
        small = (r * weights[None, :]) @ r.T
        lam, v = jnp.linalg.eigh(0.5 * (small + small.T))
        if not isinstance(lam, jax.core.Tracer) and not bool(jnp.all(lam > -1)):
            raise ValueError(
                "diag + factors diag(weights) factors^T must be positive definite; the negative "
                "weights remove more than the diagonal holds."
            )
        self.diag, self.q, self.lam = diag, q @ v, lam

    def _inner(self, u, power):
        r"""$(I + Q\Lambda Q^\top)^{power} u$."""
        return u + self.q @ (((1 + self.lam) ** power - 1) * (self.q.T @ u))

    def apply(self, v):
        root = jnp.sqrt(self.diag)
        return _flat(lambda u: root * self._inner(root * u, 1.0), v)

    def sqrt_apply(self, v):
        return _flat(lambda u: jnp.sqrt(self.diag) * self._inner(u, 0.5), v)

    def inverse_apply(self, v):
        root = jnp.sqrt(self.diag)
        return _flat(lambda u: self._inner(u / root, -1.0) / root, v)

    def log_det(self):
        return jnp.sum(jnp.log(self.diag)) + jnp.sum(jnp.log1p(self.lam))


def estimate_preconditioner(
    score,
    x_pilot,
    *,
    kind: str = "covariance",
    jitter: float = 1e-6,
    rank: int | None = None,
    key=None,
    num_iters: int | None = None,
    at: str = "mean",
):
    r"""A preconditioner fitted on a pilot ensemble `x_pilot` `(n, *data)` (drawn with its own
    key, then frozen: the kernels' samples still depend only on their keys).

    - `kind="covariance"`: the pilot's sample covariance (needs no score; `score` may be `None`);
      a [`scoresde.DensePreconditioner`][], 0 evaluations.
    - `kind="fisher"`: the inverse of the Fisher matrix $E[s s^\top]$ of the scores at the pilot
      points (for a Gaussian target $E[ss^\top] = \Sigma^{-1}$); dense, `n` score evaluations.
    - `kind="fisher_divergence"`: the Gaussian $N(m, P^{-1})$ whose score $-P(x - m)$ is
      closest to the scores at the pilot points, $\min_{P, m} \frac1n\sum_i
      \lVert s(x_i) + P(x_i - m)\rVert^2$, and $M = P^{-1}$. Exact for a Gaussian target from ANY
      pilot whose covariance has full rank (scores carry the curvature; the pilot need not be
      drawn from the target). With centred $x, s$, $C = \overline{x x^\top}$,
      $S = \overline{x s^\top}$: `rank=None` fits a diagonal $P$, $p_j = -S_{jj}/C_{jj}$
      (a [`scoresde.DiagonalPreconditioner`][]); `rank=k` solves the symmetric fit
      $CP + PC = -(S + S^\top)$ in $C$'s eigenbasis and keeps $M$'s top-$k$ eigenpairs over the
      mean $\tau$ of the others, $M \approx D + V_k(\Lambda_k - \tau)V_k^\top$ with $D$ chosen so
      that the diagonal of $M$ is kept (exact for $M = \tau I + $ rank $k$; a
      [`scoresde.LowRankPreconditioner`][]). `n` score evaluations.
    - `kind="lanczos"`: the inverse-Hessian metric from the top-`rank` eigenpairs of
      $-\partial s/\partial x$ at the pilot mean (`at="mean"`, $2m$ evaluations for $m$ =
      `num_iters` Lanczos steps, default $\min(\dim, 2\,\mathrm{rank} + 10)$) or averaged over
      the pilot points (`at="points"`, $2nm$); needs `rank` and `key`; a
      [`scoresde.LowRankPreconditioner`][]. See [`scoresde.lanczos_curvature`][], which also
      returns the eigenpairs and the cost.

    `jitter` times the mean variance is added to the diagonal before inversion (dense kinds);
    for `fisher_divergence` it floors the pilot's variances (a degenerate pilot).
    """
    if kind == "lanczos":
        from .lanczos import lanczos_curvature

        if rank is None or key is None:
            raise TypeError("kind='lanczos' needs rank= and key=.")
        return lanczos_curvature(
            score, x_pilot, key=key, rank=rank, num_iters=num_iters, at=at
        ).preconditioner
    x = jnp.asarray(x_pilot)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"x_pilot must be a batch (n >= 2, *data_shape); got shape {x.shape}.")
    flat = x.reshape(x.shape[0], -1)
    dim = flat.shape[1]
    if kind == "fisher_divergence":
        if not callable(score):
            raise TypeError("kind='fisher_divergence' needs a callable score(x) on one sample.")
        s = jax.vmap(score)(x).reshape(x.shape[0], -1)
        return _fisher_divergence_fit(flat, s, rank, jitter)
    if kind == "covariance":
        mat = jnp.cov(flat, rowvar=False).reshape(dim, dim)
    elif kind == "fisher":
        if not callable(score):
            raise TypeError("kind='fisher' needs a callable score(x) on one sample.")
        s = jax.vmap(score)(x).reshape(x.shape[0], -1)
        fisher = s.T @ s / x.shape[0]
        fisher = fisher + jitter * jnp.trace(fisher) / dim * jnp.eye(dim, dtype=fisher.dtype)
        mat = jnp.linalg.inv(fisher)
        mat = 0.5 * (mat + mat.T)
    else:
        raise ValueError(
            "kind must be 'covariance', 'fisher', 'fisher_divergence' or 'lanczos'; "
            f"got kind={kind!r}."
        )
    if kind == "covariance":
        mat = mat + jitter * jnp.trace(mat) / dim * jnp.eye(dim, dtype=mat.dtype)
    return DensePreconditioner(mat)


def _fisher_divergence_fit(x, s, rank, jitter):
    """`estimate_preconditioner(kind="fisher_divergence")` on flat draws `x` and scores `s`."""
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
