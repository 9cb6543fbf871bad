"""What several `scoresde` commands share: usage errors, output folders, checkpoints, help text,
messages, and the switch for the library's progress meter."""

import argparse
import contextlib
import inspect
import pathlib
import sys
import warnings

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


def load_model(path: pathlib.Path):
    """The trained model of a `scoresde train` checkpoint, and its training config."""

    from .._training.checkpoint import load, read_sidecar
    from . import train as train

    path = pathlib.Path(path)
    if path.is_dir():
        hint = path / "checkpoint.eqx"
        raise UsageError(
            f"checkpoint {path} is a folder; pass the checkpoint file"
            + (f", e.g. {hint}" if hint.exists() else " (checkpoint.eqx, written by train)")
        )
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    config = train.TrainConfig(**read_sidecar(path)["hyperparameters"])
    return load(path, train.skeleton_from_config(config)), config


def data_shape(config):
    """Shape of one sample of the data set a checkpoint was trained on."""
    return (1, 8, 8) if config.dataset == "digits" else (2,)


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
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.local_devices()
    if no_shard:
        note(command, f"1 device of {len(devices)} ({devices[0].platform}; --no-shard)")
        return None
    note(command, f"{len(devices)} device(s) ({devices[0].platform})")
    return NamedSharding(Mesh(np.array(devices), ("batch",)), PartitionSpec("batch"))


def note(command: str, message: str):
    """A one-line message to the user on stderr (stdout keeps the results)."""
    print(f"scoresde {command}: {message}", file=sys.stderr, flush=True)


def progress_kwargs(fn, show: bool) -> dict:
    """PROGRESS HOOK, the single place where the CLI switches the library's progress meter on.

    `sample_ode`, `sample_sde`, `sample_pc`, `sample_edm`, `log_likelihood` and `bits_per_dim`
    are gaining a `progress: bool = False` keyword; once `fn` takes it, every long CLI call gets
    `progress=show` (`show` is `not --no-progress`). Until then this passes nothing."""
    try:
        accepts = "progress" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        accepts = False
    return {"progress": show} if accepts else {}


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
