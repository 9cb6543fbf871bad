r"""Models from elsewhere: networks in other conventions, and diffusers checkpoints.

- **Adapters.** A function `fn(time_input, x)` from another code base becomes a `score(t, x)` by
  two values: its time input ([`Time`][scoresde.interop.Time], [`Sigma`][scoresde.interop.Sigma],
  [`LogSigma`][scoresde.interop.LogSigma], [`CNoise`][scoresde.interop.CNoise],
  [`DDPMIndex`][scoresde.interop.DDPMIndex]), held by [`Network`][scoresde.interop.Network], and
  its output, read by one of the parametrisations ([`scoresde.EpsPrediction`][],
  [`scoresde.X0Prediction`][], [`scoresde.VPrediction`][], [`scoresde.EDMPreconditioning`][],
  [`scoresde.DirectScore`][]):

    ```python
    score = ss.EpsPrediction(ss.interop.Network(fn, ss.interop.DDPMIndex()), ss.DDPMSDE())
    ```

- **diffusers.** [`from_diffusers`][scoresde.interop.from_diffusers] reads a `UNet2DModel` folder
  (weights through `safetensors.numpy`; no torch) and its scheduler config into a
  [`scoresde.Trained`][].
"""

from ._interop.config import UNet2DConfig as UNet2DConfig
from ._interop.diffusers import DiffusersConfig as DiffusersConfig, from_diffusers as from_diffusers
from ._interop.network import Network as Network
from ._interop.scheduler import DiffusersScheduler as DiffusersScheduler
from ._interop.time_input import (
    AbstractTimeInput as AbstractTimeInput,
    CNoise as CNoise,
    DDPMIndex as DDPMIndex,
    LogSigma as LogSigma,
    Sigma as Sigma,
    Time as Time,
)
from ._interop.unet2d import UNet2D as UNet2D
from ._parametrisation import AbstractForeignNetwork as AbstractForeignNetwork

__all__ = [
    "AbstractForeignNetwork",
    "AbstractTimeInput",
    "CNoise",
    "DDPMIndex",
    "DiffusersConfig",
    "DiffusersScheduler",
    "LogSigma",
    "Network",
    "Sigma",
    "Time",
    "UNet2D",
    "UNet2DConfig",
    "from_diffusers",
]
