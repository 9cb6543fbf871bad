r"""The variance-exploding SDEs: `VESDE` (geometric noise levels, on its own clock $[0, T]$) and
`EDMSDE` (Karras et al.'s $\sigma(t) = t$).
"""

import jax.numpy as jnp

from .._checks import check_positive, is_concrete
from .base import AbstractSDE


class VESDE(AbstractSDE):
    r"""Variance-exploding SDE on $[0, T]$ (default $T = 1$), starting from the data itself.

    With $s(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^{t/T}$: $f = 0$,
    $g^2 = \tfrac{2}{T} \ln(\sigma_{max}/\sigma_{min})\, s(t)^2$, $\alpha = 1$ and
    $\sigma(t)^2 = s(t)^2 - \sigma_{min}^2$, so $\sigma(0) = 0$. (The original score-SDE code
    instead treats $s(t)$ itself as the marginal std, i.e. data pre-blurred by $\sigma_{min}$.)
    Prior $N(0, \sigma_{max}^2 I)$; default end time `t_eps` $= 10^{-3}\,T$. `T` stretches the
    same noise levels over $[0, T]$: the SDE at $t$ has the marginals of the unit-clock one at
    $t / T$.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0

    def __check_init__(self):
        check_positive("sigma_min", self.sigma_min)
        check_positive("sigma_max", self.sigma_max)
        if (
            is_concrete(self.sigma_min)
            and is_concrete(self.sigma_max)
            and not self.sigma_min < self.sigma_max
        ):
            raise ValueError(
                "VESDE needs 0 < sigma_min < sigma_max; got "
                f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}."
            )

    @property
    def _log_ratio(self):
        return jnp.log(self.sigma_max) - jnp.log(self.sigma_min)

    @property
    def default_t_eps(self):
        return 1e-3 * self.T

    def drift_coeff(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def diffusion(self, t):
        # With u = t / T: s(t) = sigma_min r^u and g^2 = (2 ln r / T) s^2.
        log_ratio = self._log_ratio
        return self.sigma_min * jnp.exp((t / self.T) * log_ratio) * jnp.sqrt(2 * log_ratio / self.T)

    def marginal(self, t):
        t = jnp.asarray(t, dtype=jnp.result_type(t, float))
        sigma = self.sigma_min * jnp.sqrt(jnp.expm1(2 * (t / self.T) * self._log_ratio))
        return jnp.ones_like(t), sigma

    def log_snr(self, t):
        return -jnp.log(self.sigma_min) - 0.5 * jnp.log(
            jnp.expm1(2 * (t / self.T) * self._log_ratio)
        )

    def log_snr_inverse(self, lam):
        # sigma = exp(-lam)  =>  expm1(2 (t / T) ln r) = exp(-2 (lam + ln sigma_min))
        arg = jnp.exp(-2 * (lam + jnp.log(self.sigma_min)))
        return self.T * (jnp.log1p(arg) / (2 * self._log_ratio))

    def log_snr_from_log_std(self, log_sigma):
        return -log_sigma  # alpha = 1

    @property
    def prior_std(self):
        return self.sigma_max


class EDMSDE(AbstractSDE):
    r"""The EDM / Karras et al. (2022) SDE: $\sigma(t) = t$, $\alpha = 1$, $g^2 = 2t$, $T = \sigma_{max}$.

    `sigma_min` is the default end time `t_eps` of samplers (the Karras grid ends there).
    Prior $N(0, \sigma_{max}^2 I)$.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __check_init__(self):
        check_positive("sigma_min", self.sigma_min)
        check_positive("sigma_max", self.sigma_max)
        if (
            is_concrete(self.sigma_min)
            and is_concrete(self.sigma_max)
            and not self.sigma_min < self.sigma_max
        ):
            raise ValueError(
                "EDMSDE needs 0 < sigma_min < sigma_max; got "
                f"sigma_min={self.sigma_min}, sigma_max={self.sigma_max}."
            )

    @property
    def T(self):
        return self.sigma_max

    @property
    def default_t_eps(self):
        return self.sigma_min

    def drift_coeff(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def diffusion(self, t):
        return jnp.sqrt(2 * jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def marginal(self, t):
        t = jnp.asarray(t, dtype=jnp.result_type(t, float))
        return jnp.ones_like(t), t

    def log_snr(self, t):
        return -jnp.log(t)

    def log_snr_inverse(self, lam):
        return jnp.exp(-lam)

    def log_snr_from_log_std(self, log_sigma):
        return -log_sigma  # alpha = 1

    @property
    def prior_std(self):
        return self.sigma_max
