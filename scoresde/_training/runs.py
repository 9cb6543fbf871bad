"""A training run's folder and its interruption: which files a run writes, whether a folder holds
one, clearing it, and `StopOnSignal`, which turns SIGINT/SIGTERM into a request to stop that the
training loop honours between compiled calls (so the state it saves is a whole step's).
"""

import contextlib
import json
import os
import pathlib
import signal
import threading

import numpy as np

CHECKPOINT_FILE = "checkpoint.eqx"  # the EMA model, written at the end
STATE_FILE = "state.eqx"  # the whole TrainState, written every `checkpoint_every` steps
LOSSES_FILE = "losses.json"
# Everything a `scoresde train` run writes into its folder (each checkpoint with its sidecar).
RUN_FILES = (
    CHECKPOINT_FILE,
    CHECKPOINT_FILE + ".json",
    STATE_FILE,
    STATE_FILE + ".json",
    LOSSES_FILE,
    "losses.png",
    "samples.npy",
    "samples.png",
    "digit_metrics.json",
)
DEFAULT_CHECKPOINT_EVERY = 500


def existing_run(out_dir) -> list[pathlib.Path]:
    """The files of an earlier run in `out_dir` (empty if there is none)."""
    out_dir = pathlib.Path(out_dir)
    return [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]


def clear_run(out_dir) -> list[pathlib.Path]:
    """Delete the files of an earlier run in `out_dir` (and any half-written `.tmp` of them);
    nothing else in the folder is touched. Returns what was deleted."""
    out_dir = pathlib.Path(out_dir)
    gone = []
    for name in RUN_FILES:
        for path in (out_dir / name, out_dir / (name + ".tmp")):
            if path.exists():
                path.unlink()
                gone.append(path)
    return gone


def write_losses(path, losses) -> None:
    """`losses` as a JSON list, written to a temporary file and renamed (atomic)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps([float(v) for v in np.asarray(losses)]))
    os.replace(tmp, path)


def read_losses(path, num: int) -> np.ndarray:
    """The first `num` losses of `path`, NaN for any the file lacks."""
    path = pathlib.Path(path)
    values = np.asarray(json.loads(path.read_text()) if path.exists() else [], np.float64)
    out = np.full(num, np.nan)
    out[: min(num, values.size)] = values[:num]
    return out


class StopOnSignal:
    """A `stop()` for [`scoresde.fit`][]: while entered, SIGINT and SIGTERM set `signum` (and
    `stop()` returns True) instead of raising, so training ends after the current compiled call
    with a whole state to save. A second SIGINT raises `KeyboardInterrupt` at once. Outside the
    main thread (where Python cannot install handlers) it does nothing."""

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(s, handler)
        self._previous.clear()
