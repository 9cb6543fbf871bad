r"""Step-size adaptation by dual averaging (Hoffman and Gelman 2014, section 3.2).

With $\delta$ the target acceptance probability, $\alpha_m$ the mean acceptance probability of the
$m$-th step over the chains, $\mu = \ln(10 h_0)$, $\gamma = 0.05$, $t_0 = 10$, $\kappa = 0.75$ and
$\bar H_0 = 0$, $\ln\bar h_0 = 0$:

$$\bar H_m = \Big(1 - \frac{1}{m + t_0}\Big)\bar H_{m-1} + \frac{\delta - \alpha_m}{m + t_0},\qquad
\ln h_m = \mu - \frac{\sqrt m}{\gamma}\bar H_m,\qquad
\ln\bar h_m = m^{-\kappa}\ln h_m + (1 - m^{-\kappa})\ln\bar h_{m-1}.$$

Step $m$ runs with $h_{m-1}$; after adaptation the averaged $\bar h_M$ is the step to use (and
freeze: the adapted chains' samples do not depend on other samples only while it adapts).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array

from .._checks import check_batch, check_int, check_key, check_positive
from .._keys import sample_keys
from .kernels import AbstractStepSizeKernel

__all__ = ["StepSizeAdaptation", "adapt_step_size"]


class StepSizeAdaptation(eqx.Module):
    r"""The result of [`scoresde.adapt_step_size`][]: `step_size` (the averaged $\bar h_M$, the
    one to use), `last_step_size` ($h_M$), `acceptance` (the mean acceptance probability of
    each adaptation step, `(num_steps,)`), the chains' final states `x` and the score
    evaluations per chain `nfe`."""

    step_size: Array
    last_step_size: Array
    acceptance: Array
    x: Array
    nfe: int = eqx.field(static=True)

    def apply_to(self, kernel: AbstractStepSizeKernel) -> AbstractStepSizeKernel:
        """`kernel` (any [`scoresde.AbstractStepSizeKernel`][]: MALA, ULA, annealed Langevin's
        smallest-level step, ...) with its step size replaced by the adapted `step_size`."""
        if not isinstance(kernel, AbstractStepSizeKernel):
            raise TypeError(
                f"{type(kernel).__name__} has no step_size to set: kernel must be a "
                "scoresde.AbstractStepSizeKernel (UnadjustedLangevin, MALA, AnnealedLangevin, "
                "OzakiLangevin, ...)."
            )
        step = jnp.asarray(self.step_size, jnp.result_type(kernel.step_size))
        return eqx.tree_at(lambda k: k.step_size, kernel, step)


def adapt_step_size(
    kernel: AbstractStepSizeKernel,
    x,
    *,
    key,
    num_steps: int,
    target_accept: float = 0.574,
    gamma: float = 0.05,
    t0: float = 10.0,
    kappa: float = 0.75,
) -> StepSizeAdaptation:
    r"""Adapt `kernel.step_size` (the start $h_0$) by dual averaging to the target mean acceptance
    probability (0.574, optimal for MALA), running the batch of chains `x` for `num_steps` steps
    with ONE shared step size (the acceptance of a step is averaged over the chains).

    The kernel must be Metropolis-adjusted ([`scoresde.MALA`][], [`scoresde.OzakiLangevin`][]
    with `adjusted=True`, ...); unadjusted kernels accept everything and are refused. The result
    is reusable as the step of ULA or annealed Langevin through
    [`scoresde.StepSizeAdaptation.apply_to`][]. Chain `i` draws step `j`'s randomness from
    `fold_in(fold_in(key, i), j)`. Cost: `kernel.nfe(x[0], num_steps)` per chain.

    The step is kept within $e^{\pm 20}$ of $h_0$: a kernel that accepts nearly everything at any
    step (e.g. an adjusted Ozaki step on a near-Gaussian target) would otherwise grow it without
    bound; a step at the cap means the target acceptance is out of reach.
    """
    if not isinstance(kernel, AbstractStepSizeKernel):
        raise TypeError(
            "kernel must be a Langevin kernel with a step_size (a "
            f"scoresde.AbstractStepSizeKernel); got {type(kernel).__name__}."
        )
    if not kernel.is_adjusted():
        raise ValueError(
            f"{type(kernel).__name__} is unadjusted (it accepts every step), so its acceptance "
            "carries no signal: adapt a Metropolis-adjusted kernel (e.g. MALA) and reuse the "
            "step with StepSizeAdaptation.apply_to."
        )
    check_positive("step_size", kernel.step_size)
    if not 0 < float(target_accept) < 1:
        raise ValueError(f"target_accept must be in (0, 1); got {target_accept}.")
    for name, value in (("gamma", gamma), ("t0", t0), ("kappa", kappa)):
        check_positive(name, value)
    x = check_batch("x", x)
    num_steps = check_int("num_steps", num_steps)
    h_bar, h_last, acc, x_out = _adapt(
        kernel=kernel,
        x=x,
        key=check_key(key),
        num_steps=num_steps,
        consts=(float(target_accept), float(gamma), float(t0), float(kappa)),
    )
    nfe = kernel.nfe(x[0], num_steps)
    return StepSizeAdaptation(h_bar, h_last, acc, x_out, nfe)


@eqx.filter_jit
def _adapt(*, kernel, x, key, num_steps, consts):
    delta, gamma, t0, kappa = consts
    dtype = x.dtype
    keys = sample_keys(key, x.shape[0])
    states = jax.vmap(kernel.init)(x)
    log_h0 = jnp.log(jnp.asarray(kernel.step_size, dtype))
    mu = jnp.log(10 * jnp.asarray(kernel.step_size, dtype))

    def body(carry, m):
        states, h_stat, log_h, log_h_bar = carry
        k = eqx.tree_at(lambda kk: kk.step_size, kernel, jnp.exp(log_h))
        step_keys = jax.vmap(lambda ki: jr.fold_in(ki, m - 1))(keys)
        states, info = jax.vmap(k.step)(step_keys, states)
        alpha = jnp.mean(info.acceptance_prob.astype(dtype))
        mf = m.astype(dtype)
        h_stat = (1 - 1 / (mf + t0)) * h_stat + (delta - alpha) / (mf + t0)
        log_h = jnp.clip(mu - jnp.sqrt(mf) / gamma * h_stat, log_h0 - 20, log_h0 + 20)
        w = mf**-kappa
        log_h_bar = w * log_h + (1 - w) * log_h_bar
        return (states, h_stat, log_h, log_h_bar), alpha

    zero = jnp.zeros((), dtype)
    init = (states, zero, log_h0, zero)
    (states, _, log_h, log_h_bar), acc = jax.lax.scan(body, init, jnp.arange(1, num_steps + 1))
    return jnp.exp(log_h_bar), jnp.exp(log_h), acc, states.x
