"""Digit sample-quality metrics: the classifier, the Frechet distance, class histograms.

The classifier is trained once for the module (a few seconds); every check has a negative
control (noise, a single class) that the metric must separate from real digits.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import scoresde as ss

# One worker for the module, and its fixtures session-scoped: pytest tears a module fixture
# down whenever the worker turns to another module, so only these build it once per run.
pytestmark = pytest.mark.xdist_group("digit_metrics")


@pytest.fixture(scope="session")
def clf():
    return ss.DigitClassifier(seed=0)


def _noise(num=297, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (num, 1, 8, 8))


def test_classifier_is_accurate_and_deterministic(clf):
    assert clf.test_accuracy > 0.95
    assert clf.accuracy(clf.test_images, clf.test_labels) == clf.test_accuracy
    # Negative control: shuffled labels are near chance.
    shuffled = np.random.default_rng(0).permutation(clf.test_labels)
    assert clf.accuracy(clf.test_images, shuffled) < 0.3
    again = ss.DigitClassifier(seed=0)
    np.testing.assert_array_equal(
        again.predict_proba(clf.test_images[:20]), clf.predict_proba(clf.test_images[:20])
    )


def test_frechet_distance_known_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
    assert ss.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(5.0)
    # Equal covariances: only the means differ.
    assert ss.frechet_distance(x, x + shift) == pytest.approx(np.sum(shift**2), rel=1e-9)
    # y = a x: d = |mu - a mu|^2 + (1 - a)^2 tr C.
    a = 2.5
    mu, cov = x.mean(axis=0), np.cov(x, rowvar=False)
    expected = (1 - a) ** 2 * (np.sum(mu**2) + np.trace(cov))
    assert ss.frechet_distance(x, a * x) == pytest.approx(expected, rel=1e-8)
    with pytest.raises(ValueError, match="feature size"):
        ss.frechet_distance(x, x[:, :4])
    with pytest.raises(ValueError, match="n >= 2"):
        ss.frechet_distance(x[:1], x)


def test_test_digits_score_like_real_data_and_noise_does_not(clf):
    test = ss.digit_metrics(clf.test_images, classifier=clf)
    assert test.frechet == pytest.approx(0.0, abs=1e-8)  # the reference set itself
    assert test.num_samples == 297
    assert test.confidence == test.reference_confidence > 0.95
    np.testing.assert_allclose(test.class_histogram.sum(), 1.0)
    # Real digits not in the reference: near the floor (measured 3.05 against 2.18).
    train = ss.digit_metrics(clf.train_images[-297:], classifier=clf)
    assert 0.5 * train.frechet_floor < train.frechet < 2 * train.frechet_floor
    assert train.frechet_floor > 0
    # Negative control: uniform noise is far above it, and the classifier is unsure of it.
    noise = ss.digit_metrics(_noise(), classifier=clf)
    assert noise.frechet > 20 * noise.frechet_floor
    assert noise.confidence < noise.reference_confidence - 0.2


def test_class_histogram_total_variation(clf):
    test = ss.digit_metrics(clf.test_images, classifier=clf)
    # 297 images drawn from the data: only sampling noise (about 0.08 expected).
    assert test.histogram_tv < 0.15
    np.testing.assert_allclose(
        test.data_histogram, np.bincount(clf.train_labels, minlength=10) / 1500
    )
    threes = clf.test_images[clf.test_labels == 3]
    one_class = ss.digit_metrics(threes, classifier=clf)
    assert one_class.histogram_tv > 0.8
    assert np.argmax(one_class.class_histogram) == 3


def test_integer_images_are_taken_at_bin_centres(clf):
    digits = ss.load_digits()
    as_int = ss.digit_metrics(digits.test[:50], classifier=clf)
    as_float = ss.digit_metrics(
        2 * (digits.test[:50].astype(float) + 0.5) / 256 - 1, classifier=clf
    )
    np.testing.assert_array_equal(as_int.class_histogram, as_float.class_histogram)
    assert as_int.frechet == as_float.frechet


def test_bad_input(clf):
    with pytest.raises(ValueError, match="samples must hold 8x8 images"):
        ss.digit_metrics(np.zeros((4, 63)), classifier=clf)
    with pytest.raises(ValueError, match="at least 2 images"):
        ss.digit_metrics(np.zeros((1, 64)), classifier=clf)
    with pytest.raises(ValueError, match="samples has non-finite"):
        ss.digit_metrics(np.full((4, 64), np.nan), classifier=clf)
    with pytest.raises(TypeError, match="classifier must be a scoresde.DigitClassifier"):
        ss.digit_metrics(np.zeros((4, 64)), classifier="mlp")
    with pytest.raises(ValueError, match="seed must be"):
        ss.DigitClassifier(seed=-1)


def test_sample_command_reports_digit_metrics(tmp_path, capsys):
    """What `scoresde sample` adds for a digits checkpoint (real test digits stand in for the
    samples, so the figures must be those of real data)."""
    import json

    from scoresde._cli import sample as sample_cmd

    x = 2 * (ss.load_digits().test[:100].astype(np.float32) + 0.5) / 256 - 1
    sample_cmd.report_digit_metrics(x, tmp_path)
    assert "digit metrics: Frechet" in capsys.readouterr().out
    report = json.loads((tmp_path / "digit_metrics.json").read_text())
    assert report["num_samples"] == 100
    assert report["frechet"] < 2 * report["frechet_floor"]
    assert report["confidence"] > 0.9
    # Negative control: noise images.
    sample_cmd.report_digit_metrics(_noise(100), tmp_path)
    report = json.loads((tmp_path / "digit_metrics.json").read_text())
    assert report["frechet"] > 20 * report["frechet_floor"]


# --- 28x28 MNIST ------------------------------------------------------------------------------


def test_frechet_bootstrap_interval_covers_the_expected_distance_at_its_size():
    """The 95 % interval of the Frechet distance (n = 100 Gaussian features in 16-D against a
    fixed reference set): over 40 independent sample sets, the intervals cover the mean distance
    at n = 100 (over 400 more sets) at about the nominal rate. Negative controls: the plain
    percentile interval (not moved onto the estimate: resampling repeats rows, which inflates the
    distance) and the interval of 16 copies of each set (4x too narrow) do not."""
    from scoresde._metrics.digits import _bootstrap, _bootstrap_frechet

    rng = np.random.default_rng(0)
    dim, n = 16, 100
    reference = rng.normal(size=(2000, dim))

    def draw():
        return 1.2 * rng.normal(size=(n, dim)) + 0.3

    spread = [ss.frechet_distance(draw(), reference) for _ in range(400)]
    target = np.mean(spread)
    sets = [draw() for _ in range(40)]

    def coverage(interval):
        return np.mean(
            [interval(x, i)[0] <= target <= interval(x, i)[1] for i, x in enumerate(sets)]
        )

    def plain(x, seed):  # the resamples' own percentiles
        frechets = [ss.frechet_distance(x[r], reference)
                    for r in np.random.default_rng(seed).integers(0, n, (200, n))]  # fmt: skip
        return tuple(np.quantile(frechets, [0.025, 0.975]))

    ours = coverage(lambda x, i: _bootstrap_frechet(x, reference, seed=i, num_resamples=200))
    # nominal 0.95; over 40 sets the binomial sd is 0.034, so 0.8 is 4 sd below
    assert ours >= 0.8, ours
    # and not by being wide: as wide as the distance's own 95 % range over sets (measured 1.2x)
    widths = [np.diff(_bootstrap_frechet(x, reference, seed=i, num_resamples=200))[0]
              for i, x in enumerate(sets[:10])]  # fmt: skip
    assert 0.8 < np.mean(widths) / np.diff(np.quantile(spread, [0.025, 0.975]))[0] < 1.6
    assert coverage(plain) <= 0.7
    tiled = coverage(lambda x, i: _bootstrap_frechet(np.tile(x, (16, 1)), reference, seed=i,
                                                     num_resamples=200))  # fmt: skip
    assert tiled <= 0.7
    with pytest.raises(ValueError, match="num_resamples"):
        _bootstrap(len, 5, seed=0, num_resamples=1)


def _small_mnist(num_train=300, num_test=200):
    m = ss.load_mnist()
    return ss.ImageData(
        m.train[:num_train], m.test[:num_test], m.train_labels[:num_train], m.test_labels[:num_test]
    )


def test_classifier_takes_its_image_size_from_the_data():
    small = _small_mnist()
    with warnings.catch_warnings():  # 300 images: the loss still falls after 300 epochs
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = ss.DigitClassifier(small, hidden=16)
    assert clf.image_size == (28, 28)
    assert clf.train_images.shape == (300, 784) and clf.test_images.shape == (200, 784)
    assert clf.features(small.test[:5]).shape == (5, 16)
    # Well above chance even this small (300 images, 16 units; measured 0.80); the shuffled
    # labels are not.
    assert clf.test_accuracy > 0.6
    shuffled = np.random.default_rng(0).permutation(clf.test_labels)
    assert clf.accuracy(clf.test_images, shuffled) < 0.3
    m = ss.digit_metrics(small.test, classifier=clf)
    assert m.num_samples == 200 and m.frechet == pytest.approx(0.0, abs=1e-6)
    assert m.frechet_floor == clf.frechet_floor(200) > 0
    with pytest.raises(ValueError, match="samples must hold 28x28 images"):
        ss.digit_metrics(np.zeros((4, 1, 8, 8)), classifier=clf)
    with pytest.raises(ValueError, match="images must hold 28x28"):
        clf.predict(np.zeros((4, 64)))


def test_classifier_refuses_bad_data():
    small = _small_mnist(50, 20)
    with pytest.raises(TypeError, match="data"):  # a tuple is not an ImageData
        ss.DigitClassifier((small.train, small.test))
    rgb = small._replace(train=np.repeat(small.train, 3, axis=1))
    with pytest.raises(ValueError, match="one-channel images"):
        ss.DigitClassifier(rgb)
    with pytest.raises(ValueError, match="train_labels must hold one class"):
        ss.DigitClassifier(small._replace(train_labels=small.train_labels + 10))
    with pytest.raises(ValueError, match="shift must be"):
        ss.DigitClassifier(small, shift=-1)
    with pytest.raises(ValueError, match="shift must be below the image size"):
        ss.DigitClassifier(small, shift=28)


def test_shifted_copies_move_each_pixel_and_clear_the_wrapped_edge():
    from scoresde._metrics.digits import _shifted

    x = -np.ones((1, 4, 5))
    x[0, 0, 0], x[0, 3, 4] = 1.0, 0.5  # top-left and bottom-right corners
    out = _shifted(x.reshape(1, -1), (4, 5), 1).reshape(-1, 4, 5)
    assert out.shape == (5, 4, 5)
    np.testing.assert_array_equal(out[0], x[0])
    # Down, up, right, left by one pixel: the corner that would wrap around is cleared.
    for img, (r, c), value in (
        (out[1], (1, 0), 1.0),
        (out[2], (2, 4), 0.5),
        (out[3], (0, 1), 1.0),
        (out[4], (3, 3), 0.5),
    ):
        expected = -np.ones((4, 5))
        expected[r, c] = value
        np.testing.assert_array_equal(img, expected)


@pytest.fixture(scope="session")
def mnist_clf():
    return ss.DigitClassifier.mnist(seed=0)


@pytest.mark.slow
def test_mnist_classifier_is_accurate(mnist_clf):
    mnist = ss.load_mnist()
    assert mnist_clf.test_accuracy >= 0.95  # measured 0.965
    assert mnist_clf.accuracy(mnist.test, mnist.test_labels) == mnist_clf.test_accuracy
    shuffled = np.random.default_rng(0).permutation(mnist.test_labels)
    assert mnist_clf.accuracy(mnist.test, shuffled) < 0.3


@pytest.mark.slow
def test_mnist_frechet_separates_real_digits_from_noise(mnist_clf):
    test = ss.digit_metrics(mnist_clf.test_images, classifier=mnist_clf)
    assert test.frechet <= 1e-6 * test.frechet_floor  # the reference set itself
    # 1000 training digits (not the floor's subset): near the train-vs-test floor (measured
    # 15.3 against 11.8).
    train = ss.digit_metrics(mnist_clf.train_images[-1000:], classifier=mnist_clf)
    assert 0.5 * train.frechet_floor < train.frechet < 2 * train.frechet_floor
    # Negative control: uniform noise images, far above it (measured 1232).
    noise = ss.digit_metrics(
        np.random.default_rng(0).uniform(-1, 1, (1000, 1, 28, 28)), classifier=mnist_clf
    )
    assert noise.frechet > 20 * noise.frechet_floor
    assert noise.confidence < noise.reference_confidence - 0.2
