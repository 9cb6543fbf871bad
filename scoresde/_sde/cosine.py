r"""The cosine schedule of improved DDPM as a VP SDE (`CosineVPSDE`)."""

import math

import jax.numpy as jnp

from .._checks import check_positive, is_concrete
from .base import AbstractSDE
from .variance_preserving import vp_log_snr_from_log_std


class CosineVPSDE(AbstractSDE):
    r"""The cosine schedule of improved DDPM (Nichol & Dhariwal, 2021) as a VP SDE on $[0, T]$.

    With $\phi(t) = \frac{t + s}{1 + s}\frac{\pi}{2}$: $\alpha(t) = \cos\phi(t)/\cos\phi(0)$,
    $\sigma^2 = 1 - \alpha^2$, $f = -\beta(t)/2$, $g^2 = \beta(t)$ with
    $\beta(t) = -\frac{d}{dt}\ln\alpha^2 = \frac{\pi}{1 + s}\tan\phi(t)$. Prior $N(0, I)$.

    $\beta$ blows up at $t = 1$ ($\alpha(1) = 0$), so the SDE ends at `T` $< 1$ with the exact
    formulas, nothing clipped. The default `T = 0.9946` (the continuous-time cosine schedule of
    DPM-Solver) leaves $\alpha(T) \approx 8.4 \times 10^{-3}$ of the data (VPSDE leaves
    $6.7 \times 10^{-3}$), with $\beta(T) \approx 370$; raise `T` towards 1 to shrink the prior
    mismatch at the cost of a stiffer end. `s = 0` is allowed ($\beta(0) = 0$).
    """

    s: float = 0.008
    T: float = 0.9946

    def __check_init__(self):
        check_positive("s", self.s, strict=False)
        if is_concrete(self.T):
            v = float(self.T)
            if not (math.isfinite(v) and 0 < v < 1):
                raise ValueError(
                    f"CosineVPSDE needs 0 < T < 1 (beta is infinite at t = 1); got T={self.T!r}."
                )

    @property
    def _rate(self):
        # phi'(t) = pi / (2 (1 + s))
        return 0.5 * jnp.pi / (1 + self.s)

    def _angles(self, t):
        """`(delta, phi, phi0)` in the dtype of t: phi(t), phi(0) and delta = phi(t) - phi(0)."""
        dtype = jnp.result_type(t, float)
        t, s = jnp.asarray(t, dtype), jnp.asarray(self.s, dtype)
        return self._rate * t, self._rate * (t + s), self._rate * s

    def drift_coeff(self, t):
        return -self._rate * jnp.tan(self._angles(t)[1])

    def diffusion(self, t):
        return jnp.sqrt(2 * self._rate * jnp.tan(self._angles(t)[1]))

    def marginal(self, t):
        # sigma^2 = (cos^2 phi0 - cos^2 phi) / cos^2 phi0 = sin(delta) sin(phi + phi0) / cos^2 phi0,
        # with delta = phi - phi0 computed directly: no cancellation near t = 0.
        delta, phi, phi0 = self._angles(t)
        alpha = jnp.cos(phi) / jnp.cos(phi0)
        sigma = jnp.sqrt(jnp.sin(delta) * jnp.sin(phi + phi0)) / jnp.cos(phi0)
        return alpha, sigma

    def log_snr(self, t):
        delta, phi, phi0 = self._angles(t)
        return jnp.log(jnp.cos(phi)) - 0.5 * (
            jnp.log(jnp.sin(delta)) + jnp.log(jnp.sin(phi + phi0))
        )

    def log_snr_inverse(self, lam):
        # tan^2 phi = tan^2 phi0 + e^{-2 lam} / cos^2 phi0. With b = tan phi0, w = e^lam cos phi0 and
        # A = sqrt(1 + b^2 w^2) = w tan phi: tan(phi - phi0) = 1 / ((A + b w)(w + b A)), a form
        # with only positive terms (no cancellation) that tends to 0 as lam -> +inf.
        phi0 = self._angles(lam)[2]
        b = jnp.tan(phi0)
        w = jnp.exp(lam) * jnp.cos(phi0)
        A = jnp.hypot(1.0, b * w)
        return jnp.arctan2(1.0, (A + b * w) * (w + b * A)) / self._rate

    def log_snr_from_log_std(self, log_sigma):
        return vp_log_snr_from_log_std(log_sigma)

    @property
    def prior_std(self):
        return 1.0
