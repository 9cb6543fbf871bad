r"""Fixed time grids for sampling, from $T$ down to $t_\varepsilon$, as values.

A grid is a small Equinox value ([`scoresde.AbstractTimeGrid`][]) that gives a sampler its times:

- [`scoresde.UniformGrid`][] (`"uniform"`): uniform in $t$.
- [`scoresde.LogSNRGrid`][] (`"log_snr"`): uniform in the half log-SNR $\lambda(t) = \ln(\alpha/\sigma)$.
- [`scoresde.KarrasGrid`][] (`"karras"`): the EDM $\rho$-schedule in the noise level
  $\tilde\sigma = \sigma/\alpha = e^{-\lambda}$: $\tilde\sigma_i^{1/\rho} = \tilde\sigma_{max}^{1/\rho}
  + \tfrac{i}{N}(\tilde\sigma_{min}^{1/\rho} - \tilde\sigma_{max}^{1/\rho})$, mapped back to $t$ with
  `log_snr_inverse` (for `EDMSDE`, $\tilde\sigma = t$).
- [`scoresde.ClippedLogSNRGrid`][] (`"clipped_log_snr"`): [`scoresde.clipped_log_snr_grid`][],
  uniform in $\lambda$ between two capped end steps; often the best grid for few-step
  exponential integrators on exact scores (see `benchmarks/fast_solvers.py`), but its long first
  step carries the network's error at $T$ (`benchmarks/default_grids.py`).

These compute their times for any `steps`. A sampler given no grid takes its solver's
(`AbstractPFSolver.default_grid`, uniform in $t$ for other solvers). A grid of given times (steps and `t_eps` implied)
subclasses [`scoresde.AbstractExplicitGrid`][]; a plain array of times passed as `grid=` is one.
The strings are aliases, turned into values by `as_time_grid` (the one place that does it).
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import check_positive, check_steps, check_t_eps, is_concrete
from ._sde import AbstractSDE


class AbstractTimeGrid(eqx.Module):
    r"""Where a fixed-step sampler evaluates: times $T = t_0 > t_1 > \dots > t_N = t_\varepsilon$.

    Concrete grids define `times_for(sde, steps, t_eps, dtype=None)`, the `steps + 1` times.
    """

    @abc.abstractmethod
    def times_for(
        self, sde: AbstractSDE, steps: int, t_eps, *, dtype=None
    ) -> Float[Array, " steps_plus_one"]:
        """`steps + 1` strictly decreasing times from `sde.T` to `t_eps` (both ends exact)."""


def _spaced_in_log_snr(sde, steps, t_eps, dtype, spacing):
    """Times whose half log-SNR is `spacing(u, lam_min, lam_max)` at `u = i / steps`."""
    steps = check_steps(steps)
    dtype = dtype or jnp.result_type(float)
    T, t_eps = jnp.asarray(sde.T, dtype), jnp.asarray(t_eps, dtype)
    u = jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    lam = spacing(u, sde.log_snr(T), sde.log_snr(t_eps))
    ts = sde.log_snr_inverse(lam).astype(dtype)
    return ts.at[0].set(T).at[-1].set(t_eps)


class UniformGrid(AbstractTimeGrid):
    r"""Uniform in $t$: $t_i = T + \tfrac{i}{N}(t_\varepsilon - T)$."""

    def times_for(self, sde, steps, t_eps, *, dtype=None):
        steps = check_steps(steps)
        dtype = dtype or jnp.result_type(float)
        T, t_eps = jnp.asarray(sde.T, dtype), jnp.asarray(t_eps, dtype)
        ts = T + jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype) * (t_eps - T)
        return ts.at[0].set(T).at[-1].set(t_eps)


class LogSNRGrid(AbstractTimeGrid):
    r"""Uniform in the half log-SNR: $\lambda_i = \lambda(T) + \tfrac{i}{N}(\lambda(t_\varepsilon)
    - \lambda(T))$, $t_i = \lambda^{-1}(\lambda_i)$."""

    def times_for(self, sde, steps, t_eps, *, dtype=None):
        return _spaced_in_log_snr(sde, steps, t_eps, dtype, lambda u, lo, hi: lo + u * (hi - lo))


class KarrasGrid(AbstractTimeGrid):
    r"""EDM's $\rho$-schedule (Karras et al. 2022, eq. 5) in the noise level
    $\tilde\sigma = \sigma/\alpha$: $\tilde\sigma_i^{1/\rho} = \tilde\sigma_{max}^{1/\rho} +
    \tfrac{i}{N}(\tilde\sigma_{min}^{1/\rho} - \tilde\sigma_{max}^{1/\rho})$.

    **Arguments:** `rho` $> 0$ (default 7; larger crowds the steps near $t_\varepsilon$).
    """

    rho: float = 7.0

    def __check_init__(self):
        check_positive("rho", self.rho)

    def times_for(self, sde, steps, t_eps, *, dtype=None):
        rho = self.rho

        def spacing(u, lam_min, lam_max):
            hi, lo = jnp.exp(-lam_min / rho), jnp.exp(-lam_max / rho)
            return -rho * jnp.log(hi + u * (lo - hi))

        return _spaced_in_log_snr(sde, steps, t_eps, dtype, spacing)


class ClippedLogSNRGrid(AbstractTimeGrid):
    """[`scoresde.clipped_log_snr_grid`][] as a grid value: uniform in $\\lambda$ between two
    capped end steps (`sigma_hi`, `sigma_lo` as there)."""

    sigma_hi: float = 4.0
    sigma_lo: float | None = None

    def __check_init__(self):
        check_positive("sigma_hi", self.sigma_hi)
        if self.sigma_lo is not None:
            check_positive("sigma_lo", self.sigma_lo)

    def times_for(self, sde, steps, t_eps, *, dtype=None):
        return clipped_log_snr_grid(
            sde, steps, t_eps=t_eps, sigma_hi=self.sigma_hi, sigma_lo=self.sigma_lo, dtype=dtype
        )


class AbstractExplicitGrid(AbstractTimeGrid):
    """A grid of given `times`, decreasing from `sde.T` to `t_eps`: the number of steps
    (`len(times) - 1`) and `t_eps` (the last time) are implied, so a sampler given one needs no
    `steps` and no `t_eps`."""

    times: eqx.AbstractVar[Float[Array, " steps_plus_one"]]

    @property
    def num_steps(self) -> int:
        """`len(times) - 1`."""
        return int(self.times.shape[0]) - 1

    def implied(self, sde: AbstractSDE, steps, t_eps) -> tuple[int, float | None]:
        """`(steps, t_eps)` of this grid for `sde`, checked against a sampler's `steps` and
        `t_eps` (either may be `None`); `t_eps` stays as given when the times are traced."""
        ts = self.times
        if ts.ndim != 1 or ts.shape[0] < 2:
            raise ValueError(f"grid must hold a 1-D array of >= 2 times; got shape {ts.shape}.")
        if steps is not None and steps != self.num_steps:
            raise ValueError(f"steps={steps} disagrees with the grid's {self.num_steps} steps.")
        if is_concrete(ts):
            host = np.asarray(ts, np.float64)
            if not np.all(np.diff(host) < 0):
                raise ValueError("grid must be strictly decreasing (from sde.T down to t_eps).")
            if abs(host[0] - sde.T) > 1e-6 * sde.T:
                raise ValueError(f"grid must start at sde.T = {sde.T}; got {float(host[0])}.")
            if t_eps is not None and abs(host[-1] - t_eps) > 1e-6 * abs(t_eps):
                raise ValueError(f"grid ends at {float(host[-1])} but t_eps={t_eps}.")
            t_eps = float(host[-1])
        return self.num_steps, t_eps

    def times_for(self, sde, steps, t_eps, *, dtype=None):
        if steps != self.num_steps:
            raise ValueError(f"steps={steps} disagrees with the grid's {self.num_steps} steps.")
        return self.times.astype(dtype or jnp.result_type(float))


class GivenTimes(AbstractExplicitGrid):
    """Explicit `times` (an array passed as `grid=`), decreasing from `sde.T` to `t_eps`."""

    times: Float[Array, " steps_plus_one"] = eqx.field(converter=jnp.asarray)


def resolve_explicit(grid: AbstractTimeGrid, sde: AbstractSDE, steps, t_eps):
    """`(grid, steps, t_eps)` as a sampler runs them: a grid of given times implies `steps` and
    `t_eps` (checked against those given) and is reduced to its times, `GivenTimes` (its other
    fields, e.g. a [`scoresde.TimeGrid`][]'s provenance, are static and would compile the solve
    again for each grid); any other grid passes through."""
    if isinstance(grid, AbstractExplicitGrid):
        steps, t_eps = grid.implied(sde, steps, t_eps)
        grid = GivenTimes(grid.times)
    return grid, steps, t_eps


_ALIASES: dict[str, type[AbstractTimeGrid]] = {
    "uniform": UniformGrid,
    "log_snr": LogSNRGrid,
    "karras": KarrasGrid,
    "clipped_log_snr": ClippedLogSNRGrid,
}
GRIDS = tuple(_ALIASES)
"""The names accepted as aliases of the grid values."""


def as_time_grid(grid, *, name: str = "grid") -> AbstractTimeGrid:
    """The grid value for `grid`: a [`scoresde.AbstractTimeGrid`][] as is, a name from `GRIDS`
    as its grid with default arguments, an array of times as `GivenTimes`."""
    if isinstance(grid, AbstractTimeGrid):
        return grid
    if isinstance(grid, str):
        if grid not in _ALIASES:
            raise ValueError(
                f"{name} must be a time grid (e.g. ss.KarrasGrid(rho=7.0)) or one of {GRIDS}; "
                f"got {name}={grid!r}."
            )
        return _ALIASES[grid]()
    if isinstance(grid, (jax.Array, np.ndarray, list, tuple)):
        return GivenTimes(jnp.asarray(grid))
    raise TypeError(
        f"{name} must be a time grid (e.g. ss.LogSNRGrid()), one of {GRIDS} or an array of "
        f"times; got {name}={grid!r}."
    )


def time_grid(
    sde: AbstractSDE,
    steps: int,
    *,
    t_eps,
    kind="uniform",
    rho: float | None = None,
    dtype=None,
):
    """`steps + 1` strictly decreasing times from `sde.T` to `t_eps` (both ends exact).

    **Arguments:**

    - `kind`: a grid value ([`scoresde.UniformGrid`][], [`scoresde.LogSNRGrid`][],
      [`scoresde.KarrasGrid`][], [`scoresde.ClippedLogSNRGrid`][], ...) or its name
      (`"uniform"`, `"log_snr"`, `"karras"`, `"clipped_log_snr"`).
    - `rho`: the exponent of `kind="karras"` (default 7); for a value, `KarrasGrid(rho=...)`.
    """
    steps = check_steps(steps)
    check_t_eps(t_eps, sde.T)
    grid = as_time_grid(kind, name="kind")
    if rho is not None:  # the exponent of the alias "karras" (other names ignore it, as before)
        check_positive("rho", rho)
        if not isinstance(kind, str):
            raise ValueError(
                f"rho applies to a grid named by a string; got rho={rho} with kind={kind!r} "
                "(a grid value carries its own: ss.KarrasGrid(rho=...))."
            )
        if isinstance(grid, KarrasGrid):
            grid = KarrasGrid(rho)
    return grid.times_for(sde, steps, t_eps, dtype=dtype)


def clipped_log_snr_grid(
    sde: AbstractSDE,
    steps: int,
    *,
    t_eps,
    sigma_hi: float = 4.0,
    sigma_lo: float | None = None,
    dtype=None,
):
    r"""`steps + 1` decreasing times from `sde.T` to `t_eps` for few-step exponential integrators.

    In the noise level $\tilde\sigma = \sigma/\alpha = e^{-\lambda}$: a first step from
    $\tilde\sigma(T)$ down to `sigma_hi`, steps uniform in $\lambda$ (geometric in
    $\tilde\sigma$) down to `sigma_lo`, and a last step to $\tilde\sigma(t_\varepsilon)$.
    Far above the data's scale and far below its smallest scale the data prediction
    $\hat x_0$ barely changes along the ODE, so exponential integrators (exact for constant
    $\hat x_0$) need few steps there. The end steps are capped at 4 and 1.7 times the inner
    step $h$ (so with many steps the grid tends to uniform in $\lambda$ and has no error floor):
    their lengths are $\min(\lambda(\text{sigma\_hi}) - \lambda(T), 4h)$ and
    $\min(\lambda(t_\varepsilon) - \lambda(\text{sigma\_lo}), 1.7h)$. The defaults suit data of
    scale $\sigma_{data} \approx 0.5$: `sigma_hi` $= 8\sigma_{data}$, `sigma_lo` $= 5\,
    \tilde\sigma(t_\varepsilon)$. Use it as `sample_ode(..., grid="clipped_log_snr")`.
    """
    steps = check_steps(steps)
    check_t_eps(t_eps, sde.T)
    check_positive("sigma_hi", sigma_hi)
    dtype = dtype or jnp.result_type(float)
    T = jnp.asarray(sde.T, dtype)
    t_eps = jnp.asarray(t_eps, dtype)
    lam_lo, lam_hi = sde.log_snr(T), sde.log_snr(t_eps)  # noisiest, cleanest
    lam_a = jnp.clip(-jnp.log(jnp.asarray(sigma_hi, dtype)), lam_lo, lam_hi)
    if sigma_lo is None:
        lam_b = lam_hi - math.log(5.0)
    else:
        check_positive("sigma_lo", sigma_lo)
        lam_b = -jnp.log(jnp.asarray(sigma_lo, dtype))
    lam_b = jnp.clip(lam_b, lam_a, lam_hi)
    if steps <= 2:
        lam = jnp.linspace(lam_lo, lam_hi, steps + 1, dtype=dtype)
    else:
        first, last, total = lam_a - lam_lo, lam_hi - lam_b, lam_hi - lam_lo

        def length(h):
            return jnp.minimum(first, 4 * h) + jnp.minimum(last, 1.7 * h) + (steps - 2) * h

        lo, hi = jnp.zeros_like(total), total / (steps - 2)
        for _ in range(60):  # bisection for the inner step h: length(h) = total
            mid = 0.5 * (lo + hi)
            too_long = length(mid) > total
            lo, hi = jnp.where(too_long, lo, mid), jnp.where(too_long, mid, hi)
        h = 0.5 * (lo + hi)
        start = lam_lo + jnp.minimum(first, 4 * h)
        inner = start + h * jnp.arange(steps - 1, dtype=dtype)
        lam = jnp.concatenate([lam_lo[None], inner, lam_hi[None]])
    ts = sde.log_snr_inverse(lam).astype(dtype)
    return ts.at[0].set(T).at[-1].set(t_eps)
