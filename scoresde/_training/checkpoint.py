"""Checkpoints: `eqx.tree_serialise_leaves` plus a JSON sidecar validated before any leaf is read.

`save(path, tree, hyperparameters=...)` writes the leaves to `path` and a sidecar
`path + ".json"` holding the model hyper-parameters, the SDE, the parametrisation, the EMA flag,
library and JAX versions, one `(shape, dtype)` entry per array leaf, and the leaf file's size and
SHA-256. `load(path, like)` checks all of that against the file and the skeleton `like` first,
so a truncated file, a wrong skeleton or a mismatched sidecar raises a clear `ValueError` and
never returns a half-loaded model.
"""

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PyTree

from .._parametrisation import AbstractParametrisation
from .._sde import AbstractSDE
from .._version import __version__
from .fit import TrainState

FORMAT = "scoresde-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that does not match its sidecar, its skeleton or the expected settings."""


def sidecar_path(path) -> Path:
    """The JSON sidecar of the checkpoint at `path`: `path + ".json"`."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _is_leaf_array(x) -> bool:
    """An array leaf, or its abstract stand-in (a skeleton from `equinox.filter_eval_shape`)."""
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _leaf_manifest(tree):
    leaves = jax.tree.leaves(eqx.filter(tree, _is_leaf_array))
    return [{"shape": list(np.shape(x)), "dtype": str(np.dtype(x.dtype))} for x in leaves]


def _describe_sde(sde):
    if not isinstance(sde, AbstractSDE):
        return None
    out = {"class": type(sde).__name__}
    for field in dataclasses.fields(sde):
        value = getattr(sde, field.name)
        if callable(value) and not isinstance(value, eqx.Module):
            # A function (CustomVPSDE's B): its name, the same in every process (its repr
            # holds a memory address).
            name = getattr(value, "__qualname__", type(value).__qualname__)
            out[field.name] = f"{getattr(value, '__module__', '?')}.{name}"
            continue
        try:
            out[field.name] = float(value)
        except (TypeError, ValueError):
            out[field.name] = repr(value)
    return out


def _with_unit_clock(stored):
    """A sidecar's SDE from before `T=` on VPSDE / SubVPSDE / VESDE: those ran on T = 1."""
    if isinstance(stored, dict) and "T" not in stored:
        if stored.get("class") in ("VPSDE", "SubVPSDE", "VESDE"):
            return {**stored, "T": 1.0}
    return stored


def _describe_model(tree):
    model = tree.model if isinstance(tree, TrainState) else tree
    if isinstance(model, AbstractParametrisation):
        return type(model).__name__, type(model.net).__name__, _describe_sde(model.sde)
    return type(model).__name__, None, None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _versions():
    return {"scoresde": __version__, "jax": jax.__version__, "equinox": eqx.__version__}


def _jsonable(value, name):
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be JSON-serialisable: {e}") from None


def save(
    path: str | os.PathLike,
    tree: PyTree,
    *,
    hyperparameters: dict | None = None,
    ema: bool = False,
) -> Path:
    """Write `tree` (a model, an EMA model or a [`scoresde.TrainState`][]) and its sidecar.

    **Arguments:**

    - `path`: the leaf file; the sidecar is `path + ".json"`.
    - `hyperparameters`: a JSON-serialisable dict (what rebuilds the skeleton, e.g. the network
      sizes), stored verbatim.
    - `ema`: whether `tree` holds EMA weights (recorded, and checked by `load(..., ema=)`).

    **Returns:** the sidecar's path. Both files are written to temporary names and renamed, so
    an interrupted save leaves no half-written checkpoint under `path`.
    """
    path = Path(path)
    hyperparameters = _jsonable(dict(hyperparameters or {}), "hyperparameters")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    eqx.tree_serialise_leaves(tmp, tree)
    wrapper, net, sde = _describe_model(tree)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "hyperparameters": hyperparameters,
        "model": wrapper,
        "network": net,
        "sde": sde,
        "ema": bool(ema),
        "train_state": isinstance(tree, TrainState),
        "leaves": _leaf_manifest(tree),
        "num_bytes": tmp.stat().st_size,
        "sha256": _sha256(tmp),
    }
    side = sidecar_path(path)
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path)
    os.replace(side_tmp, side)
    return side


def check_checkpoint_path(path: str | os.PathLike) -> Path:
    """`path` as a `Path` if a checkpoint file is there.

    **Raises:** `FileNotFoundError` naming `path` when nothing is there; `IsADirectoryError`
    when `path` is a folder (naming the checkpoint inside, for a `scoresde train` folder)."""
    path = Path(path)
    if path.is_dir():
        inside = path / "checkpoint.eqx"
        hint = f"; pass the checkpoint file, e.g. {inside}" if inside.exists() else ""
        raise IsADirectoryError(f"checkpoint {path} is a folder, not a checkpoint file{hint}.")
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}: the file does not exist.")
    return path


def read_sidecar(path: str | os.PathLike) -> dict:
    """The sidecar of the checkpoint at `path`, checked for format (no leaf is read)."""
    side = sidecar_path(path)
    if not side.exists():
        raise CheckpointError(f"checkpoint sidecar {side} is missing.")
    try:
        meta = json.loads(side.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint sidecar {side} is not valid JSON: {e}.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{side} is not a scoresde checkpoint sidecar.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{side} has format_version {meta.get('format_version')}; this scoresde reads "
            f"version {FORMAT_VERSION}."
        )
    for field in ("leaves", "num_bytes", "sha256", "hyperparameters"):
        if field not in meta:
            raise CheckpointError(f"checkpoint sidecar {side} lacks the field {field!r}.")
    return meta


def load(
    path: str | os.PathLike,
    like: PyTree,
    *,
    hyperparameters: dict | None = None,
    ema: bool | None = None,
) -> PyTree:
    """Read the checkpoint at `path` into the skeleton `like` (same structure, shapes, dtypes).

    `like` may hold real arrays or abstract ones: `equinox.filter_eval_shape(make_model, ...)`
    gives a skeleton without initialising any weights (much faster for large networks).

    Before any leaf is read, checks: the sidecar's format; the leaf file's size and SHA-256
    (truncation, corruption); the skeleton's leaf shapes and dtypes, its parametrisation,
    network and SDE against the sidecar; and, when given, `hyperparameters` (each key must
    match the stored value) and `ema`.

    **Raises:** `FileNotFoundError` naming `path` if nothing is there (`IsADirectoryError`
    for a folder); `CheckpointError` (a `ValueError`) naming the first mismatch.
    """
    path = check_checkpoint_path(path)
    meta = read_sidecar(path)
    size = path.stat().st_size
    if size != meta["num_bytes"]:
        raise CheckpointError(
            f"checkpoint file {path} has {size} bytes; its sidecar records {meta['num_bytes']} "
            "(truncated or overwritten)."
        )
    if _sha256(path) != meta["sha256"]:
        raise CheckpointError(f"checkpoint file {path} does not match its sidecar's SHA-256.")
    if isinstance(like, TrainState) != bool(meta.get("train_state", False)):
        holds = "a TrainState" if meta.get("train_state") else "a model"
        raise CheckpointError(f"checkpoint {path} holds {holds}; the skeleton does not match.")
    wrapper, net, sde = _describe_model(like)
    for name, stored, given in (
        ("parametrisation", meta.get("model"), wrapper),
        ("network", meta.get("network"), net),
    ):
        if stored != given:
            raise CheckpointError(
                f"checkpoint {path} holds {name} {stored!r}; the skeleton has {given!r}."
            )
    if _with_unit_clock(meta.get("sde")) != sde:
        raise CheckpointError(
            f"checkpoint {path} was trained with SDE {meta.get('sde')}; the skeleton has {sde}."
        )
    manifest = _leaf_manifest(like)
    stored_leaves = meta["leaves"]
    if len(manifest) != len(stored_leaves):
        raise CheckpointError(
            f"checkpoint {path} has {len(stored_leaves)} array leaves; the skeleton has "
            f"{len(manifest)}."
        )
    for i, (a, b) in enumerate(zip(stored_leaves, manifest, strict=True)):
        if a != b:
            raise CheckpointError(
                f"checkpoint {path}: leaf {i} is {a['dtype']}{tuple(a['shape'])} but the "
                f"skeleton's is {b['dtype']}{tuple(b['shape'])}."
            )
    if hyperparameters is not None:
        stored_hp = meta["hyperparameters"]
        for k, v in _jsonable(dict(hyperparameters), "hyperparameters").items():
            if k not in stored_hp:
                raise CheckpointError(f"checkpoint {path} records no hyper-parameter {k!r}.")
            if stored_hp[k] != v:
                raise CheckpointError(
                    f"checkpoint {path} has hyper-parameter {k}={stored_hp[k]!r}; expected {v!r}."
                )
    if ema is not None and bool(meta.get("ema")) != bool(ema):
        raise CheckpointError(
            f"checkpoint {path} has ema={meta.get('ema')}; expected ema={bool(ema)}."
        )
    try:
        return eqx.tree_deserialise_leaves(path, like)
    except Exception as e:  # the checks above make this unlikely; never half-load
        raise CheckpointError(f"could not read checkpoint {path}: {e}") from e
