"""`load_checkpoint(path)`: a model trained by a recipe (`scoresde train`), rebuilt from its
checkpoint's sidecar with no skeleton, as a `Trained`: the model, its score, SDE, config and data
convention."""

import os

import equinox as eqx
from jaxtyping import PyTree

from .._sde import AbstractSDE
from .model_config import AbstractModelConfig
from .recipes import rebuild


class Trained(eqx.Module):
    r"""A trained score model and the recipe it was trained by (from
    [`scoresde.load_checkpoint`][], or imported by [`scoresde.interop.from_diffusers`][]).

    - `model`: the network in its parametrisation wrapper (EMA weights), a `model(t, x)` score
      on one sample, or `model(t, x, label)` for a class-conditional one.
    - `config`: the `TrainConfig` it was trained with (data set, SDE, network, loss, steps), or
      for an imported model the config it was read from (a
      [`scoresde.interop.DiffusersConfig`][]).
    - `score`: the score $\nabla_x \log p_t(x)$ to sample from, `score(t, x)` on one sample; for
      a class-conditional model, the unconditional (null-label) score; `guided(label, w)` gives
      classifier-free guidance towards `label`.
    - `sde`: the forward SDE it was trained on.
    - `levels`: the data convention $y = 2(k + u)/L - 1$ (the digits: 17 or 256; mnist and
      8-bit image files: 256), None for continuous data (toy sets, points, float images).
    - `data_shape`: the shape of one sample.
    """

    model: PyTree
    config: AbstractModelConfig = eqx.field(static=True)

    @property
    def sde(self) -> AbstractSDE:
        return self.model.sde

    @property
    def levels(self) -> int | None:
        return self.config.data_levels

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self.config.sample_shape

    @property
    def score(self):
        return self.config.score(self.model)

    def guided(self, label: int, guidance: float = 1.0):
        """Classifier-free guidance of scale `guidance` towards class `label` (a conditional
        model only), a `score(t, x)`."""
        return self.config.score(self.model, label, guidance)


def load_checkpoint(path: str | os.PathLike) -> Trained:
    """The model of a checkpoint written by `scoresde train`, rebuilt with no skeleton: the
    sidecar's config says which network, parametrisation and SDE (toy MLPs, digits, mnist and
    image-file U-Nets, class-conditional U-Nets) and, for a run on a file, its shape. `path`
    may be the final `checkpoint.eqx` or a run's `state.eqx` (an interrupted run: its EMA
    weights).

    All of [`scoresde.load`][]'s checks apply (size, SHA-256, leaf shapes and dtypes).

    **Raises:** `FileNotFoundError` naming `path` if nothing is there (`IsADirectoryError` for a
    folder); `CheckpointError` if the checkpoint was not written by a training recipe (then
    use `scoresde.load` with a skeleton)."""
    return Trained(*rebuild(path))
