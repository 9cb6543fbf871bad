r"""Preconditioners for Langevin kernels: a fixed symmetric positive-definite metric $M$.

Preconditioned Langevin moves by $x' = x + \epsilon M\,\nabla\ln p(x) + \sqrt{2\epsilon}\,M^{1/2}z$,
which leaves $p$ invariant in the limit $\epsilon \to 0$ (and exactly under MALA's correction,
with the proposal density $N(x'; x + \epsilon M\nabla\ln p(x), 2\epsilon M)$). With $M$ the
target's covariance a Gaussian's condition number becomes 1.

Each preconditioner acts on ONE sample of any shape (flattened inside) and offers
`apply(v)` $= Mv$, `sqrt_apply(v)` $= Lv$ with $LL^\top = M$, `inverse_apply(v)` $= M^{-1}v$ and
`log_det()` $= \ln\det M$. Estimators of $M$ from a pilot ensemble live in
`metric_estimators`.
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
