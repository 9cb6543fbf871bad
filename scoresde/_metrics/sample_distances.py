"""Sample-quality metrics against exact samples or a known mixture."""

import jax
import jax.numpy as jnp
import jax.random as jr

from ..analytic import GaussianMixture


@jax.jit
def _sw(x, y, key):
    dirs = jr.normal(key, (128, x.shape[1]), x.dtype)
    dirs = dirs / jnp.linalg.norm(dirs, axis=1, keepdims=True)
    px = jnp.sort(x @ dirs.T, axis=0)
    py = jnp.sort(y @ dirs.T, axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def sliced_wasserstein(x, y, *, key) -> float:
    r"""Sliced 2-Wasserstein distance between equal-size point clouds `x`, `y` of shape `(n, d)`.

    $\big(\mathbb{E}_\theta W_2^2(\theta^\top x, \theta^\top y)\big)^{1/2}$ over 128 random
    directions on the sphere; each 1-D $W_2$ is exact from sorted projections.
    """
    x = jnp.reshape(x, (x.shape[0], -1))
    y = jnp.reshape(y, (y.shape[0], -1))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {x.shape} and {y.shape}.")
    return float(_sw(x, y, key))


def mode_weights(dist: GaussianMixture, x) -> jax.Array:
    """Fraction of samples `x` (n, d) assigned to each component by maximum responsibility."""
    comp = jnp.argmax(jax.vmap(dist.component_log_probs)(x), axis=1)
    return jnp.bincount(comp, length=dist.num_components) / x.shape[0]


def mode_weight_error(dist: GaussianMixture, x) -> float:
    """Largest absolute difference between `mode_weights(dist, x)` and the mixture weights."""
    return float(jnp.max(jnp.abs(mode_weights(dist, x) - dist.weights)))


@jax.jit
def _mmd2(x, y, bandwidth):
    def gram(a, b):
        d2 = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T
        return jnp.exp(-jnp.maximum(d2, 0.0) / (2 * bandwidth**2))

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    sxx = (jnp.sum(kxx) - jnp.trace(kxx)) / (n * (n - 1))
    syy = (jnp.sum(kyy) - jnp.trace(kyy)) / (m * (m - 1))
    return sxx + syy - 2 * jnp.mean(kxy)


def median_bandwidth(y) -> float:
    """Median pairwise distance between the points of `y` (n, d): the usual RBF bandwidth."""
    y = jnp.reshape(y, (y.shape[0], -1))[:1024]
    d2 = jnp.sum((y[:, None, :] - y[None, :, :]) ** 2, axis=-1)
    return float(jnp.sqrt(jnp.median(d2[jnp.triu_indices(y.shape[0], 1)])))


def mmd2(x, y, *, bandwidth: float) -> float:
    r"""Unbiased squared maximum mean discrepancy with an RBF kernel of width `bandwidth`.

    $\widehat{\mathrm{MMD}}^2 = \frac{1}{n(n-1)}\sum_{i\ne j}k(x_i, x_j)
    + \frac{1}{m(m-1)}\sum_{i\ne j}k(y_i, y_j) - \frac{2}{nm}\sum_{i,j}k(x_i, y_j)$,
    $k(a, b) = \exp(-\lVert a - b\rVert^2 / 2h^2)$. Unbiased, so it can be slightly negative
    when the two samples come from one distribution. Needs at least 2 points on each side.
    """
    x = jnp.reshape(x, (x.shape[0], -1))
    y = jnp.reshape(y, (y.shape[0], -1))
    if x.shape[0] < 2 or y.shape[0] < 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"need (n >= 2, d) and (m >= 2, d) points; got {x.shape} and {y.shape}.")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0; got {bandwidth}.")
    dtype = jnp.result_type(x, y)
    return float(_mmd2(x.astype(dtype), y.astype(dtype), jnp.asarray(bandwidth, dtype)))
