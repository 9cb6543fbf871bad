r"""A diffusers `DDPMScheduler` / `DDIMScheduler` config as this package's SDE and
parametrisation, and its inference timesteps as a time grid.

The betas are diffusers' own (float32, as `torch` computes them, then float64):

- `linear`: `linspace(beta_start, beta_end, N)`;
- `scaled_linear`: `linspace(sqrt(beta_start), sqrt(beta_end), N)**2`;
- `squaredcos_cap_v2`: $\beta_i = \min(1 - \bar\alpha((i+1)/N)/\bar\alpha(i/N), 0.999)$ with
  $\bar\alpha(s) = \cos^2(\tfrac{s + 0.008}{1.008}\tfrac{\pi}{2})$;
- `trained_betas`: the list itself.

They make a [`scoresde.DDPMSDE`][], on which diffusers' timestep index $n$ is the time
$t = (n + 1)/N$ ([`scoresde.interop.DDPMIndex`][]). `prediction_type` `epsilon`, `v_prediction`,
`sample` are [`scoresde.EpsPrediction`][], [`scoresde.VPrediction`][],
[`scoresde.X0Prediction`][].

Keys that only shape diffusers' own sampling loop (`variance_type` other than learned,
`clip_sample`, `clip_sample_range`, `thresholding`, `dynamic_thresholding_ratio`,
`sample_max_value`, `set_alpha_to_one`, `steps_offset`, `timestep_spacing`) do not change the
score; they are kept for [`DiffusersScheduler.timesteps`][scoresde.interop.DiffusersScheduler.timesteps].
"""

import dataclasses
import math

import numpy as np

from .. import _parametrisation
from .._sde import DDPMSDE
from .config import checked_keys

SCHEDULERS = ("DDPMScheduler", "DDIMScheduler")
_DEFAULTS = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
    "steps_offset": 0,
    "set_alpha_to_one": True,
    "variance_type": "fixed_small",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": 1.0,
    "rescale_betas_zero_snr": False,
}
_SUPPORTED = {
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "timestep_spacing": ("leading", "trailing", "linspace"),
    "variance_type": ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log"),
    "rescale_betas_zero_snr": (False,),
}
PARAMETRISATIONS = {
    "epsilon": _parametrisation.EpsPrediction,
    "v_prediction": _parametrisation.VPrediction,
    "sample": _parametrisation.X0Prediction,
}


def diffusers_betas(
    schedule: str, num_train_timesteps: int, beta_start: float, beta_end: float
) -> np.ndarray:
    """diffusers' betas of `schedule` (computed in float32 as diffusers does), as float64."""
    n = num_train_timesteps
    if schedule == "linear":
        betas = np.linspace(beta_start, beta_end, n, dtype=np.float32)
    elif schedule == "scaled_linear":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, n, dtype=np.float32) ** 2
    elif schedule == "squaredcos_cap_v2":

        def alpha_bar(s):
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array(
            [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
            dtype=np.float32,
        )
    else:
        raise ValueError(
            f"beta_schedule {schedule!r} is not supported; supported: "
            f"{list(_SUPPORTED['beta_schedule'])}."
        )
    return betas.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class DiffusersScheduler:
    """A diffusers DDPM/DDIM scheduler config: its SDE, parametrisation and timesteps.

    - `class_name`: `DDPMScheduler` or `DDIMScheduler`.
    - `betas`: the $N$ betas (a tuple of floats, float64).
    - `prediction_type`: `epsilon`, `v_prediction` or `sample`.
    - `timestep_spacing`, `steps_offset`, `set_alpha_to_one`: what diffusers' `set_timesteps`
      and DDIM's last step use.
    """

    class_name: str
    betas: tuple[float, ...]
    prediction_type: str
    timestep_spacing: str
    steps_offset: int
    set_alpha_to_one: bool

    @property
    def num_train_timesteps(self) -> int:
        return len(self.betas)

    def sde(self) -> DDPMSDE:
        """The [`scoresde.DDPMSDE`][] of the betas."""
        return DDPMSDE(betas=np.array(self.betas))

    @property
    def parametrisation(self) -> type[_parametrisation.AbstractParametrisation]:
        """The parametrisation class of `prediction_type`."""
        return PARAMETRISATIONS[self.prediction_type]

    def timesteps(self, num_inference_steps: int) -> np.ndarray:
        """The timestep indices of diffusers' `set_timesteps(num_inference_steps)` (decreasing;
        `linspace`, `leading` (+ `steps_offset`) or `trailing` spacing)."""
        n, k = self.num_train_timesteps, num_inference_steps
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise ValueError(f"num_inference_steps must be an int in [1, {n}]; got {k!r}.")
        if self.timestep_spacing == "linspace":
            return np.linspace(0, n - 1, k).round()[::-1].astype(np.int64)
        if self.timestep_spacing == "leading":
            return (np.arange(0, k) * (n // k)).round()[::-1].astype(np.int64) + self.steps_offset
        return np.round(np.arange(n, 0, -n / k)).astype(np.int64) - 1

    def ddim_times(self, num_inference_steps: int) -> tuple[np.ndarray, bool]:
        r"""`(times, denoise)` for [`scoresde.sample_ode`][] with [`scoresde.DDIM`][] to take the
        same steps as diffusers' DDIM (eta = 0, no clipping or thresholding) from the same
        latents: `grid=times, denoise=denoise`.

        The timestep $n$ is $t = (n + 1)/N$; diffusers' last step goes to $\bar\alpha = 1$ with
        `set_alpha_to_one` (then `times` ends at the last timestep and `denoise` is True: the
        Tweedie step is that last DDIM step) and to `alphas_cumprod[0]` ($t = 1/N$) otherwise.

        diffusers' DDIM steps from timestep $n$ to $n - \lfloor N/k\rfloor$ for $k$ inference
        steps, and evaluates the network at the next entry of `timesteps`; the two agree, and
        the chain is one grid of times, only when the timesteps start at $N - 1$ (sample_ode
        starts at `sde.T`) and are $\lfloor N/k\rfloor$ apart: `trailing` spacing with $k$
        dividing $N$ (or $k = 1$).

        **Raises:** `ValueError` for any other spacing or $k$, saying which condition fails."""
        n = self.num_train_timesteps
        steps = self.timesteps(num_inference_steps)
        if steps[0] != n - 1:
            raise ValueError(
                f"{self.timestep_spacing!r} spacing starts at timestep {int(steps[0])}, not at "
                f"{n - 1} (t = T): sample_ode starts from sde.T; use trailing spacing."
            )
        gap = n // num_inference_steps
        if np.any(np.diff(steps) != -gap):
            raise ValueError(
                f"diffusers' DDIM steps {gap} timesteps back from each of {steps.tolist()[:4]}..., "
                f"which are not {gap} apart ({self.timestep_spacing!r} spacing, "
                f"{num_inference_steps} steps of {n}): no single grid reproduces it; use trailing "
                "spacing with num_inference_steps dividing num_train_timesteps."
            )
        times = (steps.astype(np.float64) + 1) / n
        if self.set_alpha_to_one:
            return times, True
        if times[-1] > 1.0 / n:
            times = np.append(times, 1.0 / n)
        return times, False


def parse_scheduler_config(raw: dict, source: str = "scheduler_config.json") -> DiffusersScheduler:
    """A `DiffusersScheduler` from the dict of a diffusers scheduler config.

    **Raises:** `ValueError` naming the key (and `source`) for an unknown key or an
    unsupported value (a scheduler other than DDPM/DDIM, learned variances, zero-SNR
    rescaling, an unknown beta schedule)."""
    c = checked_keys(raw, source, tuple(SCHEDULERS), "scheduler", _DEFAULTS, _SUPPORTED)
    name = raw.get("_class_name", "DDPMScheduler")
    n = c["num_train_timesteps"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{source}: config key 'num_train_timesteps' must be an int >= 1.")
    if c["trained_betas"] is not None:
        betas = np.asarray(c["trained_betas"], dtype=np.float32).astype(np.float64)
        if betas.shape != (n,):
            raise ValueError(
                f"{source}: config key 'trained_betas' has {betas.size} values; "
                f"num_train_timesteps = {n}."
            )
    else:
        betas = diffusers_betas(c["beta_schedule"], n, c["beta_start"], c["beta_end"])
    offset = c["steps_offset"]
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"{source}: config key 'steps_offset' must be an int >= 0.")
    return DiffusersScheduler(
        class_name=name,
        betas=tuple(float(b) for b in betas),
        prediction_type=c["prediction_type"],
        timestep_spacing=c["timestep_spacing"],
        steps_offset=offset,
        set_alpha_to_one=bool(c["set_alpha_to_one"]),
    )
