r"""The interface of the SDE family: `AbstractSDE` and the argument check of every sampler.

Every SDE here has $x_t \mid x_0 \sim N(\alpha(t) x_0, \sigma(t)^2 I)$ with
$\alpha' = f\alpha$ and $(\sigma^2)' = 2 f \sigma^2 + g^2$. Methods act on ONE unbatched sample;
batches go through `jax.vmap`. All formulas are written to stay accurate near $t = 0$
(`expm1`, `log1p`, no $\log 0$).
"""

import abc
import math
from typing import TYPE_CHECKING

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._checks import is_concrete
from .._custom_types import Key, Sample, Scalar

_LOG_2PI = math.log(2 * math.pi)


class AbstractSDE(eqx.Module):
    r"""$dx = f(t)\,x\,dt + g(t)\,dw$ on $[0, T]$, acting on one unbatched sample.

    Concrete SDEs define `drift_coeff` ($f$), `diffusion` ($g$), `marginal`
    ($\alpha, \sigma$), the half log-SNR `log_snr` ($\lambda = \ln(\alpha/\sigma)$) with its
    inverse `log_snr_inverse`, and `prior_std` (the prior is $N(0, \text{prior\_std}^2 I)$).
    """

    if TYPE_CHECKING:  # subclasses give T as a property, which mypy rejects for a field

        @property
        def T(self) -> float: ...

    else:
        T: eqx.AbstractVar[float]

    def __check_init__(self):
        T = self.T
        if is_concrete(T) and not (math.isfinite(float(T)) and float(T) > 0):
            raise ValueError(
                f"{type(self).__name__}: the SDE's end time T must be finite and > 0 (time runs "
                f"from 0 up to T); got T={T!r}."
            )

    @abc.abstractmethod
    def drift_coeff(self, t: Scalar) -> Array:
        """The scalar $f(t)$ of the linear drift $f(t)\\,x$."""

    @abc.abstractmethod
    def diffusion(self, t: Scalar) -> Array:
        """The scalar diffusion coefficient $g(t)$."""

    @abc.abstractmethod
    def marginal(self, t: Scalar) -> tuple[Array, Array]:
        r"""`(alpha, sigma)` such that $x_t \mid x_0 \sim N(\alpha x_0, \sigma^2 I)$."""

    @abc.abstractmethod
    def log_snr(self, t: Scalar) -> Array:
        r"""Half log signal-to-noise ratio $\lambda(t) = \ln(\alpha(t)/\sigma(t))$, decreasing."""

    @abc.abstractmethod
    def log_snr_inverse(self, lam: Scalar) -> Array:
        r"""The time $t$ at which $\lambda(t)$ equals `lam`."""

    def log_snr_from_log_std(self, log_sigma: Scalar) -> Array:
        r"""$\lambda$ as a function of $\ln\sigma$ (both monotone in $t$), for integrating in
        $\ln\sigma$ (`variable="log_sigma"`). Optional: the built-in SDEs define it."""
        raise NotImplementedError(
            f"{type(self).__name__} does not define log_snr_from_log_std, which "
            "variable='log_sigma' needs; use variable='t' or 'log_snr'."
        )

    @property
    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at `T`."""

    @property
    def default_t_eps(self) -> float:
        r"""The end time `t_eps` that samplers use when none is given ($10^{-3}$ here; the SDEs
        with a `T=` clock give $10^{-3}\,T$)."""
        return 1e-3

    def drift(self, t: Scalar, x: Sample) -> Sample:
        """The drift $f(t)\\,x$."""
        return self.drift_coeff(t) * x

    def prior_sample(self, key: Key, shape: tuple[int, ...]) -> Array:
        """Draw from $N(0, \\text{prior\\_std}^2 I)$ with the given shape (a sample or a batch)."""
        return self.prior_std * jr.normal(key, shape)

    def prior_log_prob(self, x: Sample) -> Array:
        """Log-density of the prior at ONE sample `x`, summed over its dimensions."""
        std = self.prior_std
        return -0.5 * (jnp.sum((x / std) ** 2) + x.size * (_LOG_2PI + 2 * math.log(std)))

    def perturb(self, key: Key, x0: Sample, t: Scalar) -> tuple[Array, Array]:
        r"""Draw $x_t = \alpha(t) x_0 + \sigma(t) z$, $z \sim N(0, I)$; returns `(x_t, z)`."""
        alpha, sigma = self.marginal(t)
        z = jr.normal(key, jnp.shape(x0), jnp.result_type(x0))
        return alpha * x0 + sigma * z, z


def check_sde_and_score(sde, score) -> None:
    """`sde` is one of this package's SDEs ([`scoresde.AbstractSDE`][]) and `score` is callable:
    `TypeError` naming the argument otherwise."""
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be a scoresde SDE (AbstractSDE); got {type(sde).__name__}.")
    if not callable(score):
        raise TypeError(f"score must be callable as score(t, x); got {type(score).__name__}.")
