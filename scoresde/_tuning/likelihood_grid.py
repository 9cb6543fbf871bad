r"""The likelihood ODE on a fixed time grid, as a differentiable function of the grid.

$\ln p_{t_\varepsilon}(x) = \ln p_T(x_T) + \int_{t_\varepsilon}^T \nabla\cdot F\,dt$ integrated
forward over the times of a grid (reversed: $t_\varepsilon \to T$) by a fixed-step explicit
diffrax solver, with the same probes as [`scoresde.log_likelihood`][] draws from the same key
(sample $i$ from `fold_in(key, i)`), so the two agree on a grid to rounding.
"""

import diffrax as dfx
import jax
import jax.numpy as jnp

from .._keys import sample_keys
from .._likelihood.vector_fields import AugmentedFlow
from .._nfe import evaluation_cost
from .._sampling.solve import _fixed_step_scan
from .._score_calls import pf_drift


def likelihood_probes(sde, score, divergence, x, key, t_eps):
    """The probes of every row of `x`, drawn as `log_likelihood` draws them."""
    keys = sample_keys(key, x.shape[0]) if key is not None else jnp.zeros((x.shape[0],), jnp.uint32)
    return jax.vmap(
        lambda xi, ki: divergence.init(ki, lambda z: pf_drift(sde, score, t_eps, z), xi)
    )(x, keys)


def log_likelihood_on_times(sde, score, solver, times, x, probes, divergence, variable,
                            prior_log_prob):  # fmt: skip
    r"""`(log_prob, nfe)` of the rows of `x` integrated over the fixed `times` ($T$ down to
    $t_\varepsilon$, integrated in reverse) in the integration `variable`."""
    u_grid = variable.u_of_t(sde, times[::-1]).astype(x.dtype)

    def one(xi, pi):
        term = dfx.ODETerm(AugmentedFlow(sde, score, divergence, variable, pi))
        y0 = (xi, jnp.zeros((divergence.num_estimates,), xi.dtype))
        (z, deltas), _, _ = _fixed_step_scan(solver, term, u_grid, y0)
        return prior_log_prob(z) + jnp.mean(deltas)

    log_prob = jax.vmap(one)(x, probes)
    term = dfx.ODETerm(AugmentedFlow(sde, score, divergence, variable, None))
    cost = evaluation_cost(solver, term, u_grid[0], None)
    steps = times.shape[0] - 1
    nfe = -1 if cost is None else cost.init + cost.per_step * steps + divergence.evals_at_init
    return log_prob, nfe
