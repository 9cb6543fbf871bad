"""The result of the sampling entry points: the samples and their cost."""

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int


class SampleResult(eqx.Module):
    """Samples with their cost.

    - `x`: the samples, `(num, *data_shape)` (NaN where a solve failed, with `throw=False`).
    - `nfe`: network evaluations per sample: the sampler's calls of the score (solver stages x
      attempted steps, rejected ones included, corrector steps, the final denoising step)
      times what one call costs. A plain network or callable costs 1; a guided score its
      declared `nfe_per_call`, a VJP through the network counting as 2 (classifier-free 2,
      DPS and PiGDM 3, TMPD $1 + 2d_y$, classifier guidance 4). `-1` where the solver's cost
      is unknown (implicit solvers). The same convention holds for every sampler and for
      [`scoresde.sample_smc`][]; see [Counting score evaluations](../concepts/nfe.md).
    - `num_steps`: attempted steps per sample.
    - `successful`: whether each sample's solve succeeded (`None` for samplers that cannot fail).
    """

    x: Float[Array, "num *data"]
    nfe: Int[Array, " num"]
    num_steps: Int[Array, " num"]
    successful: Bool[Array, " num"] | None = None


EDMResult = SampleResult
"""[`scoresde.sample_edm`][]'s result: a [`scoresde.SampleResult`][] (kept as an alias)."""
