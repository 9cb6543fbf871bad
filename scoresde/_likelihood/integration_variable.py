r"""The variable the probability-flow ODE is integrated in: values passed as `variable=`.

An integration variable $u$ increases with $t$; the ODE $dx/dt = F(t, x)$ becomes
$dx/du = F(t(u), x)\,dt/du$ on $[u(t_\varepsilon), u(T)]$ (the same path, other steps).

- [`scoresde.TimeVariable`][]`()` (alias `"t"`): $u = t$, the default (fewest steps measured).
- [`scoresde.LogSNRVariable`][]`()` (alias `"log_snr"`): $u = -\lambda(t)$, the negated half
  log-SNR $\lambda = \ln(\alpha/\sigma)$.
- [`scoresde.LogSigmaVariable`][]`()` (alias `"log_sigma"`): $u = \ln\sigma(t)$ (the same as
  `"log_snr"` for EDM); needs `sde.log_snr_from_log_std`.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .._sde import AbstractSDE


class AbstractIntegrationVariable(eqx.Module):
    r"""A variable $u$ increasing with $t$: `u_of_t(sde, t)` and `t_of_u(sde, u) -> (t, dt/du)`."""

    @abc.abstractmethod
    def u_of_t(self, sde: AbstractSDE, t):
        """The variable at time `t`."""

    @abc.abstractmethod
    def t_of_u(self, sde: AbstractSDE, u):
        """`(t, dt/du)` at `u`."""


class TimeVariable(AbstractIntegrationVariable):
    """$u = t$ (alias `"t"`)."""

    def u_of_t(self, sde, t):
        return t

    def t_of_u(self, sde, u):
        return u, jnp.ones_like(u)


def _time_from_log_snr(sde, lam_of_u, u):
    """`(t, dt/du)` for $t = \\lambda^{-1}(\\text{lam\\_of\\_u}(u))$, the derivative by a JVP."""
    return jax.jvp(lambda v: sde.log_snr_inverse(lam_of_u(v)), (u,), (jnp.ones_like(u),))


class LogSNRVariable(AbstractIntegrationVariable):
    r"""$u = -\lambda(t)$, the negated half log-SNR (alias `"log_snr"`)."""

    def u_of_t(self, sde, t):
        return -sde.log_snr(t)

    def t_of_u(self, sde, u):
        return _time_from_log_snr(sde, jnp.negative, u)


class LogSigmaVariable(AbstractIntegrationVariable):
    r"""$u = \ln\sigma(t)$ (alias `"log_sigma"`); needs `sde.log_snr_from_log_std`."""

    def u_of_t(self, sde, t):
        return jnp.log(sde.marginal(t)[1])

    def t_of_u(self, sde, u):
        return _time_from_log_snr(sde, sde.log_snr_from_log_std, u)


VARIABLES: dict[str, Callable[[], AbstractIntegrationVariable]] = {
    "t": TimeVariable,
    "log_snr": LogSNRVariable,
    "log_sigma": LogSigmaVariable,
}


def as_integration_variable(variable) -> AbstractIntegrationVariable:
    """`variable=` as a value: an [`scoresde.AbstractIntegrationVariable`][] or one of the
    aliases `"t"`, `"log_snr"`, `"log_sigma"`; `ValueError` for another string, `TypeError` for
    anything else, naming `variable`."""
    if isinstance(variable, AbstractIntegrationVariable):
        return variable
    if isinstance(variable, str) and variable in VARIABLES:
        return VARIABLES[variable]()
    raise (ValueError if isinstance(variable, str) else TypeError)(
        "variable must be ss.TimeVariable(), ss.LogSNRVariable(), ss.LogSigmaVariable() or one "
        f"of the aliases {tuple(VARIABLES)}; got variable={variable!r}."
    )
