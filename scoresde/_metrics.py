"""Sample-quality metrics against exact samples or a known mixture."""

import jax
import jax.numpy as jnp
import jax.random as jr

from .analytic import GaussianMixture


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
