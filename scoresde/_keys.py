"""Per-sample randomness: sample `i` of a batch draws everything from `fold_in(key, i)`.

So a sample's random draws do not depend on the batch it was drawn in, nor on the device or
chunk that draws it: `rows` (see `_sharding.Rows`) holds the GLOBAL index of a device's or a
chunk's first sample, and its padding rows repeat the last real sample.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr


def global_indices(num: int, rows=None):
    """The global indices of `num` local samples: `arange(num)`, or `rows.indices()`."""
    return jnp.arange(num) if rows is None else rows.indices()


def sample_keys(key, num: int, offset=0, rows=None):
    """`fold_in(key, offset + i)` for `i < num`: one key per sample (`rows`: the global
    indices of a device's or chunk's rows instead of `offset + i`)."""
    return jax.vmap(lambda i: jr.fold_in(key, i))(offset + global_indices(num, rows))


def prior_and_noise_keys(key, num: int, offset=0, rows=None):
    """Each sample's key split in two: one for its prior latent, one for its noise."""
    both = jax.vmap(jr.split)(sample_keys(key, num, offset, rows))
    return both[:, 0], both[:, 1]


def latents_and_noise_keys(sde, key, shape, x_T, dtype, rows=None):
    """The prior latents `x_T` (drawn per sample unless given) and each sample's noise key."""
    prior_keys, noise_keys = prior_and_noise_keys(key, shape[0], rows=rows)
    if x_T is None:
        x_T = jax.vmap(lambda k: sde.prior_sample(k, shape[1:]).astype(dtype))(prior_keys)
    return x_T, noise_keys


@eqx.filter_jit
def draw_latents(*, sde, key, shape, dtype, rows=None):
    """The prior latents of `latents_and_noise_keys`, drawn in a program of their own (for
    `_sharding.map_batch`; `rows`: a device's or chunk's rows).

    Drawn inside a solve, XLA fuses the draw with the solve's first steps differently for
    different per-device batch widths, and the latents then differ by an ulp in some rows, which
    an adaptive solve amplifies to its tolerance. On their own they are the same at every width
    (measured on CPU: widths 1 to 64, data dimensions 3 and 64).
    """
    if rows is not None:
        shape = (rows.num, *shape[1:])
    return latents_and_noise_keys(sde, key, shape, None, dtype, rows)[0]
