r"""Training data from a file: `DataFile`, the data source a `TrainConfig` records for
`scoresde train --data FILE.npy|FILE.npz`, and the checks that read it.

A file holds either images `(n, c, h, w)` or points `(n, d)`:

- uint8 images are 8-bit values $k$, trained on at 256 levels ($y = 2(k + u)/256 - 1$, uniform
  dequantisation) and evaluated in bits/dim;
- float images need their range `[lo, hi]` (`--data-range LO HI`) and are mapped affinely onto
  $[-1, 1]$, $y = 2(x - lo)/(hi - lo) - 1$ (continuous: no levels);
- points are used as they are (the SDEs assume data of order one: standardise yours).

An `.npz` gives its array `x` (or its only array) and, optionally, integer labels `y` (for
`--conditional`). Images need `h` and `w` divisible by 4 (the U-Net halves them twice).

The split is deterministic: a permutation from the config's `seed` puts
`num_test = max(1, round(test_fraction * n))` rows in the test split. The file's path and
SHA-256 are recorded, so a command reading it again (`nll`, `inpaint`) warns when it changed.
"""

import dataclasses
import hashlib
import pathlib
import warnings

import numpy as np

TEST_FRACTION = 0.1
DIVISOR = 4  # image height and width: the file U-Net's two stride-2 downsamplings
IMAGES, POINTS = "images", "points"


class DataFileError(ValueError):
    """A training-data file that cannot be used (its message names the file and the problem)."""


class DataFileChangedWarning(UserWarning):
    """The data file's content differs from the one a checkpoint was trained on."""


@dataclasses.dataclass(frozen=True)
class DataFile:
    """The data source of a run on a file, as recorded in its checkpoint's sidecar.

    - `path`: the file (absolute); `sha256`: its content's hash when training started;
    - `shape`: one sample's shape, `(c, h, w)` or `(d,)`; `dtype`: `"uint8"` or `"float"`;
    - `data_range`: `(lo, hi)` of float images, else None;
    - `num`: the rows in the file; `num_test`: those in the test split (the rest train);
    - `num_classes`: `max(y) + 1` when the file has labels `y`, else None."""

    path: str
    sha256: str
    shape: tuple[int, ...]
    dtype: str
    num: int
    num_test: int
    data_range: tuple[float, float] | None = None
    num_classes: int | None = None

    @classmethod
    def from_json(cls, fields: dict) -> "DataFile":
        """The `DataFile` of a sidecar's JSON (`dataclasses.asdict` of one): lists back to
        tuples (a config is hashable)."""
        shape, low_high = fields.get("shape", ()), fields.get("data_range")
        return cls(**{**fields, "shape": tuple(int(s) for s in shape),
                      "data_range": None if low_high is None else tuple(map(float, low_high))})  # fmt: skip

    def __post_init__(self):
        if self.dtype not in ("uint8", "float"):
            raise ValueError(f"DataFile dtype must be 'uint8' or 'float'; got {self.dtype!r}.")
        if not 1 <= self.num_test < self.num:
            raise ValueError(
                f"DataFile needs 1 <= num_test < num; got {self.num_test}, {self.num}."
            )

    @property
    def kind(self) -> str:
        """`"images"` for `(c, h, w)` samples, `"points"` for `(d,)`."""
        return IMAGES if len(self.shape) == 3 else POINTS

    @property
    def levels(self) -> int | None:
        """256 for uint8 images (8-bit dequantisation), None for continuous data."""
        return 256 if self.dtype == "uint8" else None

    def log_scale(self) -> float:
        r"""$\ln|\det \partial y/\partial x|$ of the map onto the model's space per sample:
        $D \ln(2/(hi - lo))$ for float images, 0 for points."""
        if self.data_range is None:
            return 0.0
        lo, hi = self.data_range
        return float(np.prod(self.shape)) * float(np.log(2.0 / (hi - lo)))


def file_sha256(path) -> str:
    """The SHA-256 of the file at `path` (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fail(path, problem: str):
    raise DataFileError(f"data file {path}: {problem}")


def _read_arrays(path: pathlib.Path):
    """`(x, y or None)` from `path`, an .npy or an .npz (its `x`, or its only array; `y`)."""
    if not path.exists():
        _fail(path, "no such file")
    if path.is_dir():
        _fail(path, "is a folder; pass an .npy or .npz file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".npz"):
        _fail(path, f"unknown suffix {path.suffix!r}; pass an .npy or .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        _fail(path, f"cannot be read as {suffix} ({e})")
    if suffix == ".npy":
        return loaded, None
    with loaded:
        names = list(loaded.files)
        if "x" in names:
            x = loaded["x"]
        elif len(names) == 1:
            x = loaded[names[0]]
        else:
            _fail(path, f"holds the arrays {names}; name the data 'x' (and labels 'y')")
        y = loaded["y"] if "y" in names and ("x" in names) else None
    return x, y


def _check_labels(path, y, num: int) -> int:
    """`max(y) + 1` after checking `y` holds `num` non-negative integers."""
    y = np.asarray(y)
    if y.shape != (num,):
        _fail(path, f"labels y have shape {y.shape}; expected ({num},), one per row of x")
    if not np.issubdtype(y.dtype, np.integer):
        _fail(path, f"labels y must be integers; got dtype {y.dtype}")
    if y.min() < 0:
        _fail(path, f"labels y must be >= 0; got {y.min()}")
    return int(y.max()) + 1


def check_array(path, x, data_range=None):
    """Check the data array `x` read from `path` (`data_range`: `(lo, hi)` for float images):
    ndim 2 (points) or 4 (images), a numeric dtype, finite, at least 2 rows, uint8 images or
    float images inside `data_range`, image height and width divisible by 4.

    **Raises:** `DataFileError` naming `path` and the first problem."""
    x = np.asarray(x)
    if x.ndim not in (2, 4):
        _fail(path, f"the array has shape {x.shape} (ndim {x.ndim}); expected images "
              "(n, channels, height, width) or points (n, d)")  # fmt: skip
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        _fail(path, f"the array has dtype {x.dtype}; expected uint8 or float")
    if x.shape[0] < 2:
        _fail(path, f"{x.shape[0]} sample(s); at least 2 are needed (one to train, one to test)")
    if min(x.shape[1:]) < 1:
        _fail(path, f"the array has shape {x.shape}: an empty sample")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            _fail(path, f"{int(bad.sum())} NaN or inf value(s), the first in row {row}")
    if x.ndim == 2:
        if data_range is not None:
            _fail(path, "--data-range is for float images; points (n, d) are used as they are")
        return
    c, h, w = x.shape[1:]
    if h % DIVISOR or w % DIVISOR:
        _fail(path, f"images of height {h} and width {w}; both must be divisible by {DIVISOR} "
              "(the U-Net halves them twice): crop or pad them")  # fmt: skip
    if x.dtype == np.uint8:
        if data_range is not None:
            _fail(path, "uint8 images are 8-bit values 0..255; drop --data-range (it is for "
                  "float images)")  # fmt: skip
        return
    if np.issubdtype(x.dtype, np.integer):
        _fail(path, f"integer images of dtype {x.dtype}; pass uint8 (0..255) or floats with "
              "--data-range LO HI")  # fmt: skip
    if data_range is None:
        _fail(path, f"float images (dtype {x.dtype}) need their range: pass --data-range LO HI "
              "(e.g. 0 1 or -1 1)")  # fmt: skip
    lo, hi = data_range
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        _fail(path, f"--data-range needs finite LO < HI; got {lo:g} {hi:g}")
    if x.min() < lo or x.max() > hi:
        _fail(path, f"values in [{x.min():g}, {x.max():g}] lie outside --data-range "
              f"[{lo:g}, {hi:g}]")  # fmt: skip


def read_data_file(path, *, data_range=None, test_fraction: float = TEST_FRACTION) -> DataFile:
    """Read and check the training-data file `path` (see the module docstring); returns the
    `DataFile` a `TrainConfig(dataset="file", data=...)` records.

    **Raises:** `DataFileError` (a `ValueError`) naming `path` and the problem."""
    path = pathlib.Path(path).expanduser().resolve()
    x, y = _read_arrays(path)
    if data_range is not None:
        data_range = (float(data_range[0]), float(data_range[1]))
    check_array(path, x, data_range)
    num = int(x.shape[0])
    num_classes = None if y is None else _check_labels(path, y, num)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1); got {test_fraction}.")
    num_test = min(num - 1, max(1, round(test_fraction * num)))
    return DataFile(
        path=str(path),
        sha256=file_sha256(path),
        shape=tuple(int(s) for s in x.shape[1:]),
        dtype="uint8" if x.dtype == np.uint8 else "float",
        num=num,
        num_test=num_test,
        data_range=data_range if x.ndim == 4 and x.dtype != np.uint8 else None,
        num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class FileSplit:
    """The rows of a data file in the model's convention: `train`, `test` (uint8 values for
    8-bit images, float32 in [-1, 1] for float images, float32 points) and their labels (or
    None)."""

    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None
    test_labels: np.ndarray | None


def split_rows(num: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`(train, test)` row indices: a permutation of `range(num)` from `seed`, its first
    `num_test` rows the test split."""
    perm = np.random.default_rng(seed).permutation(num)
    return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def load_split(source: DataFile, seed: int) -> FileSplit:
    """The train and test rows of `source`'s file (split by `seed`).

    Warns (`DataFileChangedWarning`) when the file's SHA-256 differs from the recorded one.

    **Raises:** `DataFileError` naming the file if it is gone, no longer valid, or no longer
    matches the recorded shape or row count."""
    path = pathlib.Path(source.path)
    x, y = _read_arrays(path)
    now = file_sha256(path)
    if now != source.sha256:
        warnings.warn(
            f"data file {path} changed since training (sha256 {source.sha256[:12]}... recorded, "
            f"{now[:12]}... now): its rows and split may differ from those trained on",
            DataFileChangedWarning,
            stacklevel=2,
        )
    check_array(path, x, source.data_range)
    if tuple(x.shape[1:]) != source.shape or x.shape[0] != source.num:
        _fail(path, f"now holds {x.shape}; the checkpoint was trained on {source.num} samples "
              f"of shape {source.shape}")  # fmt: skip
    if source.data_range is not None:
        lo, hi = source.data_range
        x = (2 * (np.asarray(x, np.float64) - lo) / (hi - lo) - 1).astype(np.float32)
    elif x.dtype != np.uint8:
        x = np.asarray(x, np.float32)
    train, test = split_rows(source.num, source.num_test, seed)
    labels = None if y is None or source.num_classes is None else np.asarray(y, np.int64)
    return FileSplit(
        x[train],
        x[test],
        None if labels is None else labels[train],
        None if labels is None else labels[test],
    )
