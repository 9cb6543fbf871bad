"""The benchmark problems: an explicit table, each with its score model and reference data.

| name | data | score | reference samples | exact density |
|---|---|---|---|---|
| `ring2d` | 8-mode 2-D ring mixture (the shared `ring2d`) | exact | exact draws | yes |
| `aniso64` | 64-D anisotropic 8-component mixture | exact | exact draws | yes |
| `toy2d-mlp` | `toy_mixture` (8 modes, radius 4) | MLP trained with `scoresde train` | exact draws | yes |
| `digits-unet` | sklearn's 8x8 digits in [-1, 1] | U-Net trained with `scoresde train` | held-out test images | no |

All use the VP SDE (beta 0.1 to 20) and end at `t_eps = 1e-3` with a Tweedie denoising step.
A trained problem's checkpoint is written once to the cache folder (named by a hash of its
training configuration) and loaded on later runs.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _data as _data, analytic as analytic
from .._sde import VPSDE, AbstractSDE
from .._training.checkpoint import load
from .._training.recipes import TrainConfig, skeleton_from_config, train

DATA = pathlib.Path(__file__).parent / "data"
T_EPS = 1e-3


@dataclasses.dataclass(frozen=True)
class Problem:
    """One benchmark problem.

    - `score`: `score(t, x)` on one sample (an exact oracle or a trained network).
    - `reference`: samples of the data distribution to compare against (exact draws or held-out
      data), `(n, *data_shape)`; `reference_2` an independent second set (the metrics' floor).
    - `mixture`: the exact data density where known (mode weights, exact NLL), else `None`.
    - `exact_score_64`: for exact-score problems, a function building the same score in float64
      (for the float64 reference ODE solution); `None` for trained networks.
    - `nll_data`: points to evaluate the model's negative log-likelihood on; `nll_bits`: for
      image data, the bit depth (the NLL is then reported in bits per dimension).
    - `digits`: samples are 8x8 digits in [-1, 1]: rows also get `scoresde.digit_metrics`.
    """

    name: str
    description: str
    sde: AbstractSDE
    score: Callable
    data_shape: tuple[int, ...]
    reference: jax.Array
    reference_2: jax.Array
    mixture: analytic.GaussianMixture | None = None
    exact_score_64: Callable | None = None
    nll_data: jax.Array | None = None
    nll_bits: int | None = None
    digits: bool = False
    checkpoint: str | None = None

    @property
    def num_samples(self) -> int:
        return int(self.reference.shape[0])

    def noise(self, key) -> jax.Array:
        """Initial latents `x_T`, sample `i` from `fold_in(key, i)` (shared by every solver)."""
        return jax.vmap(lambda i: self.sde.prior_sample(jr.fold_in(key, i), self.data_shape))(
            jnp.arange(self.num_samples)
        )


# --- exact-score mixtures --------------------------------------------------------------------


def _mixture_problem(name, description, mixture_fn, num, key):
    sde = VPSDE()
    mix = mixture_fn(jnp.float32)
    k1, k2, k3 = jr.split(key, 3)

    def exact_score_64():
        return analytic.marginal_score(mixture_fn(jnp.float64), sde)

    return Problem(
        name=name,
        description=description,
        sde=sde,
        score=analytic.marginal_score(mix, sde),
        data_shape=(mix.dim,),
        reference=mix.sample(k1, num),
        reference_2=mix.sample(k2, num),
        mixture=mix,
        exact_score_64=exact_score_64,
        nll_data=mix.sample(k3, min(num // 8, 256)),
    )


def _npz_mixture(name):
    return lambda dtype: analytic.GaussianMixture.from_npz(DATA / f"{name}.npz", dtype)


def ring2d(*, num, key, quick, cache):
    del quick, cache
    return _mixture_problem(
        "ring2d", "8-mode 2-D ring mixture, exact score, VP SDE", _npz_mixture("ring2d"), num, key
    )


def aniso64(*, num, key, quick, cache):
    del quick, cache
    return _mixture_problem(
        "aniso64",
        "64-D anisotropic 8-component mixture, exact score, VP SDE",
        _npz_mixture("aniso64"),
        num,
        key,
    )


# --- trained networks ------------------------------------------------------------------------


def _cached_model(config: TrainConfig, cache: pathlib.Path):
    """The EMA model `scoresde train` produces for `config`; trained once, then loaded."""
    digest = hashlib.sha256(
        json.dumps(dataclasses.asdict(config), sort_keys=True).encode()
    ).hexdigest()[:12]
    folder = pathlib.Path(cache) / f"{config.dataset}-{config.model_size}-{digest}"
    path = folder / "checkpoint.eqx"
    if not path.exists():
        print(
            f"bench: training {config.dataset} ({config.model_size}, {config.steps} steps) once; "
            f"caching it in {folder}",
            file=sys.stderr,
        )
        train(config, folder, progress=True)
    return load(path, skeleton_from_config(config)), path


def toy2d_mlp(*, num, key, quick, cache):
    config = TrainConfig(
        dataset="mixture",
        model_size="tiny" if quick else "small",
        steps=200 if quick else 4000,
        batch_size=256,
    )
    model, path = _cached_model(config, cache)
    mix = _data.toy_mixture()
    k1, k2, k3 = jr.split(key, 3)
    return Problem(
        name="toy2d-mlp",
        description=f"MLP trained on the 8-mode toy mixture ({config.steps} steps), VP SDE",
        sde=model.sde,
        score=model,
        data_shape=(2,),
        reference=mix.sample(k1, num),
        reference_2=mix.sample(k2, num),
        mixture=mix,
        nll_data=mix.sample(k3, min(num // 8, 256)),
        checkpoint=str(path),
    )


def digits_unet(*, num, key, quick, cache):
    del key
    config = TrainConfig(
        dataset="digits",
        model_size="tiny",
        steps=100 if quick else 1000,
        batch_size=128,
    )
    model, path = _cached_model(config, cache)
    test = _data.load_digits().test  # (297, 1, 8, 8) uint8, never seen in training
    half = test.shape[0] // 2
    n = min(num, half)
    to_model = lambda k: jnp.asarray(2 * (k.astype(np.float32) + 0.5) / 256 - 1)
    return Problem(
        name="digits-unet",
        description=f"U-Net trained on 8x8 digits ({config.steps} steps), VP SDE; "
        "reference: held-out test images (bin centres in [-1, 1])",
        sde=model.sde,
        score=model,
        data_shape=(1, 8, 8),
        reference=to_model(test[:n]),
        reference_2=to_model(test[half : half + n]),
        nll_data=jnp.asarray(test[: min(n, 64)]),
        nll_bits=8,
        digits=True,
        checkpoint=str(path),
    )


# name -> (builder, default number of samples). The explicit table `scoresde bench` runs.
PROBLEMS: dict[str, tuple[Callable, int]] = {
    "ring2d": (ring2d, 4096),
    "aniso64": (aniso64, 2048),
    "toy2d-mlp": (toy2d_mlp, 4096),
    "digits-unet": (digits_unet, 148),
}
QUICK_PROBLEMS = ("ring2d", "toy2d-mlp")


def make_problem(name: str, *, num: int | None, key, quick: bool, cache) -> Problem:
    """Build problem `name` with `num` samples (default: the table's; capped by held-out data)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; choose from {', '.join(PROBLEMS)}.")
    builder, default = PROBLEMS[name]
    num = num or (min(default, 512) if quick else default)
    if num < 2:
        raise ValueError(f"need at least 2 samples per problem; got {num}.")
    return builder(num=num, key=key, quick=quick, cache=cache)


def default_cache() -> pathlib.Path:
    """`$XDG_CACHE_HOME/scoresde/bench` (default `~/.cache/scoresde/bench`)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(root) / "scoresde" / "bench"


__all__ = ["PROBLEMS", "QUICK_PROBLEMS", "Problem", "default_cache", "make_problem"]
