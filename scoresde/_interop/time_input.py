r"""What a network from elsewhere takes as its time input: values mapping the diffusion time $t$
of an SDE to it.

With $x_t = \alpha x_0 + \sigma z$ (`sde.marginal(t)`) and the noise level of the equivalent
variance-exploding process $\hat\sigma = \sigma/\alpha = e^{-\lambda(t)}$ (Karras et al.'s
$\sigma$; `sde.log_snr(t)` is $\lambda$):

| value | the network's time input |
|---|---|
| `Time(scale)` | `scale` $\cdot\, t$ (the SDE's own clock) |
| `Sigma()` | $\hat\sigma = \sigma/\alpha$ |
| `LogSigma()` | $\ln\hat\sigma = -\lambda$ |
| `CNoise()` | EDM's $c_{noise} = \ln(\hat\sigma)/4 = -\lambda/4$ |
| `DDPMIndex()` | the index $n = N t - 1$ of a [`scoresde.DDPMSDE`][] table of $N$ steps |
"""

import abc

import equinox as eqx
import jax.numpy as jnp

from .._custom_types import Scalar
from .._sde import DDPMSDE, AbstractSDE


class AbstractTimeInput(eqx.Module):
    """The time input of a network from elsewhere, as a function of the diffusion time."""

    @abc.abstractmethod
    def __call__(self, sde: AbstractSDE, t: Scalar) -> Scalar:
        """The network's time input at diffusion time `t` of `sde`."""


class Time(AbstractTimeInput):
    r"""The diffusion time itself, times `scale`: $\text{scale}\cdot t$ (e.g. `scale=999` for
    score_sde's VP networks, which take $999\,t$; 1 for a network trained on `sde`'s clock)."""

    scale: float = 1.0

    def __check_init__(self):
        if not (isinstance(self.scale, (int, float)) and self.scale > 0):
            raise ValueError(f"scale must be a number > 0; got scale={self.scale!r}.")

    def __call__(self, sde, t):
        return self.scale * jnp.asarray(t, jnp.result_type(t, float))


class Sigma(AbstractTimeInput):
    r"""The noise level $\hat\sigma = \sigma(t)/\alpha(t) = e^{-\lambda(t)}$ (EDM's and
    k-diffusion's $\sigma$; for a VE SDE, $\sigma(t)$ itself)."""

    def __call__(self, sde, t):
        return jnp.exp(-sde.log_snr(t))


class LogSigma(AbstractTimeInput):
    r"""$\ln\hat\sigma = \ln(\sigma(t)/\alpha(t)) = -\lambda(t)$."""

    def __call__(self, sde, t):
        return -sde.log_snr(t)


class CNoise(AbstractTimeInput):
    r"""EDM's noise conditioning $c_{noise} = \ln(\hat\sigma)/4 = -\lambda(t)/4$ (what this
    package's own networks take)."""

    def __call__(self, sde, t):
        return -0.25 * sde.log_snr(t)


class DDPMIndex(AbstractTimeInput):
    r"""The timestep index of a discrete DDPM table, as diffusers numbers it.

    diffusers' index $n \in \{0, \dots, N-1\}$ has `alphas_cumprod[n]`
    $= \prod_{i=0}^{n}(1 - \beta_i)$ (betas 0-based), which is $\alpha(t)^2$ of
    [`scoresde.DDPMSDE`][] (betas 1-based) at $t = (n + 1)/N$. So the input is
    $n = N t - 1$: an integer on the grid, fractional between grid points (the sinusoidal
    embeddings of diffusers' U-Nets take fractional timesteps). The SDE must be a
    [`scoresde.DDPMSDE`][] (the table the network was trained on).
    """

    def __call__(self, sde, t):
        if not isinstance(sde, DDPMSDE):
            raise TypeError(
                "DDPMIndex needs the discrete table the network was trained on as the SDE "
                f"(a scoresde.DDPMSDE); got sde={type(sde).__name__}."
            )
        return sde.num_steps * jnp.asarray(t, jnp.result_type(t, float)) - 1
