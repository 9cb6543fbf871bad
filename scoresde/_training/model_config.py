"""`AbstractModelConfig`: what a [`scoresde.Trained`][] needs from the config it was built by,
whether a training recipe's `TrainConfig` or an imported model's (e.g. a diffusers folder's)."""

import abc


class AbstractModelConfig(abc.ABC):
    """The provenance of a trained model: its data shape, data convention and the score to draw
    from. Subclasses are frozen (hashable) dataclasses."""

    @property
    @abc.abstractmethod
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample."""

    @property
    @abc.abstractmethod
    def data_levels(self) -> int | None:
        """The quantisation levels of the data convention $y = 2(k + u)/L - 1$, or None."""

    @abc.abstractmethod
    def score(self, model, label: int | None = None, guidance: float = 1.0):
        """The score to draw from, `score(t, x)`; with `label`, guided towards that class."""
