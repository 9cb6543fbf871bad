"""What several `scoresde` commands share: usage errors and loading a `scoresde train` checkpoint."""

import pathlib


class UsageError(Exception):
    """A bad flag or path: `scoresde.cli.main` prints it on one line and exits with status 2."""


def load_model(path: pathlib.Path):
    """The trained model of a `scoresde train` checkpoint, and its training config."""

    from .._checkpoint import load, read_sidecar
    from . import train

    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    config = train.TrainConfig(**read_sidecar(path)["hyperparameters"])
    return load(path, train.skeleton_from_config(config)), config


def data_shape(config):
    """Shape of one sample of the data set a checkpoint was trained on."""
    return (1, 8, 8) if config.dataset == "digits" else (2,)
