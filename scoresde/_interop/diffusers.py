r"""[`from_diffusers`][scoresde.interop.from_diffusers]: a diffusers `UNet2DModel` folder and its
DDPM/DDIM scheduler config as a [`scoresde.Trained`][], read without torch."""

import dataclasses
import os
import pathlib

import jax.numpy as jnp

from .._training.model_config import AbstractModelConfig
from .._training.trained import Trained
from .config import UNet2DConfig, parse_unet_config, read_json
from .network import Network
from .scheduler import DiffusersScheduler, parse_scheduler_config
from .time_input import DDPMIndex
from .unet2d import StateDict, UNet2D

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
SCHEDULER_FILE = "scheduler_config.json"


@dataclasses.dataclass(frozen=True)
class DiffusersConfig(AbstractModelConfig):
    """Where a [`scoresde.Trained`][] read by [`scoresde.interop.from_diffusers`][] came from:
    the `UNet2DModel` folder `path`, its parsed `unet` config and `scheduler`
    ([`scoresde.interop.DiffusersScheduler`][]). Unconditional; data in diffusers' convention
    (images scaled to $[-1, 1]$), so `levels` is None."""

    path: str
    unet: UNet2DConfig
    scheduler: DiffusersScheduler

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.unet.data_shape

    @property
    def data_levels(self) -> int | None:
        return None

    def score(self, model, label=None, guidance=1.0):
        if label is not None or guidance != 1.0:
            raise ValueError(
                f"label={label!r}, guidance={guidance!r}: a diffusers UNet2DModel read by "
                "from_diffusers is unconditional."
            )
        return model


def _locate(path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """(the UNet folder, the scheduler config file) for a UNet folder or a pipeline folder."""
    if not path.exists():
        raise FileNotFoundError(f"No such folder: {os.fspath(path)!r}.")
    if not path.is_dir():
        raise NotADirectoryError(f"path must be a diffusers model folder; got the file {path}.")
    unet = path
    if not (path / "config.json").is_file() and (path / "unet" / "config.json").is_file():
        unet = path / "unet"
    candidates = (
        unet / SCHEDULER_FILE,
        unet / "scheduler" / SCHEDULER_FILE,
        unet.parent / "scheduler" / SCHEDULER_FILE,
    )
    for scheduler in candidates:
        if scheduler.is_file():
            return unet, scheduler
    raise FileNotFoundError(
        f"No scheduler config for {os.fspath(path)!r}: looked for "
        f"{[os.fspath(c) for c in candidates]}."
    )


def from_diffusers(path: str | os.PathLike, *, dtype=jnp.float32) -> Trained:
    r"""A diffusers `UNet2DModel` and its DDPM/DDIM scheduler as a [`scoresde.Trained`][].

    `path` is a `UNet2DModel` folder (`config.json` and `diffusion_pytorch_model.safetensors`)
    with `scheduler_config.json` beside it or in `scheduler/` (a `google/ddpm-*` download), or
    a pipeline folder holding `unet/` and `scheduler/` (what `DDPMPipeline.save_pretrained`
    writes). The weights are read by `safetensors.numpy` (`pip install safetensors`); no torch.

    The result's `model` is `P(Network(UNet2D, DDPMIndex(), scaled_input=False), sde)`: the
    [`scoresde.DDPMSDE`][] of the scheduler's betas, the parametrisation `P` of its
    `prediction_type` ([`scoresde.EpsPrediction`][] for `epsilon`, [`scoresde.VPrediction`][]
    for `v_prediction`, [`scoresde.X0Prediction`][] for `sample`), and the U-Net called at
    diffusers' timestep $n = N t - 1$ on the sample $x_t$ itself, as diffusers calls it.
    `config` is a [`scoresde.interop.DiffusersConfig`][]; `data_shape` is
    `(in_channels, *sample_size)`; the data convention is diffusers' ($[-1, 1]$). On CPU the
    U-Net agrees with diffusers' to about $10^{-6}$ relative; on a GPU whose default float32
    matmul and convolution precision is reduced (TF32), set
    `jax.config.update("jax_default_matmul_precision", "highest")` for that agreement.

    **Arguments:**

    - `path`: the folder.
    - `dtype`: the parameters' dtype (default float32; the file's are cast).

    **Raises:** `FileNotFoundError` naming what is missing; `ValueError` naming an unsupported
    config key or value (of `config.json` or the scheduler's), a weight missing or of the wrong
    shape, or a weight the config does not use; `ImportError` without `safetensors`.
    """
    unet_dir, scheduler_file = _locate(pathlib.Path(path))
    config_file = unet_dir / "config.json"
    cfg = parse_unet_config(read_json(config_file), os.fspath(config_file))
    scheduler = parse_scheduler_config(read_json(scheduler_file), os.fspath(scheduler_file))
    weights_file = unet_dir / WEIGHTS_FILE
    if not weights_file.is_file():
        others = sorted(p.name for p in unet_dir.glob("diffusion_pytorch_model*"))
        raise FileNotFoundError(
            f"No {WEIGHTS_FILE} in {os.fspath(unet_dir)!r} (found {others}); only safetensors "
            "weights are read (save with safe_serialization=True)."
        )
    try:
        from safetensors.numpy import load_file
    except ImportError as e:
        raise ImportError(
            "from_diffusers reads weights with safetensors: pip install safetensors."
        ) from e
    weights = StateDict(load_file(os.fspath(weights_file)), dtype, os.fspath(weights_file))
    unet = UNet2D.load(cfg, weights)
    sde = scheduler.sde()
    model = scheduler.parametrisation(Network(unet, DDPMIndex(), scaled_input=False), sde)
    return Trained(model, DiffusersConfig(os.fspath(path), cfg, scheduler))
