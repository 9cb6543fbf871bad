r"""Bits per dimension of integer data: `bits_per_dim` and the dequantisations it takes.

Integers $k \in \{0, \dots, L - 1\}^D$ are dequantised to $w = k + u$, $u \in [0, 1)^D$, and
mapped affinely to the model's range; a dequantisation is a value passed as `dequantization=`:

- [`scoresde.UniformDequantization`][]`()` (alias `"uniform"`): $u \sim U[0, 1)^D$;
- [`scoresde.AntitheticDequantization`][]`()` (alias `"antithetic"`): pairs $u, 1 - u$;
- [`scoresde.NoDequantization`][]`()` (alias `"none"`): $u = 1/2$, the bin centres.
"""

import abc
import math
from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int

from .._checks import check_steps, is_concrete
from .._custom_types import ScoreFn
from .._data import num_levels
from .._keys import sample_keys
from .._sde import AbstractSDE
from .._sharding import result_sharding
from .batching import AbstractSchedule
from .divergence import AbstractDivergence
from .integration_variable import AbstractIntegrationVariable
from .log_likelihood import (
    ADJOINT,
    ATOL,
    DIVERGENCE,
    MAX_STEPS,
    RTOL,
    SOLVER,
    T_EPS,
    VARIABLE,
    log_likelihood,
)


class AbstractDequantization(eqx.Module):
    r"""How integer data $k$ become continuous $w = k + u$ with $u \in [0, 1)^D$: `num_draws`
    draws of $u$ per sample, whose mean of $-\ln p_w(k + u)$ is the sample's figure."""

    stochastic: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def num_draws(self, num_repeats) -> int:
        """Draws per sample for `num_repeats`; raises `ValueError` naming it if unusable."""

    @abc.abstractmethod
    def offsets(self, key, batch: int, draws: int, data_shape, dtype) -> Array:
        """$u$ of shape `(batch, draws, *data_shape)`; sample `i` from `fold_in(key, i)`."""

    def units(self, per_draw: Array) -> Array:
        """The independent units among the `(batch, draws)` per-draw figures (default: the
        draws themselves); their spread gives the standard error."""
        return per_draw


class UniformDequantization(AbstractDequantization):
    r"""$u \sim U[0, 1)^D$ (alias `"uniform"`): $E_u[-\ln p_w(k + u)] \ge -\ln P(k)$ bounds
    the discrete model. Draw `r` of sample `i` from `fold_in(fold_in(key, i), r)`."""

    stochastic: ClassVar[bool] = True

    def num_draws(self, num_repeats):
        return check_steps(num_repeats)

    def offsets(self, key, batch, draws, data_shape, dtype):
        def one(ki):
            return jax.vmap(lambda r: jr.uniform(jr.fold_in(ki, r), data_shape, dtype))(
                jnp.arange(draws)
            )

        return jax.vmap(one)(sample_keys(key, batch))


class AntitheticDequantization(AbstractDequantization):
    r"""Pairs $u, 1 - u$ (alias `"antithetic"`; `num_repeats` even): each draw is still uniform,
    and the pair cancels the part of $\ln p_w$ that is linear across the bin (a lower-variance
    mean for the same solves). Draws `2j` and `2j + 1` of sample `i` share
    `fold_in(fold_in(key, i), j)`."""

    stochastic: ClassVar[bool] = True

    def num_draws(self, num_repeats):
        draws = check_steps(num_repeats)
        if draws % 2:
            raise ValueError(
                "dequantization='antithetic' draws pairs u, 1 - u: num_repeats must be even; "
                f"got num_repeats={num_repeats!r}."
            )
        return draws

    def offsets(self, key, batch, draws, data_shape, dtype):
        def draw(ki, r):
            u = jr.uniform(jr.fold_in(ki, r // 2), data_shape, dtype)
            return jnp.where(r % 2 == 1, 1 - u, u)

        return jax.vmap(lambda ki: jax.vmap(lambda r: draw(ki, r))(jnp.arange(draws)))(
            sample_keys(key, batch)
        )

    def units(self, per_draw):
        return per_draw.reshape(per_draw.shape[0], per_draw.shape[1] // 2, 2).mean(axis=2)


class NoDequantization(AbstractDequantization):
    r"""$u = 1/2$, the bin centres (alias `"none"`): one evaluation per sample (`num_repeats`
    is ignored), approximating $-\ln P(k)$ for densities smooth on the scale of a bin."""

    stochastic: ClassVar[bool] = False

    def num_draws(self, num_repeats):
        return 1

    def offsets(self, key, batch, draws, data_shape, dtype):
        return jnp.full((batch, draws, *data_shape), 0.5, dtype)


DEQUANTIZATIONS: dict[str, Callable[[], AbstractDequantization]] = {
    "uniform": UniformDequantization,
    "antithetic": AntitheticDequantization,
    "none": NoDequantization,
}


def as_dequantization(dequantization) -> AbstractDequantization:
    """`dequantization=` as a value: an [`scoresde.AbstractDequantization`][] or one of the
    aliases `"uniform"`, `"antithetic"`, `"none"`; `ValueError` for another string, `TypeError`
    for anything else, naming `dequantization`."""
    if isinstance(dequantization, AbstractDequantization):
        return dequantization
    if isinstance(dequantization, str) and dequantization in DEQUANTIZATIONS:
        return DEQUANTIZATIONS[dequantization]()
    raise (ValueError if isinstance(dequantization, str) else TypeError)(
        "dequantization must be ss.UniformDequantization(), ss.AntitheticDequantization(), "
        "ss.NoDequantization() or one of the aliases 'uniform', 'antithetic', 'none'; got "
        f"dequantization={dequantization!r}."
    )


class BitsPerDimResult(eqx.Module):
    r"""Bits per dimension and its components (see [`scoresde.bits_per_dim`][]).

    - `bpd`: per sample, $-\overline{\ln p_w(w)} / (D \ln 2)$.
    - `log_prob`: per sample, the model's $\ln p_x(x)$ (nats, mean over the repeats).
    - `log_det_jacobian`: $D \ln((\text{high} - \text{low}) / L)$ ($L$ = `levels`), the map
      $w \to x$.
    - `num_dims`: $D$. `stderr`: standard error of `bpd` over repeats (antithetic: over pairs)
      and probes (or `None`: one draw with one probe, or one antithetic pair).
    - `nfe`: score evaluations per sample, summed over repeats.
    """

    bpd: Float[Array, " batch"]
    log_prob: Float[Array, " batch"]
    log_det_jacobian: Float[Array, ""]
    num_dims: int = eqx.field(static=True)
    stderr: Float[Array, " batch"] | None
    nfe: Int[Array, " batch"]


def bits_per_dim(
    sde: AbstractSDE,
    score: ScoreFn,
    k,
    *,
    key=None,
    bits=None,
    levels=None,
    low: float = -1.0,
    high: float = 1.0,
    dequantization: AbstractDequantization | str = UniformDequantization(),
    num_repeats: int = 1,
    solver: dfx.AbstractSolver = SOLVER,
    rtol: float = RTOL,
    atol: float = ATOL,
    t_eps: float = T_EPS,
    divergence: AbstractDivergence = DIVERGENCE,
    prior_log_prob=None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    variable: AbstractIntegrationVariable | str = VARIABLE,
    dt0: float | None = None,
    max_steps: int = MAX_STEPS,
    adjoint: dfx.AbstractAdjoint = ADJOINT,
    throw: bool = True,
    lanes=None,
    progress: bool = False,
    nats_tol: float | None = None,
    schedule: AbstractSchedule | None = None,
    sharding=None,
    chunk_size: int | None = None,
) -> BitsPerDimResult:
    r"""Bits per dimension of integer data under the model, with an explicit data convention.

    Integers $k \in \{0, \dots, L - 1\}^D$ ($L$ = `levels`, any integer $\ge 2$) are dequantised
    to $w = k + u$ and mapped affinely to the model's range,
    $x = \text{low} + (\text{high} - \text{low})\,w / L$ (default $[-1, 1]$, so
    $x = 2(k + u)/L - 1$). With $\ln p_w(w) = \ln p_x(x) + D\ln((\text{high} - \text{low})/L)$,

    $$\text{bpd} = -\frac{\overline{\ln p_w(k + u)}}{D \ln 2},$$

    the mean over `num_repeats` draws of $u$. [`scoresde.UniformDequantization`][]`()` (alias
    `"uniform"`, the default): $u \sim U[0, 1)^D$, and the expectation bounds the discrete
    model: $E_u[-\ln p_w(k + u)] \ge -\ln P(k)$.
    [`scoresde.AntitheticDequantization`][]`()` (`"antithetic"`): the same expectation from
    pairs $u, 1 - u$ (`num_repeats` even): each draw is still uniform, and the pair cancels the
    part of $\ln p_w$ that is linear across the bin (a lower-variance mean for the same solves).
    [`scoresde.NoDequantization`][]`()` (`"none"`): $u = 1/2$ (bin centres, one evaluation;
    approximates $-\ln P(k)$ for densities smooth on the scale of a bin). For 8 bits ($L = 256$) and $[-1, 1]$ this is MATH.md's
    $-\ln p_x(x)/(D\ln 2) + 7$. The 8x8 digits have $L = 17$ grey levels (0..16); see
    "Bits per dimension" in the likelihood concepts page for how the two conventions compare.

    **Arguments:**

    - `k`: integer data `(batch, *data_shape)` in $[0, L - 1]$ (any integer or float dtype).
    - `key`: for the dequantisation noise (repeat `r` of sample `i`: `fold_in(fold_in(k1, i), r)`;
      antithetic: `r // 2`, and $1 - u$ for odd `r`) and the estimator's probes; needed unless
      `dequantization="none"` with an exact divergence.
    - `levels`: the number of integer levels $L \ge 2$ (e.g. 17 for the digits' 0..16).
    - `bits`: shorthand for `levels=2**bits` (an int in [1, 16]). Give `bits` or `levels`, or
      both if they agree; neither means 8 bits ($L = 256$).
    - `low`, `high`, `dequantization`, `num_repeats`: the data convention above.
    - `progress`: show a progress meter (see [`scoresde.log_likelihood`][]).
    - `sharding`, `chunk_size`: as in [`scoresde.log_likelihood`][] (over the `batch *
      num_repeats` dequantised draws; the per-sample results come back with `sharding`).
    - `solver`, `rtol`, `atol`, `t_eps`, `divergence`, `prior_log_prob`,
      `stepsize_controller`, `variable`, `dt0`, `max_steps`, `adjoint`, `throw`, `lanes`,
      `nats_tol`, `schedule`: those of [`scoresde.log_likelihood`][], with its defaults. With
      `schedule=SharedSteps()` the `batch * num_repeats` solves share one step sequence and
      each sample's `nfe` is `num_repeats` times that solve's.

    **Returns:** a [`scoresde.BitsPerDimResult`][] with `bpd`, `log_prob`, `log_det_jacobian`,
    `num_dims`, `stderr` and `nfe`.
    """
    dequantization = as_dequantization(dequantization)
    levels = num_levels(bits, levels)
    repeats = dequantization.num_draws(num_repeats)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"need finite low < high; got low={low}, high={high}.")
    k = jnp.asarray(k)
    if k.ndim < 2:
        raise ValueError(f"k has shape {k.shape}; expected (batch, *data_shape).")
    if is_concrete(k):
        kk = np.asarray(k)
        if not np.all(np.isfinite(kk) & (kk == np.round(kk))):
            raise ValueError("k must hold integers; got non-integer or non-finite entries.")
        if kk.size and (kk.min() < 0 or kk.max() > levels - 1):
            raise ValueError(
                f"k must hold integers in [0, {levels - 1}] for levels={levels}; got entries "
                f"in [{kk.min():g}, {kk.max():g}]."
            )
    if not isinstance(divergence, AbstractDivergence):
        raise TypeError(
            "divergence must be ExactDivergence(), Hutchinson(...) or EigenHutchinson(...); "
            f"got divergence={divergence!r}."
        )
    if key is None and (dequantization.stochastic or divergence.stochastic):
        raise ValueError(
            "key is None but bits_per_dim needs randomness (uniform dequantization or a "
            "stochastic divergence); pass key=jax.random.key(...)."
        )
    dtype = jnp.result_type(float)
    batch, data_shape = k.shape[0], k.shape[1:]
    num_dims = math.prod(data_shape)
    kf = k.astype(dtype)
    key_u, key_ll = jr.split(key) if dequantization.stochastic else (None, key)
    u = dequantization.offsets(key_u, batch, repeats, data_shape, dtype)
    w = kf[:, None] + u
    scale = (high - low) / levels
    x = (low + scale * w).reshape(batch * repeats, *data_shape)
    result = log_likelihood(
        sde,
        score,
        x,
        key=key_ll,
        solver=solver,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        divergence=divergence,
        prior_log_prob=prior_log_prob,
        stepsize_controller=stepsize_controller,
        variable=variable,
        dt0=dt0,
        max_steps=max_steps,
        adjoint=adjoint,
        throw=throw,
        lanes=lanes,
        progress=progress,
        nats_tol=nats_tol,
        schedule=schedule,
        sharding=sharding,
        chunk_size=chunk_size,
    )
    if sharding is not None:  # the per-draw numbers on every device; the means below follow
        everywhere = NamedSharding(sharding.mesh, PartitionSpec())
        result = eqx.tree_at(
            lambda r: (r.log_prob, r.stderr, r.nfe),
            result,
            replace_fn=lambda a: jax.device_put(a, everywhere),
            is_leaf=lambda a: a is None,
        )
    log_jac = jnp.asarray(num_dims * math.log(scale), dtype)
    log_px = result.log_prob.reshape(batch, repeats)
    per_draw = -(log_px + log_jac) / (num_dims * math.log(2))
    bpd = jnp.mean(per_draw, axis=1)
    n_est = divergence.num_estimates
    units = dequantization.units(per_draw)  # independent: the draws, or antithetic pairs' means
    if units.shape[1] > 1:  # their spread (includes the probe noise)
        stderr = jnp.std(units, axis=1, ddof=1) / math.sqrt(units.shape[1])
    elif n_est > 1 and units.shape[1] == repeats:  # one draw: the probes' error
        stderr = result.stderr / (num_dims * math.log(2))
    else:
        stderr = None
    out = BitsPerDimResult(
        bpd=bpd,
        log_prob=jnp.mean(log_px, axis=1),
        log_det_jacobian=log_jac,
        num_dims=num_dims,
        stderr=stderr,
        nfe=jnp.sum(result.nfe.reshape(batch, repeats), axis=1),
    )
    if sharding is not None:
        per_sample = result_sharding(sharding, batch)
        out = eqx.tree_at(
            lambda r: (r.bpd, r.log_prob, r.stderr, r.nfe),
            out,
            replace_fn=lambda a: jax.device_put(a, per_sample),
            is_leaf=lambda a: a is None,
        )
    return out
