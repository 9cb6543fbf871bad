r"""Analytic oracles: Gaussians and Gaussian mixtures, diffused exactly by any linear SDE.

Under $x_t = \alpha x_0 + \sigma z$ a Gaussian $N(\mu, S)$ stays Gaussian,
$N(\alpha\mu, \alpha^2 S + \sigma^2 I)$, and a mixture stays a mixture component by component.
Covariances are held in their eigendecomposition $S = U \operatorname{diag}(l) U^\top$, so every
diffused covariance shares $U$ and has eigenvalues $\alpha^2 l + \sigma^2$: scores and densities at
any $t$ cost one projection, with no factorisation per call.

All methods act on ONE sample `x` of shape `(dim,)`; `sample` returns `(num, dim)`, sample `i`
drawn from `jax.random.fold_in(key, i)`. Methods on `x` compute in `x`'s float dtype (the
parameters are cast to it), so a float64-built oracle serves float32 samples and vice versa.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._checks import is_concrete
from ._custom_types import Key, Scalar
from ._inverse.measurement import LinearMeasurement
from ._sde import AbstractSDE

__all__ = [
    "Gaussian",
    "GaussianMixture",
    "MarginalScore",
    "NoisyLikelihoodScore",
    "marginal_score",
    "noisy_likelihood_score",
    "ring_mixture",
]

_LOG_2PI = math.log(2 * math.pi)


def _eigh(cov, name):
    cov = jnp.asarray(cov)
    if is_concrete(cov):
        c = np.asarray(cov)
        if not np.allclose(c, np.swapaxes(c, -1, -2), rtol=1e-5, atol=1e-8):
            raise ValueError(f"{name} must be symmetric.")
    eigvals, eigvecs = jnp.linalg.eigh(0.5 * (cov + jnp.swapaxes(cov, -1, -2)))
    return eigvecs, eigvals


def _check_eigvals(eigvals, name):
    if is_concrete(eigvals) and not np.all(np.asarray(eigvals) > 0):
        raise ValueError(
            f"{name} must be positive definite; its smallest eigenvalue is "
            f"{float(np.min(np.asarray(eigvals)))}."
        )


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)


def _check_sample(x, dim, who):
    if jnp.ndim(x) != 1 or jnp.shape(x)[0] != dim:
        raise ValueError(
            f"{who} takes ONE sample of shape ({dim},); got x with shape {jnp.shape(x)}. "
            "Use jax.vmap for a batch."
        )


def _in_dtype_of(dist, x):
    """`(dist, x)` in one float dtype: `x`'s if it is floating, else the parameters'."""
    x = jnp.asarray(x)
    dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else dist.eigvals.dtype
    if dist.eigvals.dtype != dtype:
        dist = jax.tree.map(lambda a: a.astype(dtype), dist)
    return dist, x.astype(dtype)


class Gaussian(eqx.Module):
    r"""$N(\mu, S)$ with a full covariance, stored as $S = U \operatorname{diag}(l) U^\top$.

    Construct with `Gaussian(mean, cov)` or `Gaussian(mean, eigvecs=U, eigvals=l)`.
    """

    mean: Float[Array, " dim"]
    eigvecs: Float[Array, "dim dim"]
    eigvals: Float[Array, " dim"]

    def __init__(self, mean, cov=None, *, eigvecs=None, eigvals=None):
        mean = _float(mean)
        if mean.ndim != 1:
            raise ValueError(f"mean must have shape (dim,); got {mean.shape}.")
        dim = mean.shape[0]
        if cov is not None:
            if eigvecs is not None or eigvals is not None:
                raise TypeError("Give either cov or (eigvecs, eigvals), not both.")
            cov = jnp.asarray(cov, mean.dtype)
            if cov.shape != (dim, dim):
                raise ValueError(f"cov must have shape ({dim}, {dim}); got {cov.shape}.")
            eigvecs, eigvals = _eigh(cov, "cov")
        elif eigvecs is None or eigvals is None:
            raise TypeError("Gaussian needs cov, or both eigvecs and eigvals.")
        eigvecs = jnp.asarray(eigvecs, mean.dtype)
        eigvals = jnp.asarray(eigvals, mean.dtype)
        if eigvecs.shape != (dim, dim) or eigvals.shape != (dim,):
            raise ValueError(
                f"eigvecs must be ({dim}, {dim}) and eigvals ({dim},); got "
                f"{eigvecs.shape} and {eigvals.shape}."
            )
        _check_eigvals(eigvals, "cov")
        self.mean, self.eigvecs, self.eigvals = mean, eigvecs, eigvals

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def cov(self) -> Float[Array, "dim dim"]:
        return (self.eigvecs * self.eigvals[None, :]) @ self.eigvecs.T

    def log_prob(self, x: ArrayLike) -> Array:
        """$\\ln N(x; \\mu, S)$."""
        _check_sample(x, self.dim, "Gaussian.log_prob")
        d, x = _in_dtype_of(self, x)
        proj = d.eigvecs.T @ (x - d.mean)
        maha = jnp.sum(proj**2 / d.eigvals)
        return -0.5 * (d.dim * _LOG_2PI + jnp.sum(jnp.log(d.eigvals)) + maha)

    def score(self, x: ArrayLike) -> Array:
        """$\\nabla_x \\ln N(x; \\mu, S) = S^{-1}(\\mu - x)$."""
        _check_sample(x, self.dim, "Gaussian.score")
        d, x = _in_dtype_of(self, x)
        proj = d.eigvecs.T @ (d.mean - x)
        return d.eigvecs @ (proj / d.eigvals)

    def sample(self, key: Key, num: int) -> Float[Array, "num dim"]:
        """`num` samples; sample `i` uses `fold_in(key, i)`."""

        def one(i):
            z = jr.normal(jr.fold_in(key, i), (self.dim,), self.mean.dtype)
            return self.mean + self.eigvecs @ (jnp.sqrt(self.eigvals) * z)

        return jax.vmap(one)(jnp.arange(num))

    def entropy(self) -> Array:
        """Differential entropy $\\tfrac12 \\ln\\det(2\\pi e S)$ in nats."""
        return 0.5 * (self.dim * (_LOG_2PI + 1) + jnp.sum(jnp.log(self.eigvals)))

    def marginal(self, sde: AbstractSDE, t: Scalar) -> "Gaussian":
        r"""The law of $x_t = \alpha(t) x_0 + \sigma(t) z$: $N(\alpha\mu, \alpha^2 S + \sigma^2 I)$
        (in the parameters' dtype)."""
        alpha, sigma = (jnp.asarray(c, self.mean.dtype) for c in sde.marginal(t))
        return Gaussian(
            alpha * self.mean,
            eigvecs=self.eigvecs,
            eigvals=alpha**2 * self.eigvals + sigma**2,
        )

    def probability_flow(
        self, sde: AbstractSDE, t_from: Scalar, t_to: Scalar, x: Float[Array, " dim"]
    ) -> Array:
        r"""Exact PF-ODE flow map of this Gaussian's diffusion, from `t_from` to `t_to`.

        Per eigen-direction $i$, with $v_i(t) = \alpha(t)^2 l_i + \sigma(t)^2$:
        $x_{t} - \alpha(t)\mu = \sqrt{v_i(t)/v_i(s)}\,(x_s - \alpha(s)\mu)$.
        """
        _check_sample(x, self.dim, "Gaussian.probability_flow")
        d, x = _in_dtype_of(self, x)
        a0, s0 = (jnp.asarray(c, x.dtype) for c in sde.marginal(t_from))
        a1, s1 = (jnp.asarray(c, x.dtype) for c in sde.marginal(t_to))
        v0 = a0**2 * d.eigvals + s0**2
        v1 = a1**2 * d.eigvals + s1**2
        proj = d.eigvecs.T @ (x - a0 * d.mean)
        return a1 * d.mean + d.eigvecs @ (jnp.sqrt(v1 / v0) * proj)

    def condition(self, m: "LinearMeasurement") -> "Gaussian":
        r"""The exact posterior $p(x \mid y)$ under the measurement `m`: $N(\mu', P)$ with
        $P = (S^{-1} + A^\top R^{-1} A)^{-1}$, $\mu' = P (S^{-1}\mu + A^\top R^{-1} y)$."""
        means, eigvecs, eigvals = _posterior_components(
            _check_measurement(m, self.dim, "Gaussian.condition"),
            self.mean[None],
            self.eigvecs[None],
            self.eigvals[None],
        )
        return Gaussian(means[0], eigvecs=eigvecs[0], eigvals=eigvals[0])

    def log_evidence(self, m: "LinearMeasurement") -> Array:
        r"""$\ln p(y) = \ln N(y; A\mu, A S A^\top + R)$."""
        m = _check_measurement(m, self.dim, "Gaussian.log_evidence")
        return _component_evidence(m, self.mean[None], self.eigvecs[None], self.eigvals[None])[0]


class GaussianMixture(eqx.Module):
    r"""$\sum_k w_k N(\mu_k, S_k)$ with full covariances $S_k = U_k \operatorname{diag}(l_k) U_k^\top$.

    Construct with `GaussianMixture(weights, means, covs)` or
    `GaussianMixture(weights, means, eigvecs=U, eigvals=l)` (shapes `(K, d, d)` and `(K, d)`).
    """

    weights: Float[Array, " K"]
    means: Float[Array, "K dim"]
    eigvecs: Float[Array, "K dim dim"]
    eigvals: Float[Array, "K dim"]

    def __init__(self, weights, means, covs=None, *, eigvecs=None, eigvals=None):
        means = _float(means)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, dim); got {means.shape}.")
        K, dim = means.shape
        weights = jnp.asarray(weights, means.dtype)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},); got {weights.shape}.")
        if is_concrete(weights):
            w = np.asarray(weights)
            if not (np.all(w > 0) and abs(w.sum() - 1) < 1e-4):
                raise ValueError(f"weights must be positive and sum to 1; got {w}.")
        if covs is not None:
            if eigvecs is not None or eigvals is not None:
                raise TypeError("Give either covs or (eigvecs, eigvals), not both.")
            covs = jnp.asarray(covs, means.dtype)
            if covs.shape != (K, dim, dim):
                raise ValueError(f"covs must have shape ({K}, {dim}, {dim}); got {covs.shape}.")
            eigvecs, eigvals = _eigh(covs, "covs")
        elif eigvecs is None or eigvals is None:
            raise TypeError("GaussianMixture needs covs, or both eigvecs and eigvals.")
        eigvecs = jnp.asarray(eigvecs, means.dtype)
        eigvals = jnp.asarray(eigvals, means.dtype)
        if eigvecs.shape != (K, dim, dim) or eigvals.shape != (K, dim):
            raise ValueError(
                f"eigvecs must be ({K}, {dim}, {dim}) and eigvals ({K}, {dim}); got "
                f"{eigvecs.shape} and {eigvals.shape}."
            )
        _check_eigvals(eigvals, "covs")
        self.weights, self.means, self.eigvecs, self.eigvals = weights, means, eigvecs, eigvals

    @classmethod
    def from_npz(cls, path, dtype=None) -> "GaussianMixture":
        """Load `weights`, `means`, `eigvecs`, `eigvals` arrays from an `.npz` file."""
        with np.load(path) as data:
            arrays = {
                k: jnp.asarray(data[k], dtype) for k in ("weights", "means", "eigvecs", "eigvals")
            }
        weights = arrays["weights"] / jnp.sum(arrays["weights"])
        return cls(weights, arrays["means"], eigvecs=arrays["eigvecs"], eigvals=arrays["eigvals"])

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def covs(self) -> Float[Array, "K dim dim"]:
        return jnp.einsum("kij,kj,klj->kil", self.eigvecs, self.eigvals, self.eigvecs)

    @property
    def mean(self) -> Float[Array, " dim"]:
        return self.weights @ self.means

    @property
    def cov(self) -> Float[Array, "dim dim"]:
        """Covariance of the whole mixture (law of total covariance)."""
        centred = self.means - self.mean[None, :]
        between = jnp.einsum("k,ki,kj->ij", self.weights, centred, centred)
        return jnp.einsum("k,kij->ij", self.weights, self.covs) + between

    def _component_terms(self, x):
        """Per-component log-densities and projected residuals $U_k^\\top (x - \\mu_k) / l_k$."""
        proj = jnp.einsum("ki,kij->kj", x[None, :] - self.means, self.eigvecs)
        scaled = proj / self.eigvals
        maha = jnp.sum(proj * scaled, axis=-1)
        logdet = jnp.sum(jnp.log(self.eigvals), axis=-1)
        log_n = -0.5 * (self.dim * _LOG_2PI + logdet + maha)
        return log_n, scaled

    def component_log_probs(self, x: ArrayLike) -> Float[Array, " K"]:
        """$\\ln w_k + \\ln N(x; \\mu_k, S_k)$ for each component."""
        _check_sample(x, self.dim, "GaussianMixture.component_log_probs")
        d, x = _in_dtype_of(self, x)
        return jnp.log(d.weights) + d._component_terms(x)[0]

    def responsibilities(self, x: ArrayLike) -> Float[Array, " K"]:
        """Posterior component probabilities $r_k(x)$."""
        return jax.nn.softmax(self.component_log_probs(x))

    def log_prob(self, x: ArrayLike) -> Array:
        """$\\ln \\sum_k w_k N(x; \\mu_k, S_k)$."""
        return jax.nn.logsumexp(self.component_log_probs(x))

    def score(self, x: ArrayLike) -> Array:
        """$\\sum_k r_k(x) S_k^{-1} (\\mu_k - x)$."""
        _check_sample(x, self.dim, "GaussianMixture.score")
        d, x = _in_dtype_of(self, x)
        log_n, scaled = d._component_terms(x)
        r = jax.nn.softmax(jnp.log(d.weights) + log_n)
        # Weight first, then ONE contraction over (k, j): under vmap a single GEMM
        # (batch, K*dim) x (K*dim, dim). The three-operand einsum "k,kij,kj->i" compiled to
        # slower code (2-3x per evaluation with a JVP at batch 1024, benchmarks/likelihood.py).
        return -jnp.einsum("kj,kij->i", r[:, None] * scaled, d.eigvecs)

    def sample(self, key: Key, num: int) -> Float[Array, "num dim"]:
        """`num` samples; sample `i` uses `fold_in(key, i)`."""
        samples, _ = self.sample_with_components(key, num)
        return samples

    def sample_with_components(self, key: Key, num: int) -> tuple[Array, Array]:
        """`num` samples and the index of the component each was drawn from."""

        def one(i):
            key_k, key_z = jr.split(jr.fold_in(key, i))
            k = jr.categorical(key_k, jnp.log(self.weights))
            z = jr.normal(key_z, (self.dim,), self.means.dtype)
            return self.means[k] + self.eigvecs[k] @ (jnp.sqrt(self.eigvals[k]) * z), k

        return jax.vmap(one)(jnp.arange(num))

    def marginal(self, sde: AbstractSDE, t: Scalar) -> "GaussianMixture":
        r"""The law at time `t`: $\sum_k w_k N(\alpha\mu_k, \alpha^2 S_k + \sigma^2 I)$ (in the
        parameters' dtype)."""
        alpha, sigma = (jnp.asarray(c, self.means.dtype) for c in sde.marginal(t))
        return GaussianMixture(
            self.weights,
            alpha * self.means,
            eigvecs=self.eigvecs,
            eigvals=alpha**2 * self.eigvals + sigma**2,
        )

    def condition(self, m: "LinearMeasurement") -> "GaussianMixture":
        r"""The exact posterior $p(x \mid y)$ under the measurement `m`: each component
        conditioned as [`scoresde.analytic.Gaussian.condition`][], weights re-weighted by
        each component's evidence, $w'_k \propto w_k N(y; A\mu_k, A S_k A^\top + R)$."""
        m = _check_measurement(m, self.dim, "GaussianMixture.condition")
        means, eigvecs, eigvals = _posterior_components(m, self.means, self.eigvecs, self.eigvals)
        log_w = jnp.log(self.weights) + _component_evidence(
            m, self.means, self.eigvecs, self.eigvals
        )
        return GaussianMixture(jax.nn.softmax(log_w), means, eigvecs=eigvecs, eigvals=eigvals)

    def log_evidence(self, m: "LinearMeasurement") -> Array:
        r"""$\ln p(y) = \ln \sum_k w_k N(y; A\mu_k, A S_k A^\top + R)$."""
        m = _check_measurement(m, self.dim, "GaussianMixture.log_evidence")
        log_n = _component_evidence(m, self.means, self.eigvecs, self.eigvals)
        return jax.nn.logsumexp(jnp.log(self.weights) + log_n)


class MarginalScore(eqx.Module):
    r"""The exact score $\nabla_x \ln p_t(x)$ of `dist` diffused by `sde`, as `score(t, x)`."""

    dist: Gaussian | GaussianMixture
    sde: AbstractSDE

    def __call__(self, t: Scalar, x: ArrayLike) -> Array:
        """The score at `(t, x)`, in `x`'s dtype."""
        dist, x = _in_dtype_of(self.dist, x)
        return dist.marginal(self.sde, t).score(x)


def marginal_score(dist: Gaussian | GaussianMixture, sde: AbstractSDE) -> MarginalScore:
    """The exact `score(t, x)` of `dist` diffused by `sde` (an Equinox module)."""
    if not isinstance(dist, (Gaussian, GaussianMixture)):
        raise TypeError(f"dist must be a Gaussian or GaussianMixture; got {type(dist).__name__}.")
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be an AbstractSDE; got {type(sde).__name__}.")
    return MarginalScore(dist, sde)


def _check_measurement(m, dim, who) -> LinearMeasurement:
    if not isinstance(m, LinearMeasurement):
        raise TypeError(f"{who} takes m, a scoresde.LinearMeasurement; got {type(m).__name__}.")
    if m.dim_x != dim:
        raise ValueError(
            f"{who}: the measurement's A has width {m.dim_x}; expected the dimension {dim}."
        )
    return m


def _gaussian_log_pdf(y, mean, cov):
    """$\\ln N(y; mean, cov)$ through a Cholesky factor."""
    chol = jnp.linalg.cholesky(cov)
    z = jax.scipy.linalg.solve_triangular(chol, y - mean, lower=True)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (y.shape[0] * _LOG_2PI + logdet + jnp.sum(z**2))


def _predictive_cov(A, eigvecs, eigvals, noise_var):
    """$A U \\operatorname{diag}(l) U^\\top A^\\top + R$ for one component."""
    AU = A @ eigvecs
    cov = (AU * eigvals[None, :]) @ AU.T + jnp.diag(noise_var)
    return 0.5 * (cov + cov.T)


def _component_evidence(m, means, eigvecs, eigvals):
    """$\\ln N(y; A\\mu_k, A S_k A^\\top + R)$ per component."""
    A = m.matrix.astype(means.dtype)
    y, var = m.y.astype(means.dtype), m.noise_var.astype(means.dtype)

    def one(mean, U, lam):
        return _gaussian_log_pdf(y, A @ mean, _predictive_cov(A, U, lam, var))

    return jax.vmap(one)(means, eigvecs, eigvals)


def _posterior_components(m, means, eigvecs, eigvals):
    """Each component conditioned on `m`, in precision form (positive definite by construction):
    $P^{-1} = S^{-1} + A^\\top R^{-1} A$, $\\mu' = P (S^{-1}\\mu + A^\\top R^{-1} y)$."""
    A = m.matrix.astype(means.dtype)
    y, var = m.y.astype(means.dtype), m.noise_var.astype(means.dtype)

    def one(mean, U, lam):
        precision = (U / lam[None, :]) @ U.T + (A.T / var[None, :]) @ A
        q, V = jnp.linalg.eigh(0.5 * (precision + precision.T))
        b = U @ ((U.T @ mean) / lam) + A.T @ (y / var)
        return V @ ((V.T @ b) / q), V, 1 / q

    return jax.vmap(one)(means, eigvecs, eigvals)


def _components(dist):
    """`(log_weights, means, eigvecs, eigvals)`, a Gaussian being one component."""
    if isinstance(dist, Gaussian):
        return (
            jnp.zeros((1,), dist.mean.dtype),
            dist.mean[None],
            dist.eigvecs[None],
            dist.eigvals[None],
        )
    return jnp.log(dist.weights), dist.means, dist.eigvecs, dist.eigvals


class NoisyLikelihoodScore(eqx.Module):
    r"""The exact $\nabla_x \ln p_t(y \mid x)$ of a measurement of Gaussian (mixture) data.

    With $V_k = \alpha^2 S_k + \sigma^2 I$,
    $m_k(x) = \mu_k + \alpha S_k V_k^{-1}(x - \alpha\mu_k)$ (Tweedie's mean of component $k$)
    and $C_k = S_k - \alpha^2 S_k V_k^{-1} S_k = \sigma^2 S_k V_k^{-1}$,

    $$p_t(y \mid x) = \sum_k r_k(x)\, N(y; A m_k(x), A C_k A^\top + R),$$

    $r_k$ the responsibilities under the diffused prior; the gradient is taken by autodiff.
    NOT the clean likelihood $\nabla \ln p(y \mid x_0)$ evaluated at $x_t$.
    """

    dist: "Gaussian | GaussianMixture"
    sde: AbstractSDE
    measurement: LinearMeasurement

    def log_likelihood(self, t: Scalar, x: ArrayLike) -> Array:
        r"""$\ln p_t(y \mid x)$."""
        log_w, means, eigvecs, eigvals = _components(self.dist)
        alpha, sigma = self.sde.marginal(t)
        m = self.measurement
        dtype = jnp.result_type(x, means)
        A = m.matrix.astype(dtype)
        y, var = m.y.astype(dtype), m.noise_var.astype(dtype)

        def one(log_wk, mean, U, lam):
            v = alpha**2 * lam + sigma**2
            proj = U.T @ (x - alpha * mean)
            log_prior = -0.5 * (x.shape[0] * _LOG_2PI + jnp.sum(jnp.log(v)) + jnp.sum(proj**2 / v))
            m_k = mean + U @ (alpha * lam / v * proj)
            cov = _predictive_cov(A, U, lam * sigma**2 / v, var)
            return log_wk + log_prior, _gaussian_log_pdf(y, A @ m_k, cov)

        log_joint, log_lik = jax.vmap(one)(log_w, means, eigvecs, eigvals)
        return jax.nn.logsumexp(jax.nn.log_softmax(log_joint) + log_lik)

    def __call__(self, t: Scalar, x: ArrayLike) -> Array:
        _check_sample(x, self.dist.dim, "noisy_likelihood_score")
        return jax.grad(self.log_likelihood, argnums=1)(t, x)


def noisy_likelihood_score(
    dist: "Gaussian | GaussianMixture", sde: AbstractSDE, m: LinearMeasurement
) -> NoisyLikelihoodScore:
    r"""The exact `score(t, x)` $= \nabla_x \ln p_t(y \mid x)$ for data `dist` diffused by `sde`
    and the measurement `m`; add it to [`scoresde.analytic.marginal_score`][] for the exact
    posterior score (see [`scoresde.analytic.NoisyLikelihoodScore`][])."""
    if not isinstance(dist, (Gaussian, GaussianMixture)):
        raise TypeError(f"dist must be a Gaussian or GaussianMixture; got {type(dist).__name__}.")
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be an AbstractSDE; got {type(sde).__name__}.")
    return NoisyLikelihoodScore(
        dist, sde, _check_measurement(m, dist.dim, "noisy_likelihood_score")
    )


def ring_mixture(
    num_modes: int = 8, radius: float = 1.0, std: float = 0.1, weights=None
) -> GaussianMixture:
    """Isotropic 2-D components evenly spaced on a circle (the `ring2d` benchmark problem).

    Default weights are 0.05, 0.10, 0.15, 0.20 repeated around the circle (for 8 modes).
    """
    if num_modes < 1:
        raise ValueError(f"num_modes must be >= 1; got num_modes={num_modes}.")
    angles = 2 * np.pi * np.arange(num_modes) / num_modes
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    if weights is None:
        weights = 0.05 * (1 + np.arange(num_modes) % 4)
    weights = np.asarray(weights, float)
    weights = weights / weights.sum()
    eigvecs = np.broadcast_to(np.eye(2), (num_modes, 2, 2))
    eigvals = np.full((num_modes, 2), std**2)
    return GaussianMixture(weights, means, eigvecs=eigvecs, eigvals=eigvals)
