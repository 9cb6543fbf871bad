"""Per-sample randomness: sample `i` of a batch draws everything from `fold_in(key, i)`.

So a sample's random draws do not depend on the batch it was drawn in (nor, later, on the
device that draws it: `offset` is the global index of the first sample).
"""

import jax
import jax.numpy as jnp
import jax.random as jr


def sample_keys(key, num: int, offset=0):
    """`fold_in(key, offset + i)` for `i < num`: one key per sample."""
    return jax.vmap(lambda i: jr.fold_in(key, i))(offset + jnp.arange(num))


def prior_and_noise_keys(key, num: int, offset=0):
    """Each sample's key split in two: one for its prior latent, one for its noise."""
    both = jax.vmap(jr.split)(sample_keys(key, num, offset))
    return both[:, 0], both[:, 1]


def latents_and_noise_keys(sde, key, shape, x_T, dtype):
    """The prior latents `x_T` (drawn per sample unless given) and each sample's noise key."""
    prior_keys, noise_keys = prior_and_noise_keys(key, shape[0])
    if x_T is None:
        x_T = jax.vmap(lambda k: sde.prior_sample(k, shape[1:]).astype(dtype))(prior_keys)
    return x_T, noise_keys
