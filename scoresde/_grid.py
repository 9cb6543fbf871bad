r"""Fixed time grids for sampling, from $T$ down to $t_\varepsilon$.

- `"uniform"`: uniform in $t$.
- `"log_snr"`: uniform in the half log-SNR $\lambda(t) = \ln(\alpha/\sigma)$.
- `"karras"`: the EDM $\rho$-schedule in the noise level $\tilde\sigma = \sigma/\alpha = e^{-\lambda}$:
  $\tilde\sigma_i^{1/\rho} = \tilde\sigma_{max}^{1/\rho} + \tfrac{i}{N}(\tilde\sigma_{min}^{1/\rho} -
  \tilde\sigma_{max}^{1/\rho})$, mapped back to $t$ with `log_snr_inverse` (for `EDMSDE`,
  $\tilde\sigma = t$).
"""

import jax.numpy as jnp

from ._checks import check_steps
from ._sde import AbstractSDE

GRIDS = ("uniform", "log_snr", "karras")


def time_grid(
    sde: AbstractSDE, steps: int, *, t_eps, kind: str = "uniform", rho: float = 7.0, dtype=None
):
    """`steps + 1` strictly decreasing times from `sde.T` to `t_eps` (both ends exact).

    **Arguments:**

    - `kind`: `"uniform"`, `"log_snr"` or `"karras"` (see the module docstring).
    - `rho`: the exponent of the Karras schedule.
    """
    steps = check_steps(steps)
    if kind not in GRIDS:
        raise ValueError(f"grid must be one of {GRIDS}; got grid={kind!r}.")
    if not rho > 0:
        raise ValueError(f"rho must be > 0; got rho={rho}.")
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
