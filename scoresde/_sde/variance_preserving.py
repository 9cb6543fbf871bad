r"""The VP and sub-VP SDEs with a linear rate $\beta$, each on its own clock $[0, T]$.

Stretching the clock keeps the schedule:
$\beta(t) = \beta_{min} + \tfrac{t}{T}(\beta_{max} - \beta_{min})$, so the SDE on $[0, T]$ has at
time $t$ the marginals of the unit-clock SDE with rates $T\beta_{min}, T\beta_{max}$ at $t / T$.
"""

import equinox as eqx
import jax.numpy as jnp

from .._checks import check_positive, is_concrete
from .base import AbstractSDE


def _check_betas(name, beta_min, beta_max):
    check_positive("beta_min", beta_min, strict=False)
    check_positive("beta_max", beta_max)
    if is_concrete(beta_min) and is_concrete(beta_max) and not beta_min <= beta_max:
        raise ValueError(
            f"{name} needs 0 <= beta_min <= beta_max; got beta_min={beta_min}, beta_max={beta_max}."
        )


class _BetaSchedule(eqx.Module):
    r"""Linear $\beta(t) = \beta_{min} + u(\beta_{max} - \beta_{min})$ with $u = t/T$, and its
    integral $B(t) = T\,(\beta_{min} u + (\beta_{max} - \beta_{min}) u^2 / 2)$. With $T = 1$
    every formula is the unit-clock one, bit for bit ($t / 1$ and $1 \cdot B$ are exact)."""

    beta_min: float
    beta_max: float
    T: float = 1.0

    def beta(self, t):
        return self.beta_min + (t / self.T) * (self.beta_max - self.beta_min)

    def integral(self, t):
        u = t / self.T
        return self.T * (self.beta_min * u + 0.5 * (self.beta_max - self.beta_min) * u**2)

    def integral_inverse(self, B):
        # u solves (bmax - bmin)/2 u^2 + bmin u - B/T = 0, in the cancellation-free form.
        d = self.beta_max - self.beta_min
        b = B / self.T
        return self.T * (2 * b / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2 * d * b)))


def vp_log_snr_from_log_std(log_sigma):
    """$\\lambda$ of a VP SDE from $\\ln\\sigma$: $\\alpha^2 / \\sigma^2 = $ `expm1(-2 ln sigma)`."""
    return 0.5 * jnp.log(jnp.expm1(-2 * log_sigma))


class VPSDE(AbstractSDE):
    r"""Variance-preserving SDE (DDPM in continuous time) on $[0, T]$ (default $T = 1$).

    $f = -\beta(t)/2$, $g^2 = \beta(t)$, $\alpha = e^{-B(t)/2}$, $\sigma^2 = 1 - e^{-B(t)}$, with
    $\beta(t) = \beta_{min} + \tfrac{t}{T}(\beta_{max} - \beta_{min})$ and $B(t) = \int_0^t \beta$.
    Prior $N(0, I)$; default end time `t_eps` $= 10^{-3}\,T$.

    `T` stretches the same schedule over $[0, T]$: `VPSDE(1, 1, T=10)` has $\beta = 1$ on
    $[0, 10]$ (Equinox's score-diffusion example), and `VPSDE(b0, b1, T=10)` at $t$ has the
    marginals of `VPSDE(10 b0, 10 b1)` at $t/10$. A network trained on the $T$ clock is
    sampled on the same `VPSDE(..., T=T)`; for any other $B(t)$, see
    [`scoresde.CustomVPSDE`][].
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __check_init__(self):
        _check_betas("VPSDE", self.beta_min, self.beta_max)

    @property
    def _schedule(self):
        return _BetaSchedule(self.beta_min, self.beta_max, self.T)

    @property
    def default_t_eps(self):
        return 1e-3 * self.T

    def drift_coeff(self, t):
        return -0.5 * self._schedule.beta(t)

    def diffusion(self, t):
        return jnp.sqrt(self._schedule.beta(t))

    def marginal(self, t):
        B = self._schedule.integral(t)
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def log_snr(self, t):
        # alpha^2 / sigma^2 = 1 / expm1(B)
        return -0.5 * jnp.log(jnp.expm1(self._schedule.integral(t)))

    def log_snr_inverse(self, lam):
        return self._schedule.integral_inverse(jnp.logaddexp(0.0, -2 * lam))

    def log_snr_from_log_std(self, log_sigma):
        return vp_log_snr_from_log_std(log_sigma)

    @property
    def prior_std(self):
        return 1.0


class SubVPSDE(AbstractSDE):
    r"""Sub-VP SDE of Song et al. (2021) on $[0, T]$ (default $T = 1$).

    $f = -\beta(t)/2$, $g^2 = \beta(t)(1 - e^{-2B(t)})$, $\alpha = e^{-B(t)/2}$,
    $\sigma = 1 - e^{-B(t)}$, with $\beta$ and $B$ as in [`scoresde.VPSDE`][] (the same schedule
    stretched over $[0, T]$). Prior $N(0, I)$; default end time `t_eps` $= 10^{-3}\,T$.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __check_init__(self):
        _check_betas("SubVPSDE", self.beta_min, self.beta_max)

    @property
    def _schedule(self):
        return _BetaSchedule(self.beta_min, self.beta_max, self.T)

    @property
    def default_t_eps(self):
        return 1e-3 * self.T

    def drift_coeff(self, t):
        return -0.5 * self._schedule.beta(t)

    def diffusion(self, t):
        B = self._schedule.integral(t)
        return jnp.sqrt(-self._schedule.beta(t) * jnp.expm1(-2 * B))

    def marginal(self, t):
        B = self._schedule.integral(t)
        return jnp.exp(-0.5 * B), -jnp.expm1(-B)

    def log_snr(self, t):
        # alpha / sigma = 1 / (2 sinh(B/2))
        B = self._schedule.integral(t)
        return -jnp.log(2 * jnp.sinh(0.5 * B))

    def log_snr_inverse(self, lam):
        return self._schedule.integral_inverse(2 * jnp.arcsinh(0.5 * jnp.exp(-lam)))

    def log_snr_from_log_std(self, log_sigma):
        # alpha^2 = 1 - sigma
        return 0.5 * jnp.log1p(-jnp.exp(log_sigma)) - log_sigma

    @property
    def prior_std(self):
        return 1.0
