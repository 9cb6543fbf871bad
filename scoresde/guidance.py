r"""Guided scores: conditional sampling by transforming a score, never the sampler.

Each class here IS a `score(t, x)` on ONE unbatched sample, so every sampler (`sample_ode`,
`sample_sde`, `sample_pc`, `sample_edm`, Langevin) takes it unchanged. Bayes for scores,

$$\nabla_x \ln p_t(x \mid y) = \nabla_x \ln p_t(x) + \nabla_x \ln p_t(y \mid x),$$

with the noisy likelihood $p_t(y \mid x) = \int p(y \mid x_0)\,p(x_0 \mid x_t = x)\,dx_0$, which
the methods below approximate differently. Notation: $x_t = \alpha x_0 + \sigma z$, Tweedie's
denoiser $\hat x_0(x) = (x + \sigma^2 s(t, x)) / \alpha$ and its Jacobian
$J = \partial\hat x_0/\partial x$; measurement $y = A x_0 + n$, $n \sim N(0, R)$.

| method | $p_t(y \mid x)$ approximated by | exact for | cost per call |
|---|---|---|---|
| [`Posterior`][scoresde.guidance.Posterior] | (given exactly) | any prior | 1 score |
| [`DPS`][scoresde.guidance.DPS] | $N(y; A\hat x_0, R)$ | no prior | 1 score + 1 VJP |
| [`PiGDM`][scoresde.guidance.PiGDM] | $N(y; A\hat x_0, r_t^2 AA^\top + R)$ | $N(\mu, vI)$ priors | 1 score + 1 VJP |
| [`TMPD`][scoresde.guidance.TMPD] | $N(y; A\hat x_0, \tfrac{\sigma^2}{\alpha} AJA^\top + R)$ | Gaussian priors | 1 score + $d_y$ VJPs |

Every guided score is an [`AbstractGuidedScore`][scoresde.guidance.AbstractGuidedScore] and
declares its cost: `evals_per_call` (score evaluations, a class attribute), `vjps_per_call`
(VJPs through the score; [`TMPD`][scoresde.guidance.TMPD]'s depends on $d_y$ and is a property)
and `nfe_per_call` (the two in network evaluations, a VJP counting as 2), the units of every
sampler's `nfe`.

[`Replacement`][scoresde.guidance.Replacement] is the other, biased, route to inpainting: a step
hook that overwrites the observed coordinates, passed as `step_hook=` to
[`scoresde.sample_pc`][].
"""

from ._inverse.guidance import (
    DPS as DPS,
    TMPD as TMPD,
    AbstractGuidedScore as AbstractGuidedScore,
    Classifier as Classifier,
    ClassifierFree as ClassifierFree,
    PiGDM as PiGDM,
    Posterior as Posterior,
    Replacement as Replacement,
    moment_projection as moment_projection,
)

__all__ = [
    "AbstractGuidedScore",
    "DPS",
    "TMPD",
    "Classifier",
    "ClassifierFree",
    "PiGDM",
    "Posterior",
    "Replacement",
]
