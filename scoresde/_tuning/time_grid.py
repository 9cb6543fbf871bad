r"""[`scoresde.TimeGrid`][]: a tuned grid as a value: its times, what it was tuned for, and how.

A `TimeGrid` is a grid of given times ([`scoresde.AbstractExplicitGrid`][]): every fixed-step
sampler accepts it as `grid=` and takes `steps` and `t_eps` from it. It also carries the solver
and step count it was tuned for and its provenance (the objective, the pilot, the errors measured
on the pilot and on held-out latents, the cost), and is saved to and loaded from JSON exactly
(times written as float64 decimal strings that round-trip).
"""

import json
import math
import os
import pathlib
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import is_concrete
from .._grid import AbstractExplicitGrid

FORMAT = "scoresde.TimeGrid"
VERSION = 1


def _frozen(value):
    """A hashable copy of a JSON-like value (dicts become sorted tuples of pairs)."""
    if isinstance(value, dict):
        return ("__dict__", tuple(sorted((str(k), _frozen(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"provenance holds JSON-like values only; got {type(value).__name__}.")


def _thawed(value):
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "__dict__":
        return {k: _thawed(v) for k, v in value[1]}
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


def _json_safe(value):
    """Non-finite floats as strings (JSON has no inf or NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


class TimeGrid(AbstractExplicitGrid):
    r"""Times $T = t_0 > \dots > t_N = t_\varepsilon$ tuned for one model, solver and $N$.

    **Fields:**

    - `times`: the $N + 1$ times (any sampler given `grid=` this grid takes $N$ steps and ends
      at $t_\varepsilon$).
    - `solver`: the name of the solver it was tuned for (`""` if none).
    - `provenance`: how it was found (a read-only mapping, see `info`).
    - `network_times`: `None`, or the $N + 1$ times $t'_i$ at which the network is asked when
      the solver is at $t_i$ (decoupled times, tuned by `tune_grid(..., network_times=True)`;
      every sampler given this grid applies them, see `scoresde._network_times`).
    - `network_scales`: `None`, or the $N + 1$ positive scales $c_i$ of the network's output
      at $t_i$ (tuned by `tune_grid(..., network_scales=True)`; applied likewise).

    `to_json(path=None)` writes (and returns) the JSON text; `TimeGrid.from_json(path_or_text)`
    reads it back, times exact.
    """

    times: Float[Array, " steps_plus_one"] = eqx.field(converter=jnp.asarray)
    solver: str = eqx.field(static=True, default="")
    provenance: Any = eqx.field(static=True, default=(), converter=_frozen)
    network_times: Float[Array, " steps_plus_one"] | None = eqx.field(
        default=None, converter=lambda v: None if v is None else jnp.asarray(v)
    )
    network_scales: Float[Array, " steps_plus_one"] | None = eqx.field(
        default=None, converter=lambda v: None if v is None else jnp.asarray(v)
    )

    def __check_init__(self):
        for name in ("network_times", "network_scales"):
            value = getattr(self, name)
            if value is not None and value.shape != self.times.shape:
                raise ValueError(
                    f"TimeGrid: {name} must have the shape of times {self.times.shape}; got "
                    f"{value.shape}."
                )
        scales = self.network_scales
        if scales is not None and is_concrete(scales) and not bool(jnp.all(scales > 0)):
            raise ValueError("TimeGrid: network_scales must be positive.")

    @property
    def steps(self) -> int:
        """The number of steps, `len(times) - 1`."""
        return self.num_steps

    @property
    def info(self) -> dict:
        """The provenance as a dict (a copy)."""
        return _thawed(self.provenance) if self.provenance else {}

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The grid as JSON text; also written to `path` when given."""
        host = np.asarray(self.times, np.float64)
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "solver": self.solver,
            "steps": self.num_steps,
            "times": [repr(float(t)) for t in host],
            **{
                name: [repr(float(v)) for v in np.asarray(value, np.float64)]
                for name, value in (
                    ("network_times", self.network_times),
                    ("network_scales", self.network_scales),
                )
                if value is not None
            },
            "provenance": _json_safe(self.info),
        }
        text = json.dumps(payload, indent=1)
        if path is not None:
            pathlib.Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> "TimeGrid":
        """The grid saved by `to_json`: from a path, or from the JSON text itself."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            path = pathlib.Path(source)
            if not path.is_file():
                raise FileNotFoundError(f"TimeGrid.from_json: no file {str(path)!r}.")
            text = path.read_text()
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"TimeGrid.from_json: not JSON ({err}).") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(
                f"TimeGrid.from_json: not a saved TimeGrid (format {FORMAT!r} expected)."
            )
        if payload.get("version") != VERSION:
            raise ValueError(
                f"TimeGrid.from_json: version {payload.get('version')!r} is not {VERSION}."
            )
        times = np.asarray([float(t) for t in payload["times"]], np.float64)
        if times.ndim != 1 or times.size < 2 or not np.all(np.isfinite(times)):
            raise ValueError("TimeGrid.from_json: times must be >= 2 finite numbers.")
        if not np.all(np.diff(times) < 0):
            raise ValueError("TimeGrid.from_json: times must be strictly decreasing.")
        if payload.get("steps", times.size - 1) != times.size - 1:
            raise ValueError("TimeGrid.from_json: 'steps' disagrees with the number of times.")
        per_time = {}
        for name in ("network_times", "network_scales"):
            values = payload.get(name)
            if values is not None:
                values = np.asarray([float(v) for v in values], np.float64)
                if values.shape != times.shape or not np.all(np.isfinite(values)):
                    raise ValueError(
                        f"TimeGrid.from_json: {name} must be as many finite numbers as times."
                    )
                values = jnp.asarray(values)
            per_time[name] = values
        return cls(jnp.asarray(times), payload.get("solver", ""), payload.get("provenance") or {},
                   **per_time)  # fmt: skip
