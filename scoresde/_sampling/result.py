"""The result of the sampling entry points: the samples and their cost."""

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int


class SampleResult(eqx.Module):
    """Samples with their cost.

    - `x`: the samples, `(num, *data_shape)` (NaN where a solve failed, with `throw=False`).
    - `nfe`: score evaluations per sample (solver stages x attempted steps, rejected ones
      included, plus the final denoising step); `-1` where the solver's cost is unknown
      (implicit solvers).
    - `num_steps`: attempted steps per sample.
    - `successful`: whether each sample's solve succeeded (`None` for samplers that cannot fail).
    """

    x: Float[Array, "num *data"]
    nfe: Int[Array, " num"]
    num_steps: Int[Array, " num"]
    successful: Bool[Array, " num"] | None = None


EDMResult = SampleResult
"""[`scoresde.sample_edm`][]'s result: a [`scoresde.SampleResult`][] (kept as an alias)."""
