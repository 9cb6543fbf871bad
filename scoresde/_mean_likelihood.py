r"""Mean log-likelihood of a data set with an error bar split into its sources.

$\hat\mu = \frac1n \sum_i L_i + \frac1m \sum_{j \in S} (L^\star_j - L_j)$: cheap solves $L_i$ on
all $n$ samples, tight re-solves $L^\star_j$ (the SAME probes) on a random subset $S$ of $m$
samples, whose mean difference corrects the cheap solves' bias (a two-level estimator). Its
variance is $\operatorname{Var}(L)/n + \operatorname{Var}(L^\star - L)/m
+ 2\operatorname{Cov}(L, L^\star - L)/n$, estimated from the samples; the target is
$E_{x \sim \text{data}}[\ln p_{t_\varepsilon}(x)]$, up to the tight solve's own error.
"""

import math

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.stats as jss
import numpy as np
from jaxtyping import Array, Float, Int

from ._checks import check_batch, check_int, check_key
from ._divergence import Hutchinson
from ._likelihood import log_likelihood


class MeanLogLikelihood(eqx.Module):
    r"""Result of [`scoresde.estimate_mean_log_likelihood`][] (nats per sample).

    - `mean`: the bias-corrected estimate $\hat\mu$; `low`, `high`: the `level` interval
      $\hat\mu \pm z\,$`stderr` (normal quantile $z$).
    - `stderr`: its total standard error, and its parts (in quadrature, up to the covariance
      term): `stderr_data` (the spread of $\ln p$ over the data), `stderr_probes` (the divergence
      estimator's noise: 0 for `ExactDivergence`, NaN with one stochastic probe, where it cannot
      be told apart from the data part, which then includes it) and `stderr_bias` (the standard
      error of the bias correction).
    - `bias_correction`: $\frac1m\sum_{j\in S}(L^\star_j - L_j)$; `cheap_mean`: $\frac1n\sum L_i$.
    - `log_prob`: the cheap per-sample $L_i$ (in the order of `x`); `tight_indices`: $S$;
      `tight_log_prob`: $L^\star_j$ on $S$.
    - `nfe`: score evaluations, cheap (per sample) and `tight_nfe` (per sample of $S$).
    """

    mean: Float[Array, ""]
    stderr: Float[Array, ""]
    low: Float[Array, ""]
    high: Float[Array, ""]
    level: float = eqx.field(static=True)
    stderr_data: Float[Array, ""]
    stderr_probes: Float[Array, ""]
    stderr_bias: Float[Array, ""]
    bias_correction: Float[Array, ""]
    cheap_mean: Float[Array, ""]
    log_prob: Float[Array, " batch"]
    tight_indices: Int[Array, " subset"]
    tight_log_prob: Float[Array, " subset"]
    nfe: Int[Array, " batch"]
    tight_nfe: Int[Array, " subset"]

    def bits_per_dim(self, num_dims: int, log_det_jacobian: float = 0.0):
        r"""`(bpd, stderr)`: $-(\hat\mu + \text{log\_det\_jacobian}) / (D\ln 2)$ for data whose
        density is taken in a space mapped affinely from $x$ (see [`scoresde.bits_per_dim`][]
        for the 8-bit convention; its `log_det_jacobian` goes here)."""
        scale = num_dims * math.log(2)
        return -(self.mean + log_det_jacobian) / scale, self.stderr / scale


def estimate_mean_log_likelihood(
    sde,
    score,
    x,
    *,
    key,
    num_tight: int | None = None,
    tight: dict | None = None,
    level: float = 0.95,
    **likelihood_kwargs,
) -> MeanLogLikelihood:
    r"""Mean log-likelihood of the data `x` (nats per sample) with a certified error bar.

    Solves every sample with [`scoresde.log_likelihood`][] and `likelihood_kwargs` (the cheap
    level), re-solves a random subset of `num_tight` samples (default $\min(n, \max(16, n/8))$)
    with the same probes and `likelihood_kwargs` updated by `tight` (default: `Dopri8`,
    `rtol = atol = 1e-9` in float64 or `1e-6` in float32, its default controller and first step), and corrects the
    cheap mean by the subset's mean difference; see [`scoresde.MeanLogLikelihood`][] for the
    parts of the error bar. Needs `num_tight >= 2` for the bias's standard error.

    - `key`: the subset and the probes (the cheap and tight solves of a sample share its probes).
    - `level`: the coverage of the interval `(low, high)`, in $(0, 1)$.
    """
    key = check_key(key)
    x = check_batch("x", x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x must hold at least 2 samples; got {n}.")
    m = min(n, max(16, n // 8)) if num_tight is None else check_int("num_tight", num_tight)
    if not 2 <= m <= n:
        raise ValueError(f"num_tight must be in [2, {n}] (the batch); got num_tight={m}.")
    if not (isinstance(level, float | int) and 0 < level < 1):
        raise ValueError(f"level must be in (0, 1); got level={level!r}.")
    if tight is None:
        tol = 1e-9 if x.dtype == jnp.float64 else 1e-6
        tight = dict(
            solver=dfx.Dopri8(),
            rtol=tol,
            atol=tol,
            nats_tol=None,
            stepsize_controller=None,
            dt0=None,
            max_steps=16384,
        )
    elif not isinstance(tight, dict):
        raise TypeError(f"tight must be a dict of log_likelihood arguments; got {tight!r}.")
    key_perm, key_ll = jr.split(key)
    perm = jr.permutation(key_perm, n)
    xp = x[perm]
    # Sample i of the permuted batch draws its probes from fold_in(key_ll, i) in both solves.
    cheap = log_likelihood(sde, score, xp, key=key_ll, **likelihood_kwargs)
    tight_res = log_likelihood(sde, score, xp[:m], key=key_ll, **{**likelihood_kwargs, **tight})
    dtype = cheap.log_prob.dtype
    L = cheap.log_prob
    d = tight_res.log_prob - L[:m]
    var_l = jnp.var(L, ddof=1)
    var_d = jnp.var(d, ddof=1)
    cov = jnp.sum((L[:m] - jnp.mean(L[:m])) * (d - jnp.mean(d))) / (m - 1)
    total = jnp.maximum(var_l / n + var_d / m + 2 * cov / n, 0.0)
    divergence = likelihood_kwargs.get("divergence", Hutchinson())
    if not divergence.stochastic:
        var_probes = jnp.zeros((), dtype)
    elif cheap.stderr is None:
        var_probes = jnp.full((), jnp.nan, dtype)
    else:
        var_probes = jnp.mean(cheap.stderr**2) / n
    var_data = var_l / n - jnp.nan_to_num(var_probes)
    mean = jnp.mean(L) + jnp.mean(d)
    stderr = jnp.sqrt(total)
    z = jss.norm.ppf(0.5 + level / 2).astype(dtype)
    inverse = np.argsort(np.asarray(perm))
    return MeanLogLikelihood(
        mean=mean,
        stderr=stderr,
        low=mean - z * stderr,
        high=mean + z * stderr,
        level=float(level),
        stderr_data=jnp.sqrt(jnp.maximum(var_data, 0.0)),
        stderr_probes=jnp.sqrt(var_probes),
        stderr_bias=jnp.sqrt(var_d / m),
        bias_correction=jnp.mean(d),
        cheap_mean=jnp.mean(L),
        log_prob=L[inverse],
        tight_indices=perm[:m],
        tight_log_prob=tight_res.log_prob,
        nfe=cheap.nfe[inverse],
        tight_nfe=tight_res.nfe,
    )
