r"""How a batch of likelihood solves is scheduled: values passed as `log_likelihood(schedule=...)`.

- [`scoresde.PerSample`][]: one adaptive `diffeqsolve` per sample under `jax.vmap`; each sample
  takes its own steps and its error norm is its own, so its result does not depend on the rest
  of the batch. The vmapped loop runs until the slowest sample is done:
  time $\approx \max_i \mathrm{NFE}_i$ batched evaluations.
- [`scoresde.Lanes`][]`(L)`: the same per-sample solves on `L` lanes refilled as samples finish
  (`lanes.py`): time $\approx \sum_i \mathrm{NFE}_i / L$ evaluations on `L` lanes. No
  reverse-mode gradients.
- [`scoresde.SharedSteps`][]: ONE adaptive step sequence for the whole batch, scipy's semantics
  (the original score-SDE code): one `diffeqsolve` over the batch pytree, one error norm, the RMS
  over the whole batch's augmented state, so every step is one wide evaluation and every sample
  gets the batch's NFE. The step sequence is set by the hardest samples and the norm is an
  average, looser for any one sample than its own norm: the result for sample $i$ depends on the
  rest of the batch.
"""

import equinox as eqx

from .._checks import check_int


class AbstractSchedule(eqx.Module):
    """How the per-sample likelihood ODEs of a batch are solved (see the module doc)."""


class PerSample(AbstractSchedule):
    """One adaptive solve per sample under `jax.vmap` (per-sample steps and error norm)."""


class Lanes(AbstractSchedule):
    """Per-sample solves on `lanes` lanes refilled as samples finish (no reverse-mode
    gradients); `lanes` an int >= 1."""

    lanes: int = eqx.field(static=True)

    def __init__(self, lanes):
        self.lanes = check_int("lanes", lanes)


class SharedSteps(AbstractSchedule):
    """One adaptive step sequence for the whole batch, error norm = RMS over the batch's state."""


def resolve_schedule(schedule, lanes) -> AbstractSchedule:
    """The schedule from `log_likelihood`'s `schedule=` and its synonym `lanes=L` (=
    `Lanes(L)`); `PerSample()` when neither is given. Raises `ValueError` if both are given and
    `TypeError` for anything that is not a schedule value."""
    if lanes is not None:
        if schedule is not None:
            raise ValueError(
                f"pass schedule=... or lanes=... (a synonym of schedule=Lanes(lanes)), not both; "
                f"got schedule={schedule!r}, lanes={lanes!r}."
            )
        return Lanes(check_int("lanes", lanes))
    if schedule is None:
        return PerSample()
    if not isinstance(schedule, AbstractSchedule):
        raise TypeError(
            "schedule must be ss.PerSample(), ss.Lanes(L) or ss.SharedSteps(); "
            f"got schedule={schedule!r}."
        )
    return schedule
