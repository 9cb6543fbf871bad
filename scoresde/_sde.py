r"""Linear SDEs $dx = f(t)\,x\,dt + g(t)\,dw$ and their Gaussian transition kernels.

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
import numpy as np
from jaxtyping import Array

from ._checks import check_positive, is_concrete
from ._custom_types import Key, Sample, Scalar

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
        """The end time `t_eps` that samplers use when none is given."""
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


def _check_betas(name, beta_min, beta_max):
    check_positive("beta_min", beta_min, strict=False)
    check_positive("beta_max", beta_max)
    if is_concrete(beta_min) and is_concrete(beta_max) and not beta_min <= beta_max:
        raise ValueError(
            f"{name} needs 0 <= beta_min <= beta_max; got beta_min={beta_min}, beta_max={beta_max}."
        )


class _BetaSchedule(eqx.Module):
    r"""Linear $\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})$ and its integral $B(t)$."""

    beta_min: float
    beta_max: float

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integral(self, t):
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def integral_inverse(self, B):
        # Root of (bmax - bmin)/2 t^2 + bmin t - B = 0, in the cancellation-free form.
        d = self.beta_max - self.beta_min
        return 2 * B / (self.beta_min + jnp.sqrt(self.beta_min**2 + 2 * d * B))


def _vp_log_snr_from_log_std(log_sigma):
    # alpha^2 = 1 - sigma^2: alpha^2 / sigma^2 = expm1(-2 ln sigma)
    return 0.5 * jnp.log(jnp.expm1(-2 * log_sigma))


class VPSDE(AbstractSDE):
    r"""Variance-preserving SDE (DDPM in continuous time) on $[0, 1]$.

    $f = -\beta(t)/2$, $g^2 = \beta(t)$, $\alpha = e^{-B(t)/2}$, $\sigma^2 = 1 - e^{-B(t)}$, with
    $\beta(t) = \beta_{min} + t(\beta_{max} - \beta_{min})$ and $B(t) = \int_0^t \beta$.
    Prior $N(0, I)$.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    @property
    def T(self):
        return 1.0

    def __check_init__(self):
        _check_betas("VPSDE", self.beta_min, self.beta_max)

    @property
    def _schedule(self):
        return _BetaSchedule(self.beta_min, self.beta_max)

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
        return _vp_log_snr_from_log_std(log_sigma)

    @property
    def prior_std(self):
        return 1.0


class SubVPSDE(AbstractSDE):
    r"""Sub-VP SDE of Song et al. (2021) on $[0, 1]$.

    $f = -\beta(t)/2$, $g^2 = \beta(t)(1 - e^{-2B(t)})$, $\alpha = e^{-B(t)/2}$,
    $\sigma = 1 - e^{-B(t)}$. Prior $N(0, I)$.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    @property
    def T(self):
        return 1.0

    def __check_init__(self):
        _check_betas("SubVPSDE", self.beta_min, self.beta_max)

    @property
    def _schedule(self):
        return _BetaSchedule(self.beta_min, self.beta_max)

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


class VESDE(AbstractSDE):
    r"""Variance-exploding SDE on $[0, 1]$, starting from the data itself.

    With $s(t) = \sigma_{min} (\sigma_{max}/\sigma_{min})^t$: $f = 0$,
    $g^2 = 2 \ln(\sigma_{max}/\sigma_{min})\, s(t)^2$, $\alpha = 1$ and
    $\sigma(t)^2 = s(t)^2 - \sigma_{min}^2$, so $\sigma(0) = 0$. (The original score-SDE code
    instead treats $s(t)$ itself as the marginal std, i.e. data pre-blurred by $\sigma_{min}$.)
    Prior $N(0, \sigma_{max}^2 I)$.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    @property
    def T(self):
        return 1.0

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

    def drift_coeff(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(t, float)))

    def diffusion(self, t):
        log_ratio = self._log_ratio
        return self.sigma_min * jnp.exp(t * log_ratio) * jnp.sqrt(2 * log_ratio)

    def marginal(self, t):
        t = jnp.asarray(t, dtype=jnp.result_type(t, float))
        sigma = self.sigma_min * jnp.sqrt(jnp.expm1(2 * t * self._log_ratio))
        return jnp.ones_like(t), sigma

    def log_snr(self, t):
        return -jnp.log(self.sigma_min) - 0.5 * jnp.log(jnp.expm1(2 * t * self._log_ratio))

    def log_snr_inverse(self, lam):
        # sigma = exp(-lam)  =>  expm1(2 t ln r) = exp(-2 (lam + ln sigma_min))
        arg = jnp.exp(-2 * (lam + jnp.log(self.sigma_min)))
        return jnp.log1p(arg) / (2 * self._log_ratio)

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
        return _vp_log_snr_from_log_std(log_sigma)

    @property
    def prior_std(self):
        return 1.0


class _BetaTable:
    """A fixed discrete schedule held as float64 NumPy (hashable, so a static field: never traced,
    never a trainable leaf). `B[n] = -ln alpha_bar_n` for n = 0..N and `rates[n] = -ln(1 - betas[n])`."""

    def __init__(self, betas: np.ndarray):
        self.betas = betas
        with np.errstate(all="ignore"):
            self.rates = -np.log1p(-betas)
        self.B = np.concatenate([[0.0], np.cumsum(self.rates)])

    def __hash__(self):
        return hash(self.betas.tobytes())

    def __eq__(self, other):
        return isinstance(other, _BetaTable) and np.array_equal(self.betas, other.betas)

    def __repr__(self):
        b = self.betas
        if b.size == 0:
            return "<0 betas>"
        return f"<{b.size} betas from {b[0]:.4g} to {b[-1]:.4g}>"


class DDPMSDE(AbstractSDE):
    r"""The discrete DDPM chain (Ho et al., 2020) as a VP SDE on $[0, 1]$, exact at its grid points.

    With $N$ betas $\beta_1, \dots, \beta_N$ and $\bar\alpha_n = \prod_{i \le n}(1 - \beta_i)$, the
    marginals at $t_n = n/N$ are those of the chain: $\alpha(t_n)^2 = \bar\alpha_n$,
    $\sigma(t_n)^2 = 1 - \bar\alpha_n$. Between grid points $\ln\bar\alpha$ is interpolated
    linearly in $t$, so the continuous rate is piecewise constant,
    $\beta(t) = -N \ln(1 - \beta_n)$ on $t \in (t_{n-1}, t_n]$ (not $N\beta_n$, its first-order
    approximation), with $f = -\beta(t)/2$, $g^2 = \beta(t)$, $\alpha = \bar\alpha(t)^{1/2}$,
    $\sigma^2 = 1 - \bar\alpha(t)$. Prior $N(0, I)$; the default end time `t_eps` is
    $t_1 = 1/N$, the chain's first noisy step. As $\beta(t)$ jumps at every $t_n$, an adaptive
    ODE solve is accurate only if it steps onto the jumps (`jump_ts` of
    `diffrax.PIDController`; in `sample_ode`'s solver time $s = -t$ they are $-t_n$).

    **Arguments:**

    - `betas`: the $N$ per-step variances, each in $(0, 1)$ (e.g. a diffusers or improved-DDPM
      schedule). When omitted, DDPM's linear schedule
      $\beta_n$ = `linspace(beta_start, beta_end, num_steps)`.
    - `num_steps`, `beta_start`, `beta_end`: the linear schedule (defaults 1000, $10^{-4}$,
      $0.02$); only without `betas`.
    """

    table: _BetaTable = eqx.field(static=True)

    def __init__(self, betas=None, num_steps=None, beta_start=None, beta_end=None):
        if betas is None:
            num_steps = 1000 if num_steps is None else num_steps
            beta_start = 1e-4 if beta_start is None else beta_start
            beta_end = 2e-2 if beta_end is None else beta_end
            if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
                raise TypeError(f"num_steps must be a positive int; got num_steps={num_steps!r}.")
            if num_steps < 1:
                raise ValueError(f"num_steps must be >= 1; got num_steps={num_steps}.")
            check_positive("beta_start", beta_start)
            check_positive("beta_end", beta_end)
            betas = np.linspace(float(beta_start), float(beta_end), int(num_steps))
        elif num_steps is not None or beta_start is not None or beta_end is not None:
            raise TypeError(
                "DDPMSDE takes either betas or (num_steps, beta_start, beta_end), not both."
            )
        if not is_concrete(betas):
            raise TypeError("betas must be concrete (a fixed schedule), not a traced array.")
        self.table = _BetaTable(np.array(betas, dtype=np.float64))

    def __check_init__(self):
        b = self.table.betas
        if b.ndim != 1 or b.size == 0:
            raise ValueError(f"betas must be a non-empty 1-D array; got shape {b.shape}.")
        if not (np.all(np.isfinite(b)) and np.all(b > 0) and np.all(b < 1)):
            bad = b[~((b > 0) & (b < 1))]
            raise ValueError(f"betas must all lie in (0, 1); got values such as {bad[:3]}.")

    @property
    def betas(self) -> np.ndarray:
        """The discrete schedule $\\beta_1, \\dots, \\beta_N$ (float64)."""
        return self.table.betas.copy()

    @property
    def num_steps(self) -> int:
        """$N$, the number of steps of the discrete chain."""
        return self.table.betas.size

    @property
    def T(self):
        return 1.0

    @property
    def default_t_eps(self):
        return 1.0 / self.num_steps

    def _segment(self, t):
        """`(B(t), rate)` with $B = -\\ln\\bar\\alpha(t)$ and `rate` $= -\\ln(1 - \\beta_n)$ on
        the segment $(t_{n-1}, t_n]$ holding t: at a grid point, the segment to its left, which
        a step going backward in time from $t_n$ covers. $B$ is continuous, so only the rate
        depends on this choice."""
        dtype = jnp.result_type(t, float)
        u = jnp.asarray(t, dtype) * self.num_steps
        n = jnp.clip(jnp.ceil(u) - 1, 0, self.num_steps - 1).astype(jnp.int32)
        rate = jnp.asarray(self.table.rates, dtype)[n]
        return jnp.asarray(self.table.B, dtype)[n] + (u - n.astype(dtype)) * rate, rate

    def drift_coeff(self, t):
        return -0.5 * self.num_steps * self._segment(t)[1]

    def diffusion(self, t):
        return jnp.sqrt(self.num_steps * self._segment(t)[1])

    def marginal(self, t):
        B = self._segment(t)[0]
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def log_snr(self, t):
        return -0.5 * jnp.log(jnp.expm1(self._segment(t)[0]))

    def log_snr_inverse(self, lam):
        dtype = jnp.result_type(lam, float)
        B = jnp.logaddexp(0.0, -2 * jnp.asarray(lam, dtype))
        table = jnp.asarray(self.table.B, dtype)
        n = jnp.clip(jnp.searchsorted(table, B, side="right") - 1, 0, self.num_steps - 1)
        rate = jnp.asarray(self.table.rates, dtype)[n]
        return (n.astype(dtype) + (B - table[n]) / rate) / self.num_steps

    def log_snr_from_log_std(self, log_sigma):
        return _vp_log_snr_from_log_std(log_sigma)

    @property
    def prior_std(self):
        return 1.0
