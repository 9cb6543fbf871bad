r"""The forward SDE, reverse-time SDE and probability-flow ODE as diffrax terms.

Sampling runs in the reversed time $s = T - t$, so that every diffrax solver steps forward
($t_0 < t_1$, $dt_0 > 0$): diffrax's stochastic Runge-Kutta solvers (SRA1, ShARK, SEA) are only
correct when stepping forward. In $s$, with $F(t, x) = f(t)x - \tfrac12 g(t)^2 \nabla\ln p_t(x)$:

- reverse SDE: $dx = [-f(t)x + g(t)^2 \nabla\ln p_t(x)]\,ds + g(t)\,dW_s$;
- PF-ODE: $dx/ds = -F(T - s, x)$.

The noise is additive ($g$ depends on $t$ only), so additive-noise SRK solvers apply. The SDE and
the score live inside the terms' pytrees (Equinox modules, not closures), so diffrax's adjoints
can differentiate through a score network's parameters.
"""

from typing import Any

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx

from ._custom_types import Scalar, ScoreFn
from ._score_calls import bind, checked_score, pf_drift
from ._sde import AbstractSDE


class BatchedScore(eqx.Module):
    """`score(t, x)` lifted to a batch `x` of shape `(batch, *data)` with `jax.vmap`; with
    per-sample conditioning `cond` (leading axis `batch`), sample `i` sees `score(t, x_i, cond_i)`."""

    score: ScoreFn
    cond: Any = None

    def __call__(self, t: Scalar, x):
        if self.cond is None:
            return jax.vmap(lambda xi: checked_score(self.score, t, xi))(x)
        return jax.vmap(lambda xi, ci: checked_score(bind(self.score, ci), t, xi))(x, self.cond)


def _reverse_time(sde: AbstractSDE, s: Scalar, origin: float | None = None):
    """The diffusion time $t = $ `origin` $- s$; `origin=None` means `sde.T` ($s = T - t$)."""
    return (sde.T if origin is None else origin) - s


class _ForwardDrift(eqx.Module):
    sde: AbstractSDE

    def __call__(self, t, x, args):
        return self.sde.drift(t, x)


class _Diffusion(eqx.Module):
    """$g(t)\\,I$ as a diagonal operator; `reversed` reads the time argument as $s$."""

    sde: AbstractSDE
    reversed: bool = eqx.field(static=True)
    origin: float | None = eqx.field(static=True, default=None)

    def __call__(self, time, x, args):
        t = _reverse_time(self.sde, time, self.origin) if self.reversed else time
        g = self.sde.diffusion(t).astype(jnp.result_type(x))
        return lx.DiagonalLinearOperator(jnp.broadcast_to(g, jnp.shape(x)))


class AbstractReversedField(eqx.Module):
    """A vector field of `score` in the reversed time $s$, with $t = $ `origin` $- s$."""

    sde: eqx.AbstractVar[AbstractSDE]
    score: eqx.AbstractVar[ScoreFn]
    origin: eqx.AbstractVar[float | None]

    def time(self, s):
        """The diffusion time $t$ of the reversed time $s$."""
        return _reverse_time(self.sde, s, self.origin)


class ReverseDrift(AbstractReversedField):
    r"""Drift of the reverse SDE in $s = T - t$: $-f(t)x + g(t)^2\,\mathrm{score}(t, x)$."""

    sde: AbstractSDE
    score: ScoreFn
    origin: float | None = eqx.field(static=True, default=None)

    def __call__(self, s, x, args):
        t = self.time(s)
        g2 = self.sde.diffusion(t) ** 2
        return -self.sde.drift(t, x) + g2 * checked_score(self.score, t, x)


class ProbabilityFlow(AbstractReversedField):
    r"""Vector field of the PF-ODE in $s = T - t$: $-F(t, x)$ with the shared
    `pf_drift` $F(t, x) = f(t)x - \tfrac12 g(t)^2\,\mathrm{score}(t, x)$."""

    sde: AbstractSDE
    score: ScoreFn
    origin: float | None = eqx.field(static=True, default=None)

    def __call__(self, s, x, args):
        return -pf_drift(self.sde, self.score, self.time(s), x)


def forward_terms(sde: AbstractSDE, brownian: dfx.AbstractBrownianPath) -> dfx.MultiTerm:
    r"""The noising SDE $dx = f(t)x\,dt + g(t)\,dw$ in the diffusion time $t$ ($0 \to T$).

    `brownian` must have the data's shape (e.g. `diffrax.VirtualBrownianTree`).
    """
    return dfx.MultiTerm(
        dfx.ODETerm(_ForwardDrift(sde)), dfx.ControlTerm(_Diffusion(sde, False), brownian)
    )


def reverse_terms(
    sde: AbstractSDE,
    score: ScoreFn,
    brownian: dfx.AbstractBrownianPath,
    *,
    origin: float | None = None,
) -> dfx.MultiTerm:
    r"""The reverse-time SDE in $s = T - t$ ($s$ from $0$ to $T - t_\varepsilon$).

    `diffrax.MultiTerm(ODETerm(drift), ControlTerm(diffusion, brownian))`; integrate it with any
    diffrax SDE solver stepping forward in $s$. `brownian` must span $[0, T - t_\varepsilon]$.

    `origin` sets $t = \text{origin} - s$ instead (default `sde.T`); `origin=0.0` gives
    $s = -t$, from $-T$ to $-t_\varepsilon$, which keeps full floating-point resolution near
    $t_\varepsilon$ when $T$ is large (EDM's $T = 80$ in float32). The samplers use it.
    """
    return dfx.MultiTerm(
        dfx.ODETerm(ReverseDrift(sde, score, origin)),
        dfx.ControlTerm(_Diffusion(sde, True, origin), brownian),
    )


def probability_flow_term(
    sde: AbstractSDE, score: ScoreFn, *, origin: float | None = None
) -> dfx.ODETerm:
    r"""`diffrax.ODETerm` of the PF-ODE in $s = T - t$: $dx/ds = -F(T - s, x)$.

    `origin`: as in [`scoresde.reverse_terms`][] ($t = \text{origin} - s$; default `sde.T`).
    """
    return dfx.ODETerm(ProbabilityFlow(sde, score, origin))
