r"""The exponential (Ozaki) Langevin step: Langevin dynamics linearised at the current point.

With $s = \nabla\ln p$ and $J = \partial s/\partial x$ (symmetric: the Hessian of $\ln p$) at the
current $x$, the Langevin SDE $dx = s\,dt + \sqrt2\,dW$ with $s$ replaced by its linearisation
$s(x) + J(y - x)$ is an Ornstein-Uhlenbeck process whose law after time $h$ is Gaussian:

$$x' \sim N\big(x + (e^{hJ} - I)J^{-1}s(x),\; -J^{-1}(I - e^{2hJ})\big).$$

With $J = Q\,\mathrm{diag}(\lambda)Q^\top$ both are spectral functions,
$\varphi_1(\lambda) = \mathrm{expm1}(h\lambda)/\lambda$ and
$\varphi_2(\lambda) = \mathrm{expm1}(2h\lambda)/\lambda$, with their limits $h$ and $2h$ at
$\lambda \to 0$ (positive for every $\lambda$, so the covariance is always valid). For a
Gaussian target the linearisation is exact, and so is the step at any $h$: the exact
transition of the Langevin diffusion, whose law tends to the target as $h \to \infty$ (one step
from anywhere). With `adjusted=True` the proposal is accepted with the Metropolis-Hastings ratio
of these Gaussian proposal densities (each with the Jacobian at its own start point).

$J$ is either exact (`jax.jacfwd`: $d$ JVPs, counted as $2d$ score evaluations, at every new
point) or a fixed estimate of the Hessian of $-\ln p$ from [`scoresde.lanczos_curvature`][]:
$J = -(\theta_{k+1}I + U\,\mathrm{diag}(\theta - \theta_{k+1})U^\top)$, costing nothing per step.
"""

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .kernels import AbstractStepSizeKernel, LangevinInfo, _call_score, _check_step_size
from .lanczos import LanczosCurvature

__all__ = ["OzakiLangevin", "OzakiState"]


class OzakiState(NamedTuple):
    """The sample `x`, its score and log-density (0 when unadjusted), and the spectrum of $J$ at
    `x`: eigenvalues `lam`, eigenvectors `q` (columns; `k < dim` of them for a fixed low-rank
    curvature, whose remaining eigenvalue is the kernel's)."""

    x: Array
    score: Array
    log_prob: Array
    lam: Array
    q: Array


def _phi(lam, h, mult):
    """$\\mathrm{expm1}(m h\\lambda)/\\lambda$, $= mh$ at $\\lambda = 0$ (series below 1e-8)."""
    z = mult * h * lam
    small = jnp.abs(z) < 1e-8
    safe = jnp.where(small, 1.0, lam)
    return jnp.where(small, mult * h * (1 + z / 2), jnp.expm1(z) / safe)


class OzakiLangevin(AbstractStepSizeKernel):
    r"""Exponential (Ozaki) Langevin kernel (see the module docstring).

    **Arguments:**

    - `score`: $\nabla\ln p$ on one sample.
    - `step_size`: $h > 0$.
    - `log_prob`: $\ln p$ up to a constant (needed with `adjusted=True`).
    - `adjusted`: Metropolis-Hastings correction (default `False`).
    - `curvature`: `None` (default): the exact Jacobian by `jax.jacfwd` at every point; or a
      [`scoresde.LanczosCurvature`][]: a fixed low-rank-plus-constant Hessian estimate.

    Cost per chain ([`scoresde.AbstractLangevinKernel.nfe`][]): one score (and `log_prob`)
    evaluation per point, plus $2d$ for the exact Jacobian there: $(1 + 2d)$ at `init` and per step;
    1 with a fixed `curvature`.
    """

    score: Callable
    step_size: Array = eqx.field(converter=jnp.asarray)
    log_prob: Callable | None = None
    adjusted: bool = eqx.field(static=True, default=False)
    curvature: LanczosCurvature | None = None

    def __check_init__(self):
        _check_step_size(self.step_size)
        if self.adjusted and self.log_prob is None:
            raise ValueError("adjusted=True needs log_prob (ln p up to a constant).")

    def is_adjusted(self) -> bool:
        return self.adjusted

    def nfe(self, x, num_steps: int) -> int:
        r"""$(1 + 2d)(1 + \text{num\_steps})$ for the exact Jacobian ($d$ = `x.size`),
        $1 + \text{num\_steps}$ with a fixed `curvature`."""
        per_point = 1 + (0 if self.curvature is not None else 2 * int(jnp.size(x)))
        return per_point * (1 + int(num_steps))

    def _evaluate(self, x):
        """Score, log-density and the spectrum of $J$ at the flat sample `x` (reshaped by the
        caller)."""
        g = _call_score(self.score, x)
        lp = (
            jnp.asarray(jnp.sum(self.log_prob(x)), x.dtype)
            if self.log_prob is not None
            else jnp.zeros((), x.dtype)
        )
        if self.curvature is not None:
            c = self.curvature
            lam = (-c.eigvals).astype(x.dtype)
            q = c.eigvecs.astype(x.dtype)
        else:
            flat = x.reshape(-1)
            jac = jax.jacfwd(lambda y: _call_score(self.score, y.reshape(x.shape)).reshape(-1))(
                flat
            )
            lam, q = jnp.linalg.eigh(0.5 * (jac + jac.T))
        return g, lp, lam, q

    def _rest(self, dtype):
        """The eigenvalue of $J$ off the columns of `q` (a fixed curvature's $-\\theta_{k+1}$)."""
        if self.curvature is None:
            return jnp.zeros((), dtype)
        return (-self.curvature.floor).astype(dtype)

    def _spectral(self, fn, lam, q, v):
        """$f(J)v$ for the flat `v`, with $f$ = `fn` on the eigenvalues."""
        rest = self._rest(v.dtype)
        coef = q.T @ v
        out = q @ (fn(lam) * coef)
        if self.curvature is not None:
            out = out + fn(rest) * (v - q @ coef)
        return out

    def _moments(self, state):
        """The proposal's mean (flat) and the functions of $J$ at `state`."""
        h = self.step_size.astype(state.x.dtype)
        flat = state.x.reshape(-1)
        mean = flat + self._spectral(
            lambda lam: _phi(lam, h, 1), state.lam, state.q, state.score.reshape(-1)
        )
        return mean, h

    def transition(self, x) -> tuple[Array, Array]:
        """The proposal's mean `(dim,)` and dense covariance `(dim, dim)` from `x` (diagnostics
        and tests; flattened sample)."""
        state = self.init(x)
        mean, h = self._moments(state)
        eye = jnp.eye(mean.shape[0], dtype=mean.dtype)
        cov = jax.vmap(
            lambda e: self._spectral(lambda lam: _phi(lam, h, 2), state.lam, state.q, e)
        )(eye)
        return mean, cov

    def init(self, x) -> OzakiState:
        x = jnp.asarray(x)
        return OzakiState(x, *self._evaluate(x))

    def _log_q(self, a, b_state, mean_b, h):
        """$\\ln N(a; \\text{mean}_b, \\varphi_2(J_b))$ up to a constant (flat `a`)."""
        r = a - mean_b
        quad = jnp.sum(
            r * self._spectral(lambda lam: 1 / _phi(lam, h, 2), b_state.lam, b_state.q, r)
        )
        log_det = jnp.sum(jnp.log(_phi(b_state.lam, h, 2)))
        if self.curvature is not None:
            k = b_state.q.shape[1]
            log_det = log_det + (a.shape[0] - k) * jnp.log(_phi(self._rest(a.dtype), h, 2))
        return -0.5 * quad - 0.5 * log_det

    def step(self, key, state: OzakiState) -> tuple[OzakiState, LangevinInfo]:
        x = state.x
        mean, h = self._moments(state)
        z = jr.normal(key if not self.adjusted else jr.split(key)[0], mean.shape, x.dtype)
        noise = self._spectral(lambda lam: jnp.sqrt(_phi(lam, h, 2)), state.lam, state.q, z)
        prop = (mean + noise).reshape(x.shape).astype(x.dtype)
        new = OzakiState(prop, *self._evaluate(prop))
        if not self.adjusted:
            one = jnp.ones((), x.dtype)
            return new, LangevinInfo(one, jnp.array(True))
        mean_new, _ = self._moments(new)
        log_ratio = (
            new.log_prob
            - state.log_prob
            + self._log_q(x.reshape(-1), new, mean_new, h)
            - self._log_q(prop.reshape(-1), state, mean, h)
        )
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accepted = jnp.log(jr.uniform(jr.split(key)[1], (), x.dtype)) < log_ratio
        out = jax.tree.map(lambda a, b: jnp.where(accepted, a, b), new, state)
        return out, LangevinInfo(accept_prob.astype(x.dtype), accepted)
