r"""Output parametrisations: wrappers turning a network `net(c, x_in)` into `score(t, x)`.

With $x_t = \alpha x_0 + \sigma z$ (`sde.marginal(t)`), every wrapper feeds the network the noise
conditioning $c = \ln(\sigma/\alpha)/4 = -\lambda(t)/4$ (from `sde.log_snr`) and the input
$x_{in} = x / \sqrt{\sigma^2 + \alpha^2 \sigma_d^2}$ (unit variance for data of std $\sigma_d$;
$\sigma_d = 1$ except for [`scoresde.EDMPreconditioning`][]), and reads its output as:

| wrapper | network predicts | score |
|---|---|---|
| `DirectScore` | $\nabla \ln p_t(x)$ | the output |
| `EpsPrediction` | $z$ | $-\hat z / \sigma$ |
| `X0Prediction` | $x_0$ (the denoiser) | $(\alpha \hat x_0 - x)/\sigma^2$ |
| `VPrediction` | $v = a z - s x_0$ | $-\hat z/\sigma$, $\hat z = s x/r + a \hat v$ |
| `EDMPreconditioning` | $F$ with $D = c_{skip}\hat x + c_{out} F$ | $(\alpha D - x)/\sigma^2$ |
| `EnergyScore` | an energy $E$ | $-\nabla_x E$ |

Each wrapper is an Equinox module `score(t, x)` on ONE sample, checks at trace time that the
network returns the right shape and dtype, and has `to_score(t, x, out)` / `from_score(t, x, s)`
(the exact inverse) plus `denoise(t, x)` (Tweedie: $E[x_0 \mid x_t]$).
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._custom_types import Sample, Scalar
from ._score_calls import check_like, tweedie
from ._sde import AbstractSDE


def _check_output(out, x, who, scalar=False):
    return check_like(out, x, who=f"{who}: the network", scalar=scalar)


def _check_sde(sde):
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be a scoresde SDE (AbstractSDE); got {type(sde).__name__}.")


class AbstractForeignNetwork(eqx.Module):
    r"""A network in another code's input convention (e.g. [`scoresde.interop.Network`][]).

    A parametrisation calls it as `net.at(sde, t, x, x_in)` (with `label` when given) instead of
    `net(c, x_in)`: it gets the diffusion time itself, the SDE, the raw sample `x` and the
    parametrisation's rescaled input `x_in`, and builds its own inputs from them, so no input is
    recovered from $c$ by inverting the schedule.
    """

    @abc.abstractmethod
    def at(self, sde: AbstractSDE, t: Scalar, x: Sample, x_in: Sample, label=None) -> Array:
        """The network output at diffusion time `t` for the sample `x` (rescaled: `x_in`)."""

    def __call__(self, c, x_in, label=None):
        raise TypeError(
            f"{type(self).__name__} takes the diffusion time, not c: call it through a "
            "parametrisation (e.g. ss.EpsPrediction(net, sde)(t, x)) or as net.at(sde, t, x, x)."
        )


class AbstractParametrisation(eqx.Module):
    r"""`score(t, x)` from a network `net(c, x_in)` and an SDE's `marginal`.

    Subclasses define `to_score(t, x, out)` (network output to score) and its inverse
    `from_score(t, x, score)`.
    """

    net: eqx.AbstractVar[Callable]
    sde: eqx.AbstractVar[AbstractSDE]

    def _data_std(self) -> float:
        return 1.0

    def net_inputs(self, t: Scalar, x: Sample) -> tuple[Array, Array]:
        r"""`(c, x_in)`: $c = -\lambda(t)/4$ and $x_{in} = x / \sqrt{\sigma^2 + \alpha^2\sigma_d^2}$."""
        alpha, sigma = self.sde.marginal(t)
        scale = jnp.sqrt(sigma**2 + alpha**2 * self._data_std() ** 2)
        c = -0.25 * self.sde.log_snr(t)
        return c, (x / scale).astype(jnp.result_type(x))

    @abc.abstractmethod
    def to_score(self, t: Scalar, x: Sample, out: Sample) -> Sample:
        """The score implied by the network output `out` at `(t, x)`."""

    @abc.abstractmethod
    def from_score(self, t: Scalar, x: Sample, score: Sample) -> Sample:
        """The network output that `to_score` maps to `score` (its exact inverse)."""

    def net_output(self, t: Scalar, x: Sample, label=None) -> Array:
        """The network's raw output at `(t, x)`: `net(c, x_in)` (or `net(c, x_in, label)`), or
        `net.at(sde, t, x, x_in)` for an [`AbstractForeignNetwork`][scoresde.interop.AbstractForeignNetwork]."""
        c, x_in = self.net_inputs(t, x)
        if isinstance(self.net, AbstractForeignNetwork):
            return self.net.at(self.sde, t, x, x_in, label)
        return self.net(c, x_in) if label is None else self.net(c, x_in, label)

    def __call__(self, t: Scalar, x: Sample, label=None) -> Sample:
        """The score at `(t, x)`; `label` (a class index) is passed on to a class-conditional
        network as `net(c, x_in, label)`, so a conditional model is `model(t, x, label)`."""
        out = _check_output(self.net_output(t, x, label), x, type(self).__name__)
        return self.to_score(t, x, out).astype(jnp.result_type(x))

    def denoise(self, t: Scalar, x: Sample, label=None) -> Sample:
        r"""Tweedie's $E[x_0 \mid x_t = x] = (x + \sigma^2 \nabla\ln p_t(x)) / \alpha$."""
        if label is None:
            return tweedie(self.sde, self, t, x)
        return tweedie(self.sde, lambda t_, x_: self(t_, x_, label), t, x)


class DirectScore(AbstractParametrisation):
    """The network output is the score itself."""

    net: Callable
    sde: AbstractSDE

    def __check_init__(self):
        _check_sde(self.sde)

    def to_score(self, t, x, out):
        return out

    def from_score(self, t, x, score):
        return score


class EpsPrediction(AbstractParametrisation):
    r"""The network predicts the noise $z$: score $= -\hat z / \sigma(t)$ (DDPM)."""

    net: Callable
    sde: AbstractSDE

    def __check_init__(self):
        _check_sde(self.sde)

    def to_score(self, t, x, out):
        _, sigma = self.sde.marginal(t)
        return -out / sigma

    def from_score(self, t, x, score):
        _, sigma = self.sde.marginal(t)
        return -sigma * score


class X0Prediction(AbstractParametrisation):
    r"""The network is a denoiser $\hat x_0$: score $= (\alpha \hat x_0 - x)/\sigma^2$."""

    net: Callable
    sde: AbstractSDE

    def __check_init__(self):
        _check_sde(self.sde)

    def to_score(self, t, x, out):
        alpha, sigma = self.sde.marginal(t)
        return (alpha * out - x) / sigma**2

    def from_score(self, t, x, score):
        alpha, sigma = self.sde.marginal(t)
        return (x + sigma**2 * score) / alpha


def _v_coefficients(sde, t):
    alpha, sigma = sde.marginal(t)
    r = jnp.sqrt(alpha**2 + sigma**2)
    return alpha / r, sigma / r, r, sigma


class VPrediction(AbstractParametrisation):
    r"""The network predicts $v = a z - s x_0$.

    Here $(a, s) = (\alpha, \sigma)/r$ with $r = \sqrt{\alpha^2+\sigma^2}$. For VP ($\alpha^2 + \sigma^2 = 1$) this is Salimans & Ho's $v$. Since $x/r = a x_0 + s z$,
    $\hat z = s\,x/r + a \hat v$ and the score is $-\hat z/\sigma$.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{salimans2022progressive,
          title={Progressive Distillation for Fast Sampling of Diffusion Models},
          author={Salimans, Tim and Ho, Jonathan},
          booktitle={ICLR}, year={2022}}
        ```
    """

    net: Callable
    sde: AbstractSDE

    def __check_init__(self):
        _check_sde(self.sde)

    def to_score(self, t, x, out):
        a, s, r, sigma = _v_coefficients(self.sde, t)
        z = s * x / r + a * out
        return -z / sigma

    def from_score(self, t, x, score):
        a, s, r, sigma = _v_coefficients(self.sde, t)
        z = -sigma * score
        x0 = (x / r - s * z) / a
        return a * z - s * x0


class EDMPreconditioning(AbstractParametrisation):
    r"""Karras et al.'s preconditioning, generalised to scaled SDEs.

    With $\hat x = x/\alpha$ and $\hat\sigma = \sigma/\alpha$, $D(\hat x) = c_{skip} \hat x + c_{out} F(c_{noise}, c_{in} \hat x)$ with
    $c_{skip} = \sigma_d^2/(\hat\sigma^2 + \sigma_d^2)$,
    $c_{out} = \hat\sigma \sigma_d / \sqrt{\hat\sigma^2 + \sigma_d^2}$,
    $c_{in} = 1/\sqrt{\hat\sigma^2 + \sigma_d^2}$, $c_{noise} = \ln(\hat\sigma)/4$; the score is
    $(\alpha D - x)/\sigma^2$.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{karras2022elucidating,
          title={Elucidating the Design Space of Diffusion-Based Generative Models},
          author={Karras, Tero and Aittala, Miika and Aila, Timo and Laine, Samuli},
          booktitle={NeurIPS}, year={2022}}
        ```
    """

    net: Callable
    sde: AbstractSDE
    sigma_data: float = 0.5

    def __check_init__(self):
        _check_sde(self.sde)
        if not (isinstance(self.sigma_data, (int, float)) and self.sigma_data > 0):
            raise ValueError(f"sigma_data must be a float > 0; got sigma_data={self.sigma_data!r}.")

    def _data_std(self):
        return self.sigma_data

    def _coefficients(self, t):
        alpha, sigma = self.sde.marginal(t)
        s_hat = sigma / alpha
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s_hat**2 + sd2)
        c_out = s_hat * self.sigma_data / jnp.sqrt(s_hat**2 + sd2)
        return alpha, sigma, c_skip, c_out

    def to_score(self, t, x, out):
        alpha, sigma, c_skip, c_out = self._coefficients(t)
        denoised = c_skip * (x / alpha) + c_out * out
        return (alpha * denoised - x) / sigma**2

    def from_score(self, t, x, score):
        alpha, sigma, c_skip, c_out = self._coefficients(t)
        denoised = (x + sigma**2 * score) / alpha
        return (denoised - c_skip * (x / alpha)) / c_out


class EnergyScore(AbstractParametrisation):
    r"""An energy-based model: score $= -\nabla_x E(t, x)$, so $\ln p_t(x) = -E(t, x)$ up to a constant.

    A network with a scalar output (e.g. `MLPScoreNet(..., out_size="scalar")`) is the energy
    $E = \text{net}(c, x_{in})$; a network with a sample-shaped output $y$ gives
    $E = \|x - \alpha y\|^2 / (2\sigma^2)$ (a denoiser-shaped energy). `energy(t, x)` and
    `log_prob_unnormalised(t, x)` give the (negative) log-density up to a constant, as MALA needs.
    """

    net: Callable
    sde: AbstractSDE

    def __check_init__(self):
        _check_sde(self.sde)

    def energy(self, t: Scalar, x: Sample) -> Array:
        """$E(t, x)$, a scalar of `x`'s dtype."""
        out = self.net_output(t, x)
        if jnp.shape(out) == ():
            return _check_output(out, x, "EnergyScore", scalar=True)
        out = _check_output(out, x, "EnergyScore")
        alpha, sigma = self.sde.marginal(t)
        return (0.5 * jnp.sum((x - alpha * out) ** 2) / sigma**2).astype(jnp.result_type(x))

    def log_prob_unnormalised(self, t: Scalar, x: Sample) -> Array:
        """$-E(t, x)$: $\\ln p_t(x)$ up to an additive constant."""
        return -self.energy(t, x)

    def __call__(self, t: Scalar, x: Sample, label=None) -> Sample:
        if label is not None:
            raise ValueError("EnergyScore is unconditional; pass no label.")
        return -jax.grad(self.energy, argnums=1)(t, x)

    def to_score(self, t, x, out):
        """Not defined pointwise: the score needs the energy's gradient (use `__call__`)."""
        raise NotImplementedError("EnergyScore's score is -grad E; call the module instead.")

    def from_score(self, t, x, score):
        raise NotImplementedError("An energy is not determined by one score value.")
