r"""The probability-flow vector fields the likelihood, encoding and decoding integrate.

In an integration variable $u$ (see `integration_variable.py`), with $F$ the PF-ODE drift
`pf_drift` (`scoresde/_score_calls.py`, the very function sampling integrates):

- `AugmentedFlow`: $d[x, \delta]/du = [F(t, x), \nabla\cdot F(t, x)]\,dt/du$ on one sample, the
  divergence estimated with probes fixed along the trajectory;
- `SharedFlow`: the same on a whole batch at one $u$ (one solve for the batch);
- `Flow`: $dx/du = \pm F(t(\pm u), x)\,dt/du$, forwards (encoding) or backwards (decoding).
"""

import equinox as eqx
import jax

from .._custom_types import ScoreFn
from .._score_calls import pf_drift
from .._sde import AbstractSDE
from .divergence import AbstractDivergence
from .integration_variable import AbstractIntegrationVariable


class AugmentedFlow(eqx.Module):
    r"""$d[x, \delta]/du = [F(t, x), \nabla\cdot F(t, x)]\,dt/du$ with fixed probes."""

    sde: AbstractSDE
    score: ScoreFn
    divergence: AbstractDivergence
    variable: AbstractIntegrationVariable
    probes: object

    def __call__(self, u, y, args):
        x, _ = y
        t, dtdu = self.variable.t_of_u(self.sde, u)
        fx, est = self.divergence(lambda z: pf_drift(self.sde, self.score, t, z), x, self.probes)
        return fx * dtdu.astype(x.dtype), est * dtdu.astype(x.dtype)


class SharedFlow(eqx.Module):
    """`AugmentedFlow` on the whole batch at one `u` (batched state and probes)."""

    sde: AbstractSDE
    score: ScoreFn
    divergence: AbstractDivergence
    variable: AbstractIntegrationVariable
    probes: object

    def __call__(self, u, y, args):
        def one(yi, pi):
            flow = AugmentedFlow(self.sde, self.score, self.divergence, self.variable, pi)
            return flow(u, yi, args)

        return jax.vmap(one)(y, self.probes)


class Flow(eqx.Module):
    r"""$dx/du = \pm F(t(\pm u), x)\,dt/du$: `sign = -1` runs the flow backwards (decoding)."""

    sde: AbstractSDE
    score: ScoreFn
    variable: AbstractIntegrationVariable
    sign: int = eqx.field(static=True)

    def __call__(self, u, x, args):
        t, dtdu = self.variable.t_of_u(self.sde, self.sign * u)
        return pf_drift(self.sde, self.score, t, x) * (self.sign * dtdu).astype(x.dtype)
