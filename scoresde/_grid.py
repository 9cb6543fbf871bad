r"""Fixed time grids for sampling, from $T$ down to $t_\varepsilon$.

- `"uniform"`: uniform in $t$.
- `"log_snr"`: uniform in the half log-SNR $\lambda(t) = \ln(\alpha/\sigma)$.
- `"karras"`: the EDM $\rho$-schedule in the noise level $\tilde\sigma = \sigma/\alpha = e^{-\lambda}$:
  $\tilde\sigma_i^{1/\rho} = \tilde\sigma_{max}^{1/\rho} + \tfrac{i}{N}(\tilde\sigma_{min}^{1/\rho} -
  \tilde\sigma_{max}^{1/\rho})$, mapped back to $t$ with `log_snr_inverse` (for `EDMSDE`,
  $\tilde\sigma = t$).
- `"clipped_log_snr"`: [`scoresde.clipped_log_snr_grid`][], uniform in $\lambda$ between two
  capped end steps; the best grid for few-step exponential integrators (see
  `benchmarks/fast_solvers.py`).
"""

import math

import jax.numpy as jnp

from ._checks import check_positive, check_steps
from ._sde import AbstractSDE

GRIDS = ("uniform", "log_snr", "karras", "clipped_log_snr")


def time_grid(
    sde: AbstractSDE, steps: int, *, t_eps, kind: str = "uniform", rho: float = 7.0, dtype=None
):
    """`steps + 1` strictly decreasing times from `sde.T` to `t_eps` (both ends exact).

    **Arguments:**

    - `kind`: `"uniform"`, `"log_snr"`, `"karras"` or `"clipped_log_snr"` (module docstring).
    - `rho`: the exponent of the Karras schedule.
    """
    steps = check_steps(steps)
    if kind not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}; got grid={kind!r}.")
    if not rho > 0:
        raise ValueError(f"rho must be > 0; got rho={rho}.")
    if kind == "clipped_log_snr":
        return clipped_log_snr_grid(sde, steps, t_eps=t_eps, dtype=dtype)
    dtype = dtype or jnp.result_type(float)
    T = jnp.asarray(sde.T, dtype)
    t_eps = jnp.asarray(t_eps, dtype)
    u = jnp.linspace(0.0, 1.0, steps + 1, dtype=dtype)
    if kind == "uniform":
        ts = T + u * (t_eps - T)
    else:
        lam_max, lam_min = sde.log_snr(t_eps), sde.log_snr(T)
        if kind == "log_snr":
            lam = lam_min + u * (lam_max - lam_min)
        else:
            hi, lo = jnp.exp(-lam_min / rho), jnp.exp(-lam_max / rho)
            lam = -rho * jnp.log(hi + u * (lo - hi))
        ts = sde.log_snr_inverse(lam).astype(dtype)
    return ts.at[0].set(T).at[-1].set(t_eps)


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
