r"""Network times decoupled from the solver's times (LD3's second set of times).

A grid of given times may also give, for each of its times $t_i$, the time $t'_i$ at which the
network is asked: the solver, at $t_i$, is handed the network's noise prediction of $t'_i$ read as
the one of $t_i$,

$$\tilde s(t, x) = \frac{\sigma(t')}{\sigma(t)}\, s(t', x), \qquad
\lambda(t') = \lambda(t) + d(t),$$

with $d$ the offset in half log-SNR, piecewise linear in $t$ through $d_i = \lambda(t'_i) -
\lambda(t_i)$ (exact at the grid's nodes, where the multistep solvers ask; between them, where
single-step solvers also ask, interpolated), and $t'$ kept within the grid's $[t_\varepsilon, T]$,
where a network was trained. A grid may also give per-step scales $c_i > 0$ of the network's
output (the freedom of learned-coefficient solvers, one number a step):

$$\tilde s(t, x) = c(t)\,\frac{\sigma(t')}{\sigma(t)}\, s(t', x),$$

with $\ln c$ piecewise linear in $t$ through $\ln c_i$ as $d$ is. A tuner learns the $t'_i$
with the grid ([`scoresde.tune_grid`][] with `network_times=True`), and the $c_i$ too with
`network_scales=True`; every sampler given such a grid applies them (`on_network_times`), so a
saved grid samples as it was tuned.
"""

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._nfe import AbstractCostedScore, network_evals


class NetworkTimeScore(AbstractCostedScore):
    """`score` asked at the network times of a grid, scaled by its per-step scales if any:
    $\\tilde s$ of the module docstring. Costs what one call of `score` costs."""

    score: object
    sde: object
    times: Float[Array, " n"]
    offsets: Float[Array, " n"]  # d_i, half log-SNR
    log_scales: Float[Array, " n"] | None = None  # ln c_i

    @property
    def nfe_per_call(self) -> int:
        return network_evals(self.score)

    def __call__(self, t, x, *cond):
        offset = jnp.interp(t, self.times[::-1], self.offsets[::-1])  # times decrease
        t_net = shifted_time(self.sde, t, offset, self.times)
        _, sigma = self.sde.marginal(t)
        _, sigma_net = self.sde.marginal(t_net)
        factor = sigma_net / sigma
        if self.log_scales is not None:
            factor = factor * jnp.exp(jnp.interp(t, self.times[::-1], self.log_scales[::-1]))
        return (factor * self.score(t_net, x, *cond)).astype(x.dtype)


def shifted_time(sde, t, offset, times):
    r"""$t'$ with $\lambda(t') = \lambda(t) + $ `offset`, kept within `times`' $[t_\varepsilon,
    T]$ (where a network was trained)."""
    return jnp.clip(sde.log_snr_inverse(sde.log_snr(t) + offset), times[-1], times[0])


def offsets_of(sde, times, network_times):
    """$d_i = \\lambda(t'_i) - \\lambda(t_i)$."""
    return sde.log_snr(jnp.asarray(network_times)) - sde.log_snr(jnp.asarray(times))


def on_network_times(grid, sde, score):
    """`score` as a sampler given `grid` must call it: wrapped in `NetworkTimeScore` when the
    grid carries network times or scales (a [`scoresde.TimeGrid`][] tuned with them), else as
    it is."""
    network_times = getattr(grid, "network_times", None)
    network_scales = getattr(grid, "network_scales", None)
    if network_times is None and network_scales is None:
        return score
    times = jnp.asarray(grid.times)
    offsets = (
        jnp.zeros_like(times) if network_times is None else offsets_of(sde, times, network_times)
    )
    log_scales = None if network_scales is None else jnp.log(jnp.asarray(network_scales))
    return NetworkTimeScore(score, sde, times, offsets, log_scales)
