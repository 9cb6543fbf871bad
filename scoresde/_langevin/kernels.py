r"""Langevin kernels: unadjusted Langevin, MALA and annealed Langevin dynamics (NCSN).

Each kernel is an `init`/`step` pair acting on ONE sample: `state = kernel.init(x)` and
`state, info = kernel.step(key, state)`, both jittable; batches go through `jax.vmap` (or
[`scoresde.run_langevin`][], which does it, drawing sample `i`'s noise from `fold_in(key, i)` and
step `j`'s from `fold_in(fold_in(key, i), j)`). States are small `NamedTuple`s holding what the
next step needs; diagnostics go in a separate `LangevinInfo`.

- Unadjusted Langevin: $x \leftarrow x + \epsilon\,\nabla\ln p(x) + \sqrt{2\epsilon}\,z$.
- MALA: the same proposal $x'$, accepted with probability
  $\min\{1, \frac{p(x')\,q(x \mid x')}{p(x)\,q(x' \mid x)}\}$,
  $q(x' \mid x) = N(x'; x + \epsilon\nabla\ln p(x), 2\epsilon I)$; needs $\ln p$ up to a constant.
- Annealed Langevin: for each noise level $\sigma_1 > \dots > \sigma_L$ of a (geometric) ladder,
  `steps_per_level` unadjusted steps on $p_{t_i}$ with $\epsilon_i = \epsilon\,\sigma_i^2/\sigma_L^2$,
  then (optionally) one Tweedie denoising step at $\sigma_L$.
"""

import abc
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array

from .._checks import (
    check_batch,
    check_int,
    check_key,
    check_positive,
    finite_rows,
    is_concrete,
    raise_if_not_finite,
)
from .._keys import sample_keys
from .._score_calls import checked_score, tweedie
from .._sde import AbstractSDE, check_sde_and_score
from .._sharding import map_batch
from .preconditioners import AbstractPreconditioner, IdentityPreconditioner

__all__ = [
    "AbstractLangevinKernel",
    "AbstractFixedCostKernel",
    "AbstractStepSizeKernel",
    "LangevinState",
    "MALAState",
    "AnnealedLangevinState",
    "LangevinInfo",
    "UnadjustedLangevin",
    "MALA",
    "AnnealedLangevin",
    "LangevinResult",
    "run_langevin",
    "annealed_langevin",
]


class LangevinState(NamedTuple):
    """Unadjusted Langevin state: the sample and its score."""

    x: Array
    score: Array


class MALAState(NamedTuple):
    """MALA state: the sample, its score and its (unnormalised) log-density."""

    x: Array
    score: Array
    log_prob: Array


class AnnealedLangevinState(NamedTuple):
    """Annealed Langevin state: the sample and the number of steps taken so far."""

    x: Array
    step: Array


class LangevinInfo(NamedTuple):
    """Diagnostics of one step: `acceptance_prob` (1 for unadjusted kernels) and `is_accepted`."""

    acceptance_prob: Array
    is_accepted: Array


def _check_step_size(step_size):
    check_positive("step_size", step_size)
    return step_size


def _check_step_shape(step_size, x) -> None:
    """A step size is a scalar or one per entry of the sample (broadcastable to its shape)."""
    shape, data = jnp.shape(step_size), jnp.shape(x)
    try:
        ok = np.broadcast_shapes(shape, data) == data
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"step_size must be a scalar or one step per entry of the sample, of shape {data}; "
            f"got step_size of shape {shape}."
        )


def _langevin_move(eps, m, x, g, z):
    r"""$x + P g$ and the noise $\sqrt2\,D^{1/2} M^{1/2} z$ of a Langevin step with
    $P = D^{1/2} M D^{1/2}$, $D = \operatorname{diag}(\epsilon)$ (for a scalar $\epsilon$:
    $P = \epsilon M$): a per-entry step size is the diagonal preconditioner $D$ around $M$."""
    noise = jnp.sqrt(2 * eps) * m.sqrt_apply(z)
    if jnp.ndim(eps) == 0:
        return x + eps * m.apply(g), noise
    h = jnp.sqrt(eps)
    return x + h * m.apply(h * g), noise


def _noise(key, x):
    return jr.normal(key, jnp.shape(x), jnp.result_type(x))


def _call_score(score, x):
    out = score(x)
    if jnp.shape(out) != jnp.shape(x):
        raise ValueError(
            f"score(x) must return an array of x's shape {jnp.shape(x)}; got {jnp.shape(out)}. "
            "A score acts on ONE unbatched sample."
        )
    return jnp.asarray(out, jnp.result_type(x))


class AbstractLangevinKernel(eqx.Module):
    """A Markov kernel on one sample: `init(x)` gives a state, `step(key, state)` the next state
    and a [`scoresde.LangevinInfo`][]; `nfe(x, num_steps)` declares its cost.
    [`scoresde.run_langevin`][] runs any such kernel on a batch.

    Capabilities are subclasses: [`scoresde.AbstractFixedCostKernel`][] (a cost per call that
    does not depend on the sample), [`scoresde.AbstractStepSizeKernel`][] (a `step_size` that
    [`scoresde.adapt_step_size`][] can tune)."""

    @abc.abstractmethod
    def init(self, x): ...

    @abc.abstractmethod
    def step(self, key, state): ...

    @abc.abstractmethod
    def nfe(self, x, num_steps: int) -> int:
        """Score evaluations of one chain of `num_steps` steps from the sample `x` (`x` gives
        the dimension, for kernels whose cost depends on it, e.g. those that evaluate a
        Jacobian)."""


class AbstractFixedCostKernel(AbstractLangevinKernel):
    """A kernel whose cost does not depend on the sample: `evals_at_init` score evaluations at
    `init` and `evals_per_step` per step."""

    evals_at_init: eqx.AbstractClassVar[int]
    evals_per_step: eqx.AbstractClassVar[int]

    def nfe(self, x, num_steps: int) -> int:
        """`evals_at_init + evals_per_step * num_steps`."""
        return int(self.evals_at_init + self.evals_per_step * num_steps)


class AbstractStepSizeKernel(AbstractLangevinKernel):
    r"""A kernel with a step size $\epsilon$ (`step_size`, a positive array) that
    [`scoresde.adapt_step_size`][] can tune and [`scoresde.StepSizeAdaptation.apply_to`][] can
    set; `is_adjusted()` says whether its proposals pass a Metropolis-Hastings test (only then
    does its acceptance carry a signal to adapt on)."""

    step_size: eqx.AbstractVar[Array]

    @abc.abstractmethod
    def is_adjusted(self) -> bool:
        """Whether proposals are accepted by a Metropolis-Hastings test (else every step is)."""


class UnadjustedLangevin(AbstractFixedCostKernel, AbstractStepSizeKernel):
    r"""Unadjusted Langevin (ULA): $x \leftarrow x + \epsilon\,\mathrm{score}(x) + \sqrt{2\epsilon}\,z$.

    **Arguments:**

    - `score`: $\nabla\ln p$ on one sample, `score(x)` (e.g. `ss.analytic.Gaussian(...).score`).
    - `step_size`: $\epsilon > 0$: a scalar, or one step per entry of the sample (an array of
      its shape, $D = \operatorname{diag}(\epsilon)$: the preconditioner
      $P = D^{1/2} M D^{1/2}$ in place of $\epsilon M$ below).
    - `preconditioner`: a fixed metric $M$ (default the identity): the step becomes
      $x + \epsilon M\,\mathrm{score}(x) + \sqrt{2\epsilon}\,M^{1/2}z$.

    One score evaluation at `init` and one per step.
    """

    score: Callable
    step_size: Array = eqx.field(converter=jnp.asarray)
    preconditioner: AbstractPreconditioner = IdentityPreconditioner()

    evals_at_init: ClassVar[int] = 1
    evals_per_step: ClassVar[int] = 1

    def __check_init__(self):
        _check_step_size(self.step_size)

    def is_adjusted(self) -> bool:
        return False

    def init(self, x) -> LangevinState:
        x = jnp.asarray(x)
        _check_step_shape(self.step_size, x)
        return LangevinState(x, _call_score(self.score, x))

    def step(self, key, state: LangevinState) -> tuple[LangevinState, LangevinInfo]:
        mean, noise = _langevin_move(
            self.step_size, self.preconditioner, state.x, state.score, _noise(key, state.x)
        )
        x = (mean + noise).astype(state.x.dtype)
        one = jnp.ones((), state.x.dtype)
        return LangevinState(x, _call_score(self.score, x)), LangevinInfo(one, jnp.array(True))


class MALA(AbstractFixedCostKernel, AbstractStepSizeKernel):
    r"""Metropolis-adjusted Langevin: the ULA proposal, accepted with the Metropolis-Hastings ratio.

    **Arguments:**

    - `log_prob`: $\ln p$ up to a constant, on one sample (an analytic distribution's
      `log_prob`, or minus an energy).
    - `step_size`: $\epsilon > 0$: a scalar, or one step per entry of the sample (an array of
      its shape, $D = \operatorname{diag}(\epsilon)$): the proposal below with
      $P = D^{1/2} M D^{1/2}$ in place of $\epsilon M$, and that density in the ratio.
    - `score`: $\nabla\ln p$; defaults to `jax.grad(log_prob)`.
    - `preconditioner`: a fixed metric $M$ (default the identity): proposal
      $N(x + \epsilon M\nabla\ln p(x), 2\epsilon M)$, with that density in the ratio.

    One evaluation of `log_prob` and its gradient at `init` and per step.

    ??? cite "Reference"
        ```bibtex
        @article{roberts1996mala,
          title={Exponential convergence of {Langevin} distributions and their discrete
                 approximations},
          author={Roberts, Gareth O. and Tweedie, Richard L.},
          journal={Bernoulli}, volume={2}, number={4}, pages={341--363}, year={1996}
        }
        ```
    """

    log_prob: Callable
    step_size: Array = eqx.field(converter=jnp.asarray)
    score: Callable | None = None
    preconditioner: AbstractPreconditioner = IdentityPreconditioner()

    evals_at_init: ClassVar[int] = 1
    evals_per_step: ClassVar[int] = 1

    def __check_init__(self):
        _check_step_size(self.step_size)

    def is_adjusted(self) -> bool:
        return True

    def _evaluate(self, x):
        if self.score is None:
            lp, g = jax.value_and_grad(lambda y: jnp.sum(self.log_prob(y)))(x)
        else:
            lp, g = jnp.sum(self.log_prob(x)), _call_score(self.score, x)
        return jnp.asarray(lp, x.dtype), g.astype(x.dtype)

    def init(self, x) -> MALAState:
        x = jnp.asarray(x)
        _check_step_shape(self.step_size, x)
        lp, g = self._evaluate(x)
        return MALAState(x, g, lp)

    def step(self, key, state: MALAState) -> tuple[MALAState, LangevinInfo]:
        eps, m = self.step_size, self.preconditioner
        key_z, key_u = jr.split(key)
        x = state.x
        mean, noise = _langevin_move(eps, m, x, state.score, _noise(key_z, x))
        prop = (mean + noise).astype(x.dtype)
        lp_prop, g_prop = self._evaluate(prop)

        def log_q(a, b, g_b):  # ln N(a; b + P g_b, 2P) up to a constant, P = D^1/2 M D^1/2
            if jnp.ndim(eps) == 0:
                r = a - b - eps * m.apply(g_b)
                return -jnp.sum(r * m.inverse_apply(r)) / (4 * eps)
            h = jnp.sqrt(eps)
            u = (a - b - h * m.apply(h * g_b)) / h  # (2P)^-1 = D^-1/2 (2M)^-1 D^-1/2
            return -jnp.sum(u * m.inverse_apply(u)) / 4

        log_ratio = lp_prop - state.log_prob + log_q(x, prop, g_prop) - log_q(prop, x, state.score)
        log_ratio = jnp.where(jnp.isnan(log_ratio), -jnp.inf, log_ratio)
        accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
        accepted = jnp.log(jr.uniform(key_u, (), x.dtype)) < log_ratio
        new = MALAState(
            jnp.where(accepted, prop, x),
            jnp.where(accepted, g_prop, state.score),
            jnp.where(accepted, lp_prop, state.log_prob),
        )
        return new, LangevinInfo(accept_prob.astype(x.dtype), accepted)


def _check_sigmas(sigmas):
    sigmas = jnp.asarray(sigmas)
    if not jnp.issubdtype(sigmas.dtype, jnp.floating):
        sigmas = sigmas.astype(float)
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(f"sigmas must be a 1-D array of noise levels; got shape {sigmas.shape}.")
    if is_concrete(sigmas):
        s = np.asarray(sigmas)
        if not (np.all(np.isfinite(s)) and np.all(s > 0)):
            raise ValueError(f"sigmas must be finite and > 0; got sigmas={s}.")
        if not np.all(np.diff(s) < 0):
            raise ValueError(
                f"sigmas must be strictly decreasing (largest noise first); got sigmas={s}."
            )
    return sigmas


def _level_metrics(preconditioner, num_levels):
    """One metric for all levels, or a sequence of `num_levels` stacked leaf by leaf."""
    if isinstance(preconditioner, AbstractPreconditioner):
        return preconditioner, False
    if not isinstance(preconditioner, (list, tuple)) or not all(
        isinstance(m, AbstractPreconditioner) for m in preconditioner
    ):
        raise TypeError(
            "preconditioner must be a preconditioner (e.g. ss.DensePreconditioner) or a list of "
            f"one per noise level; got {type(preconditioner).__name__}."
        )
    if len(preconditioner) != num_levels:
        raise ValueError(
            f"need one preconditioner per noise level ({num_levels}); got {len(preconditioner)}."
        )
    structures = {jax.tree.structure(m) for m in preconditioner}
    shapes = {tuple(jnp.shape(leaf) for leaf in jax.tree.leaves(m)) for m in preconditioner}
    if len(structures) != 1 or len(shapes) != 1:
        raise ValueError(
            "per-level preconditioners must all be of the same kind and shape (e.g. all "
            "DensePreconditioner of one dimension)."
        )
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *preconditioner)
    return stacked, True


class AnnealedLangevin(AbstractFixedCostKernel, AbstractStepSizeKernel):
    r"""Annealed Langevin dynamics (NCSN) over a decreasing ladder of noise levels.

    Level $i$ targets $p_{t_i}$, the data diffused by `sde` to the time $t_i$ whose noise level
    $\sigma/\alpha$ is $\sigma_i$ ($t_i$ = `sde.log_snr_inverse(-ln sigma_i)`; for
    [`scoresde.EDMSDE`][] and [`scoresde.VESDE`][] without its offset, $t_i \approx \sigma_i$).
    It takes `steps_per_level` steps
    $x \leftarrow x + \epsilon_i\,\mathrm{score}(t_i, x) + \sqrt{2\epsilon_i}\,z$ with
    $\epsilon_i = \epsilon\,\sigma_i^2/\sigma_L^2$. One score evaluation per step.

    **Arguments:**

    - `sde`, `score`: the SDE and its score `score(t, x)` on one sample.
    - `sigmas`: strictly decreasing positive noise levels (e.g. [`scoresde.geometric_sigmas`][]).
    - `step_size`: $\epsilon > 0$, the step at the smallest level.
    - `steps_per_level`: steps per noise level.
    - `preconditioner`: a fixed metric $M$ for every level (default the identity), or a
      sequence of one per level ($M_i$, all of the same kind and shape, e.g. the covariances
      of the $p_{t_i}$): the step becomes
      $x + \epsilon_i M_i\,\mathrm{score}(t_i, x) + \sqrt{2\epsilon_i}\,M_i^{1/2}z$ (the
      $\sigma_i^2$ scaling of $\epsilon_i$ still applies).

    ??? cite "Reference"
        ```bibtex
        @inproceedings{song2019ncsn,
          title={Generative Modeling by Estimating Gradients of the Data Distribution},
          author={Song, Yang and Ermon, Stefano},
          booktitle={NeurIPS}, year={2019}
        }
        ```
    """

    sde: AbstractSDE
    score: Callable
    sigmas: Array
    step_size: Array
    steps_per_level: int = eqx.field(static=True)
    preconditioner: AbstractPreconditioner
    per_level: bool = eqx.field(static=True)

    evals_at_init: ClassVar[int] = 0
    evals_per_step: ClassVar[int] = 1

    def __init__(
        self,
        sde,
        score,
        sigmas,
        step_size,
        steps_per_level,
        preconditioner: AbstractPreconditioner | Sequence[AbstractPreconditioner] = (
            IdentityPreconditioner()
        ),
    ):
        check_sde_and_score(sde, score)
        self.sde = sde
        self.score = score
        self.sigmas = _check_sigmas(sigmas)
        self.step_size = jnp.asarray(_check_step_size(step_size))
        self.steps_per_level = check_int("steps_per_level", steps_per_level)
        self.preconditioner, self.per_level = _level_metrics(preconditioner, self.sigmas.shape[0])

    def is_adjusted(self) -> bool:
        return False

    @property
    def num_steps(self) -> int:
        """Steps over the whole ladder."""
        return self.sigmas.shape[0] * self.steps_per_level

    def times(self) -> Array:
        """The diffusion times $t_i$ of the ladder's levels."""
        return self.sde.log_snr_inverse(-jnp.log(self.sigmas))

    def metric(self, level) -> AbstractPreconditioner:
        """The metric $M_i$ of level `level` (an index, traced or not)."""
        if not self.per_level:
            return self.preconditioner
        return jax.tree.map(lambda leaf: leaf[level], self.preconditioner)

    def init(self, x) -> AnnealedLangevinState:
        return AnnealedLangevinState(jnp.asarray(x), jnp.zeros((), jnp.int32))

    def step(self, key, state: AnnealedLangevinState):
        level = jnp.minimum(state.step // self.steps_per_level, self.sigmas.shape[0] - 1)
        sigma = self.sigmas[level]
        t = self.times()[level].astype(state.x.dtype)
        eps = (self.step_size * (sigma / self.sigmas[-1]) ** 2).astype(state.x.dtype)
        g = checked_score(self.score, t, state.x)
        m = self.metric(level)
        x = state.x + eps * m.apply(g) + jnp.sqrt(2 * eps) * m.sqrt_apply(_noise(key, state.x))
        one = jnp.ones((), state.x.dtype)
        info = LangevinInfo(one, jnp.array(True))
        return AnnealedLangevinState(x.astype(state.x.dtype), state.step + 1), info

    def denoise(self, x):
        r"""Tweedie's $E[x_0 \mid x_{t_L}] = (x + \sigma(t_L)^2\,\mathrm{score}(t_L, x))/\alpha(t_L)$."""
        return tweedie(self.sde, self.score, self.times()[-1].astype(x.dtype), x)


class LangevinResult(eqx.Module):
    """Final samples `x` `(num, *data)`, each chain's mean `acceptance_rate` and its `nfe`."""

    x: Array
    acceptance_rate: Array
    nfe: Array


@eqx.filter_jit
def _run(*, kernel, x, key, num_steps, denoise, rows=None):
    def one(xi, key_i):
        state = kernel.init(xi)

        def body(state, j):
            state, info = kernel.step(jr.fold_in(key_i, j), state)
            return state, info.acceptance_prob

        state, probs = jax.lax.scan(body, state, jnp.arange(num_steps))
        out = kernel.denoise(state.x) if denoise else state.x
        return out, jnp.mean(probs) if num_steps else jnp.ones((), xi.dtype)

    x_out, rate = jax.vmap(one)(x, sample_keys(key, x.shape[0], rows=rows))
    nfe = kernel.nfe(x[0], num_steps) + (1 if denoise else 0)
    # Per-chain finiteness, read after the call: no host copy of the samples for the check.
    return x_out, rate, jnp.full((x.shape[0],), nfe, jnp.int32), finite_rows(x_out)


def run_langevin(
    kernel, x, *, key, num_steps: int, sharding=None, chunk_size: int | None = None
) -> LangevinResult:
    """Run `kernel` for `num_steps` steps from each sample of the batch `x`.

    Sample `i` draws step `j`'s randomness from `fold_in(fold_in(key, i), j)`, so a chain does
    not depend on the batch it runs in, nor on the devices (`sharding`) or chunks
    (`chunk_size`) it is split into (as in [`scoresde.sample_ode`][]).

    **Returns:** a [`scoresde.LangevinResult`][]: the final states, each chain's mean acceptance
    probability (1 for unadjusted kernels) and the score evaluations per chain.

    **Raises:** `FloatingPointError` naming the step size if a chain ends non-finite (it
    diverged: e.g. ULA on $N(0, I)$ with `step_size > 2`).
    """
    if not isinstance(kernel, AbstractLangevinKernel):
        raise TypeError(
            "kernel must be a Langevin kernel (UnadjustedLangevin, MALA, AnnealedLangevin or "
            f"a subclass of AbstractLangevinKernel); got {type(kernel).__name__}."
        )
    x = check_batch("x", x)
    num_steps = check_int("num_steps", num_steps, minimum=0)
    return _run_batch("run_langevin", kernel, x, key, num_steps, False, sharding, chunk_size)


def _run_batch(who, kernel, x, key, num_steps, denoise, sharding, chunk_size) -> LangevinResult:
    """`_run` over the batch `x`, split over `sharding`'s devices and in chunks; a chain that
    ends non-finite raises `FloatingPointError` naming the step size."""
    x_out, rate, nfe, finite = map_batch(
        _run,
        x.shape[0],
        {"x": x},
        sharding=sharding,
        chunk_size=chunk_size,
        kernel=kernel,
        key=check_key(key),
        num_steps=num_steps,
        denoise=denoise,
    )
    step = (
        f"step_size={_describe(kernel.step_size)} is too large for this target, or the score "
        "is not finite there"
        if isinstance(kernel, AbstractStepSizeKernel)
        else "the kernel's step is too large, or the score is not finite there"
    )
    raise_if_not_finite(
        who,
        x_out,
        hint=f"the chains diverged: {step}. Use a smaller step_size, MALA (its "
        "Metropolis test rejects diverging proposals) or adapt_step_size.",
        finite=finite,
    )
    return LangevinResult(x=x_out, acceptance_rate=rate, nfe=nfe)


def _describe(value) -> str:
    """A step size as the user wrote it (a concrete scalar or array), `<traced>` under a trace."""
    if not is_concrete(value):
        return "<traced>"
    v = np.asarray(value)
    return f"{v.item():g}" if v.ndim == 0 else np.array2string(v, precision=3)


def annealed_langevin(
    sde: AbstractSDE,
    score: Callable,
    x,
    *,
    key,
    sigmas,
    step_size: float = 2e-5,
    steps_per_level: int = 100,
    denoise: bool = True,
    preconditioner: AbstractPreconditioner | Sequence[AbstractPreconditioner] = (
        IdentityPreconditioner()
    ),
    sharding=None,
    chunk_size: int | None = None,
) -> LangevinResult:
    r"""Annealed Langevin dynamics from the batch `x` over the ladder `sigmas`, then denoising.

    Runs [`scoresde.AnnealedLangevin`][] through every level (`len(sigmas) * steps_per_level`
    steps) and, with `denoise`, one Tweedie step at the last level (the final denoising step of
    Jolicoeur-Martineau et al. 2021; +1 NFE). `sharding`, `chunk_size`: as in
    [`scoresde.run_langevin`][].

    **Returns:** a [`scoresde.LangevinResult`][] with `x` and `nfe`.
    """
    kernel = AnnealedLangevin(sde, score, sigmas, step_size, steps_per_level, preconditioner)
    x = check_batch("x", x)
    return _run_batch(
        "annealed_langevin", kernel, x, key, kernel.num_steps, bool(denoise), sharding, chunk_size
    )
