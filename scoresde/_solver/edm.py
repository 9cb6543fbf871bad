r"""EDM's second-order Heun step (Karras et al. 2022) as a solver of the PF-ODE.

The stochastic sampler with churn that uses the same step is [`scoresde.sample_edm`][].
"""

from typing import ClassVar

from .base import PFModel, _SingleStep


class EDMHeun(_SingleStep):
    r"""The second-order Heun sampler of Karras et al. (2022), two evaluations per step.

    It runs in the scaled variables $\tilde x = x/\alpha$, $\tilde\sigma = \sigma/\alpha =
    e^{-\lambda}$, where the PF-ODE reads $d\tilde x/d\tilde\sigma = (\tilde x - \hat x_0)/\tilde\sigma$
    (for [`scoresde.EDMSDE`][] these are $x$ and $t$ themselves): an Euler step to
    $\tilde\sigma_{i+1}$, then the trapezoidal correction. For the stochastic version with
    churn see [`scoresde.sample_edm`][].

    ??? cite "Reference"
        ```bibtex
        @inproceedings{karras2022edm,
          title={Elucidating the Design Space of Diffusion-Based Generative Models},
          author={Karras, Tero and Aittala, Miika and Aila, Timo and Laine, Samuli},
          booktitle={NeurIPS}, year={2022}
        }
        ```
    """

    evals_per_step: ClassVar[int] = 2

    def order(self, terms):
        return 2

    def _step(self, model, ts, tt, x):
        return heun_step(model, ts, tt, x)


def heun_step(model: PFModel, ts, tt, x):
    """One Heun step in the scaled variables from `ts` down to `tt`: `(y1, y1 - euler)`."""
    a_s, s_s, _ = model.marginal(ts)
    a_t, s_t, _ = model.marginal(tt)
    sig_s, sig_t = s_s / a_s, s_t / a_t
    xs = x / a_s
    d_s = (xs - model.data(ts, x)) / sig_s
    x_euler = xs + (sig_t - sig_s) * d_s
    d_t = (x_euler - model.data(tt, (a_t * x_euler).astype(x.dtype))) / sig_t
    x_heun = xs + (sig_t - sig_s) * 0.5 * (d_s + d_t)
    return (a_t * x_heun).astype(x.dtype), (a_t * (x_heun - x_euler)).astype(x.dtype)
