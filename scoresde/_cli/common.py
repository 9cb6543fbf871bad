"""What several `scoresde` commands share: usage errors, output folders, help text, messages,
the device split and library warnings as notes."""

import argparse
import contextlib
import pathlib
import sys
import warnings

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Re-exported for the scripts under benchmarks/ and examples/ (the definitions are the recipe
# library's: `scoresde._training.recipes`).
from .._training.checkpoint import read_sidecar
from .._training.recipes import (
    TrainConfig,
    data_shape as data_shape,
    load_model as load_model,
)

OUT_ROOT = pathlib.Path("scoresde-out")


class UsageError(Exception):
    """A bad flag or path: `scoresde.cli.main` prints it on one line and exits with status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` with every flag's default; flags without one (`None`, off switches) show none."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action) or ""


def default_out(command: str) -> pathlib.Path:
    """The output folder of `command` when `--out` is not given: `./scoresde-out/<command>`."""
    return OUT_ROOT / command


def add_out(parser, command: str):
    """`--out`, the same for every command."""
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=default_out(command),
        help="output folder (created if missing)",
    )


def check_out(path) -> pathlib.Path:
    """Raise a `UsageError` if the output folder `path` names an existing file."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {path} is an existing file; pass a folder")
    return path


def prepare_out(path) -> pathlib.Path:
    """Create the output folder `path`; run before any computation so a bad path fails at once."""
    path = check_out(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {path}: cannot create this folder ({e.strerror or e})") from None
    return path


def read_run_config(path) -> TrainConfig:
    """The `TrainConfig` a checkpoint of `scoresde train` was written with (its sidecar)."""
    try:
        return TrainConfig.from_hyperparameters(read_sidecar(path)["hyperparameters"])
    except TypeError as e:  # hyper-parameters that are not a TrainConfig's
        raise UsageError(f"{path} was not written by scoresde train ({e})") from None


def add_no_progress(parser):
    """`--no-progress`: no progress meter (and no compile notice)."""
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress meter or compile notice"
    )


def add_no_shard(parser):
    """`--no-shard`: one device (by default the batch is split over all local devices)."""
    parser.add_argument(
        "--no-shard",
        action="store_true",
        help="run on one device (default: split the batch over all local devices)",
    )


def local_sharding(command: str, no_shard: bool):
    """A `NamedSharding` splitting the batch over all local devices (`None` with `--no-shard`);
    says how many devices on stderr."""
    devices = jax.local_devices()
    if no_shard:
        note(command, f"1 device of {len(devices)} ({devices[0].platform}; --no-shard)")
        return None
    note(command, f"{len(devices)} device(s) ({devices[0].platform})")
    return NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))


def note(command: str, message: str):
    """A one-line message to the user on stderr (stdout keeps the results)."""
    print(f"scoresde {command}: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def library_warnings_as_notes(command: str):
    """Library warnings become one-line notes: a CLI user sees no raw Python warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in caught:
        text = str(w.message).splitlines()[0]
        if text not in seen:
            seen.add(text)
            note(command, f"note: {text}")
