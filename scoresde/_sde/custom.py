r"""A VP SDE from any integrated rate $B(t)$ (`CustomVPSDE`), with a numerical log-SNR inverse.

$B(t) = \int_0^t \beta$ gives everything: $\alpha = e^{-B/2}$, $\sigma^2 = -\operatorname{expm1}(-B)$,
$f = -B'/2$, $g^2 = B'$ and $\lambda = -\tfrac12 \ln\operatorname{expm1}(B)$. $B'$ comes from
`jax.grad`; $\lambda^{-1}$ solves $\ln B(e^v) = \ln B^*$ for $v = \ln t$ by safeguarded Newton
(exact in one step for any power law $B = c\,t^p$, so fast both near $t = 0$ and in the bulk),
and is differentiated by the implicit function theorem.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .._checks import is_concrete
from .base import AbstractSDE
from .variance_preserving import vp_log_snr_from_log_std

_MAX_NEWTON_ITERS = 100
_CHECK_POINTS = 9  # where B is checked at construction: 0, T/8, ..., T


def _log_target(lam):
    r"""$\ln B^*$ with $B^* = \ln(1 + e^{-2\lambda})$, the $B$ at which the half log-SNR is
    $\lambda$, without underflow for large $\lambda$ ($\ln B^* \approx -2\lambda$)."""
    pos = lam >= 0
    x = jnp.exp(-2 * jnp.where(pos, lam, 0.0))  # in (0, 1] on this branch
    ratio = jnp.where(x > 0, jnp.log1p(x) / jnp.where(x > 0, x, 1.0), 1.0)  # ln(1+x)/x
    neg_lam = jnp.where(pos, 0.0, lam)
    return jnp.where(
        pos,
        -2 * lam + jnp.log(ratio),
        jnp.log(-2 * neg_lam + jnp.log1p(jnp.exp(2 * neg_lam))),
    )


def _solve_time(sde, lam):
    r"""The $t \in (0, T]$ with $\lambda(t)$ = `lam` (one scalar), by Newton on
    $\varphi(v) = \ln B(e^v) - \ln B^*$ in $v = \ln t$, kept inside a bracket (bisection when
    a step leaves it). Steps multiply $t$ by $e^{\delta}$ rather than exponentiate $v$, so $t$
    keeps full relative precision however small it is. Below $\lambda(T)$ it returns $T$;
    above $\lambda(T\varepsilon^4)$ ($\varepsilon$ the dtype's epsilon) about
    $T\varepsilon^4$."""
    dtype = lam.dtype
    eps = float(jnp.finfo(dtype).eps)
    target = _log_target(lam)
    T = jnp.asarray(sde.T, dtype)
    # Rounding of ln B and of the target bounds how small a Newton step can get: stop there.
    floor = 4 * eps * (1 + jnp.abs(target))

    def cond(state):
        _, _, _, step, i = state
        return (i < _MAX_NEWTON_ITERS) & (jnp.abs(step) > floor)

    def body(state):
        t, lo, hi, _, i = state
        B, t_beta = jax.jvp(sde._integral_scalar, (t,), (t,))  # d ln B / d ln t = t beta / B
        f = jnp.log(B) - target
        v = jnp.log(t)
        lo = jnp.where(f <= 0, v, lo)  # f = -inf where B underflows: still below the root
        hi = jnp.where(f > 0, v, hi)
        delta = -f * B / t_beta
        inside = jnp.isfinite(delta) & (v + delta > lo) & (v + delta < hi)
        t_new = jnp.where(inside, t * jnp.exp(delta), jnp.exp(0.5 * (lo + hi)))
        step = jnp.where(inside, delta, jnp.inf)
        return t_new, lo, hi, step, i + 1

    log_T = jnp.log(T)
    init = (T, log_T + 4 * math.log(eps), log_T, jnp.asarray(jnp.inf, dtype), 0)
    t = jnp.minimum(jax.lax.while_loop(cond, body, init)[0], T)
    return jnp.where(jnp.isnan(lam), lam, t)  # NaN in, NaN out


@eqx.filter_custom_jvp
def _log_snr_inverse(sde, lam):
    return _solve_time(sde, lam)


@_log_snr_inverse.def_jvp
def _log_snr_inverse_jvp(primals, tangents):
    # Implicit function theorem on lambda(sde, t) = lam: dt = (dlam - d_sde lambda) / (dlambda/dt).
    sde, lam = primals
    d_sde, d_lam = tangents
    t = _log_snr_inverse(sde, lam)
    slope = jax.jvp(sde.log_snr, (t,), (jnp.ones_like(t),))[1]
    rhs = jnp.zeros_like(t) if d_lam is None else d_lam
    if any(leaf is not None for leaf in jax.tree_util.tree_leaves(d_sde)):
        rhs = rhs - eqx.filter_jvp(lambda s: s.log_snr(t), (sde,), (d_sde,))[1]
    return t, rhs / slope


class CustomVPSDE(AbstractSDE):
    r"""A VP SDE on $[0, T]$ from any differentiable integrated rate $B(t) = \int_0^t \beta$.

    $\alpha = e^{-B(t)/2}$, $\sigma^2 = 1 - e^{-B(t)}$, $f = -\beta(t)/2$, $g^2 = \beta(t)$ with
    $\beta = B'$ by `jax.grad`, and half log-SNR $\lambda = -\tfrac12\ln(e^{B} - 1)$. Its inverse
    has no closed form in general: it is solved by safeguarded Newton on $\ln B$ against
    $\ln t$ (to a few ulp; jittable, vmappable, and differentiable through the implicit function
    theorem, also with respect to array parameters of `integrated_beta`). Prior $N(0, I)$;
    default end time `t_eps` $= 10^{-3}\,T$.

    **Arguments:**

    - `integrated_beta`: $B$, a function of the time $t$ on this SDE's clock (a scalar), written
      with `jax.numpy` so that `jax.grad` applies; an Equinox module with array parameters is
      fine too. $B$ must be increasing with $B(0) = 0$; $B(T)$ of 10 or more leaves
      $\alpha(T) \le e^{-5}$ of the data in the prior. Checked at construction on
      $t = 0, T/8, \dots, T$ (when those values are concrete): `ValueError` otherwise.
    - `T`: the end time (default 1), finite and $> 0$.

    For example `CustomVPSDE(lambda t: t, T=10.0)` is $\beta = 1$ on $[0, 10]$ (the same SDE as
    `VPSDE(1.0, 1.0, T=10.0)`), and with $\phi(t) = \frac{t/T + s}{1 + s}\frac{\pi}{2}$,
    `lambda t: -2 * jnp.log(jnp.cos(phi(t)) / jnp.cos(phi(0)))` is the cosine schedule.
    A plain function is a static part of the module: two SDEs built from the same function
    object compile once under `equinox.filter_jit`.
    """

    integrated_beta: Callable[[Array], Array]
    T: float

    def __init__(self, integrated_beta: Callable[[Array], Array], *, T: float = 1.0):
        if not callable(integrated_beta):
            raise TypeError(
                "integrated_beta must be a function B(t) of the time (the integral of beta); "
                f"got {type(integrated_beta).__name__}."
            )
        self.integrated_beta = integrated_beta
        self.T = T

    def __check_init__(self):
        if not is_concrete(self.T) or not (math.isfinite(float(self.T)) and float(self.T) > 0):
            return  # AbstractSDE's check reports a bad T
        ts = jnp.linspace(0.0, float(self.T), _CHECK_POINTS)
        B = self._integral(ts)
        beta = self._beta(ts[1:])
        if not (is_concrete(B) and is_concrete(beta)):
            return  # B closes over traced parameters: nothing to check now
        B, beta = np.asarray(B, np.float64), np.asarray(beta, np.float64)
        where = f"at t = {np.asarray(ts, np.float64).round(6).tolist()}"
        if not (np.all(np.isfinite(B)) and np.all(np.isfinite(beta))):
            raise ValueError(
                f"integrated_beta must be finite with a finite derivative on (0, T]; {where} "
                f"it gives B = {B.tolist()} and B' = {beta.tolist()} (from the second point)."
            )
        if abs(B[0]) > 8 * float(jnp.finfo(ts.dtype).eps) * max(1.0, abs(B[-1])):
            raise ValueError(f"integrated_beta must vanish at t = 0 (B(0) = 0); got B(0)={B[0]}.")
        if not (np.all(np.diff(B) > 0) and np.all(beta >= 0)):
            raise ValueError(
                f"integrated_beta must be increasing on [0, T] (beta = B' >= 0); {where} it "
                f"gives B = {B.tolist()}."
            )

    def _integral_scalar(self, t):
        return jnp.asarray(self.integrated_beta(t), t.dtype)

    def _integral(self, t):
        t = jnp.asarray(t, jnp.result_type(t, float))
        return jnp.vectorize(self._integral_scalar)(t)

    def _beta(self, t):
        t = jnp.asarray(t, jnp.result_type(t, float))
        return jnp.vectorize(jax.grad(self._integral_scalar))(t)

    @property
    def default_t_eps(self):
        return 1e-3 * self.T

    def drift_coeff(self, t):
        return -0.5 * self._beta(t)

    def diffusion(self, t):
        return jnp.sqrt(self._beta(t))

    def marginal(self, t):
        B = self._integral(t)
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def log_snr(self, t):
        return -0.5 * jnp.log(jnp.expm1(self._integral(t)))

    def log_snr_inverse(self, lam):
        lam = jnp.asarray(lam, jnp.result_type(lam, float))
        return jnp.vectorize(lambda one: _log_snr_inverse(self, one))(lam)

    def log_snr_from_log_std(self, log_sigma):
        return vp_log_snr_from_log_std(log_sigma)

    @property
    def prior_std(self):
        return 1.0
