r"""The discrete DDPM chain as a VP SDE, exact at its grid points (`DDPMSDE`)."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._checks import check_positive, is_concrete
from .base import AbstractSDE
from .variance_preserving import vp_log_snr_from_log_std


class _BetaTable:
    """A fixed discrete schedule held as float64 NumPy (hashable, so a static field: never traced,
    never a trainable leaf). `B[n] = -ln alpha_bar_n` for n = 0..N and `rates[n] = -ln(1 - betas[n])`."""

    def __init__(self, betas: np.ndarray):
        self.betas = betas
        with np.errstate(all="ignore"):
            self.rates = -np.log1p(-betas)
        self.B = np.concatenate([[0.0], np.cumsum(self.rates)])

    def __hash__(self):
        return hash(self.betas.tobytes())

    def __eq__(self, other):
        return isinstance(other, _BetaTable) and np.array_equal(self.betas, other.betas)

    def __repr__(self):
        b = self.betas
        if b.size == 0:
            return "<0 betas>"
        return f"<{b.size} betas from {b[0]:.4g} to {b[-1]:.4g}>"


class DDPMSDE(AbstractSDE):
    r"""The discrete DDPM chain (Ho et al., 2020) as a VP SDE on $[0, 1]$, exact at its grid points.

    With $N$ betas $\beta_1, \dots, \beta_N$ and $\bar\alpha_n = \prod_{i \le n}(1 - \beta_i)$, the
    marginals at $t_n = n/N$ are those of the chain: $\alpha(t_n)^2 = \bar\alpha_n$,
    $\sigma(t_n)^2 = 1 - \bar\alpha_n$. Between grid points $\ln\bar\alpha$ is interpolated
    linearly in $t$, so the continuous rate is piecewise constant,
    $\beta(t) = -N \ln(1 - \beta_n)$ on $t \in (t_{n-1}, t_n]$ (not $N\beta_n$, its first-order
    approximation), with $f = -\beta(t)/2$, $g^2 = \beta(t)$, $\alpha = \bar\alpha(t)^{1/2}$,
    $\sigma^2 = 1 - \bar\alpha(t)$. Prior $N(0, I)$; the default end time `t_eps` is
    $t_1 = 1/N$, the chain's first noisy step. As $\beta(t)$ jumps at every $t_n$, an adaptive
    ODE solve is accurate only if it steps onto the jumps (`jump_ts` of
    `diffrax.PIDController`; in `sample_ode`'s solver time $s = -t$ they are $-t_n$).

    **Arguments:**

    - `betas`: the $N$ per-step variances, each in $(0, 1)$ (e.g. a diffusers or improved-DDPM
      schedule). When omitted, DDPM's linear schedule
      $\beta_n$ = `linspace(beta_start, beta_end, num_steps)`.
    - `num_steps`, `beta_start`, `beta_end`: the linear schedule (defaults 1000, $10^{-4}$,
      $0.02$); only without `betas`.
    """

    table: _BetaTable = eqx.field(static=True)

    def __init__(self, betas=None, num_steps=None, beta_start=None, beta_end=None):
        if betas is None:
            num_steps = 1000 if num_steps is None else num_steps
            beta_start = 1e-4 if beta_start is None else beta_start
            beta_end = 2e-2 if beta_end is None else beta_end
            if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)):
                raise TypeError(f"num_steps must be a positive int; got num_steps={num_steps!r}.")
            if num_steps < 1:
                raise ValueError(f"num_steps must be >= 1; got num_steps={num_steps}.")
            check_positive("beta_start", beta_start)
            check_positive("beta_end", beta_end)
            betas = np.linspace(float(beta_start), float(beta_end), int(num_steps))
        elif num_steps is not None or beta_start is not None or beta_end is not None:
            raise TypeError(
                "DDPMSDE takes either betas or (num_steps, beta_start, beta_end), not both."
            )
        if not is_concrete(betas):
            raise TypeError("betas must be concrete (a fixed schedule), not a traced array.")
        self.table = _BetaTable(np.array(betas, dtype=np.float64))

    def __check_init__(self):
        b = self.table.betas
        if b.ndim != 1 or b.size == 0:
            raise ValueError(f"betas must be a non-empty 1-D array; got shape {b.shape}.")
        if not (np.all(np.isfinite(b)) and np.all(b > 0) and np.all(b < 1)):
            bad = b[~((b > 0) & (b < 1))]
            raise ValueError(f"betas must all lie in (0, 1); got values such as {bad[:3]}.")

    @property
    def betas(self) -> np.ndarray:
        """The discrete schedule $\\beta_1, \\dots, \\beta_N$ (float64)."""
        return self.table.betas.copy()

    @property
    def num_steps(self) -> int:
        """$N$, the number of steps of the discrete chain."""
        return self.table.betas.size

    @property
    def T(self):
        return 1.0

    @property
    def default_t_eps(self):
        return 1.0 / self.num_steps

    def _segment(self, t):
        """`(B(t), rate)` with $B = -\\ln\\bar\\alpha(t)$ and `rate` $= -\\ln(1 - \\beta_n)$ on
        the segment $(t_{n-1}, t_n]$ holding t: at a grid point, the segment to its left, which
        a step going backward in time from $t_n$ covers. $B$ is continuous, so only the rate
        depends on this choice."""
        dtype = jnp.result_type(t, float)
        u = jnp.asarray(t, dtype) * self.num_steps
        n = jnp.clip(jnp.ceil(u) - 1, 0, self.num_steps - 1).astype(jnp.int32)
        rate = jnp.asarray(self.table.rates, dtype)[n]
        return jnp.asarray(self.table.B, dtype)[n] + (u - n.astype(dtype)) * rate, rate

    def drift_coeff(self, t):
        return -0.5 * self.num_steps * self._segment(t)[1]

    def diffusion(self, t):
        return jnp.sqrt(self.num_steps * self._segment(t)[1])

    def marginal(self, t):
        B = self._segment(t)[0]
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def log_snr(self, t):
        return -0.5 * jnp.log(jnp.expm1(self._segment(t)[0]))

    def log_snr_inverse(self, lam):
        dtype = jnp.result_type(lam, float)
        B = jnp.logaddexp(0.0, -2 * jnp.asarray(lam, dtype))
        table = jnp.asarray(self.table.B, dtype)
        n = jnp.clip(jnp.searchsorted(table, B, side="right") - 1, 0, self.num_steps - 1)
        rate = jnp.asarray(self.table.rates, dtype)[n]
        return (n.astype(dtype) + (B - table[n]) / rate) / self.num_steps

    def log_snr_from_log_std(self, log_sigma):
        return vp_log_snr_from_log_std(log_sigma)

    @property
    def prior_std(self):
        return 1.0
