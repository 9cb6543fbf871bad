r"""Predictor-corrector sampling (Song et al. 2021) with exact NFE and per-sample step sizes.

On a grid $T = t_0 > t_1 > \dots > t_N = t_\varepsilon$, each iteration runs the corrector at
$t_i$ (`n_steps` Langevin steps on $p_{t_i}$), then the predictor from $t_i$ to $t_{i+1}$ (one
reverse-SDE step), and the sampler ends with one Tweedie denoising step at $t_\varepsilon$.
With $s \to t$ one step ($s = t_i > t = t_{i+1}$), $\alpha_{s|t} = \alpha_s/\alpha_t$ and
$\sigma_{s|t}^2 = \sigma_s^2 - \alpha_{s|t}^2\sigma_t^2$ (the forward transition from $t$ to $s$):

- `EulerMaruyama()`: $x \leftarrow x - [f(s)x - g(s)^2\,\mathrm{score}]\,\Delta + g(s)\sqrt\Delta\,z$,
  $\Delta = s - t$.
- `ReverseDiffusion()`: reverses the discretised forward step $x_s = \alpha_{s|t} x_t +
  \sigma_{s|t} z$: $x \leftarrow (2 - \alpha_{s|t})x + \sigma_{s|t}^2\,\mathrm{score} +
  \sigma_{s|t} z$ (VE: $\sigma_{s|t}^2 = \sigma_s^2 - \sigma_t^2$; VP: $\alpha_{s|t} =
  \sqrt{1-\beta_i}$, as in the original code).
- `Ancestral()`: samples the Gaussian posterior $q(x_t \mid x_s, \hat x_0)$ with Tweedie's
  $\hat x_0$: mean $(x + \sigma_{s|t}^2\,\mathrm{score})/\alpha_{s|t}$, variance
  $\sigma_{s|t}^2\sigma_t^2/\sigma_s^2$. For VE this is SMLD's ancestral step
  $x + (\sigma_s^2 - \sigma_t^2)\,\mathrm{score} + \sqrt{\sigma_t^2(\sigma_s^2 - \sigma_t^2)/\sigma_s^2}\,z$;
  for VP it is DDPM's step with the posterior variance $\tilde\beta_i$.
- `LangevinCorrector(snr, n_steps)`: $x \leftarrow x + \epsilon\,\mathrm{score} +
  \sqrt{2\epsilon}\,z$ with $\epsilon = 2 a\,(\mathrm{snr}\,\|z\| / \|\mathrm{score}\|)^2$,
  $a = \alpha_{s|t}^2$ ($1 - \beta_i$ for VP, 1 for VE).
- `AnnealedLangevinCorrector(snr, n_steps)`: the same step with $\epsilon = 2a(\mathrm{snr}\,
  \sigma(t_i))^2$.

**Per-sample step sizes.** The original code computes the Langevin corrector's $\epsilon$ from
the norms $\|z\|$ and $\|\mathrm{score}\|$ averaged over the whole batch, so a sample's path
depends on the other samples in its batch (and on the batch size). Here the norms are each
sample's own, so every sample is an independent chain: the same key gives the same sample
whatever the batch. The price: in low dimension the per-sample ratio $\|z\|^2/\|\mathrm{score}\|^2$
is heavy-tailed (near a mode the score is small), so an `snr` tuned for images (0.16 for VE at
$d = 3072$) makes some 2-D chains overshoot; there use `snr` $\lesssim 0.05$ or
`AnnealedLangevinCorrector`, whose step does not depend on the score's norm.

Cost: `steps * (1 + n_steps)` score evaluations per sample, +1 for the denoising step.
"""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from .._checks import (
    check_bool,
    check_int,
    check_key,
    check_latents,
    check_positive,
    check_shape,
    check_steps,
    check_t_eps,
    finite_rows,
    raise_if_not_finite,
)
from .._grid import resolve_explicit
from .._keys import latents_and_noise_keys
from .._langevin.preconditioners import AbstractPreconditioner, IdentityPreconditioner
from .._network_times import on_network_times
from .._nfe import network_nfe
from .._progress import scan_steps
from .._score_calls import bind, check_cond, checked_score, diagnose_score, tweedie_batch
from .._sde import AbstractSDE, check_sde_and_score
from .._sharding import map_batch
from .result import SampleResult
from .step_modes import solver_grid

__all__ = [
    "AbstractPredictor",
    "AbstractCorrector",
    "AbstractPreconditionedCorrector",
    "EulerMaruyama",
    "ReverseDiffusion",
    "Ancestral",
    "LangevinCorrector",
    "AnnealedLangevinCorrector",
    "sample_pc",
]


def _transition(sde, s, t):
    r"""$(\alpha_{s|t}, \sigma_{s|t}^2)$ of the forward transition from $t$ to $s > t$."""
    a_s, sig_s = sde.marginal(s)
    a_t, sig_t = sde.marginal(t)
    a = a_s / a_t
    return a, jnp.maximum(sig_s**2 - a**2 * sig_t**2, 0.0)


class AbstractPredictor(eqx.Module):
    """One reverse-SDE step from `s` down to `t < s`, on one sample, one score evaluation."""

    @abc.abstractmethod
    def __call__(self, sde, score, key, x, s, t): ...


class EulerMaruyama(AbstractPredictor):
    r"""Euler-Maruyama step of the reverse SDE (see the module docstring)."""

    def __call__(self, sde, score, key, x, s, t):
        dt = s - t
        g = sde.diffusion(s)
        drift = sde.drift(s, x) - g**2 * checked_score(score, s, x)
        z = jr.normal(key, x.shape, x.dtype)
        return x - drift * dt + g * jnp.sqrt(dt) * z


class ReverseDiffusion(AbstractPredictor):
    r"""Reverse-diffusion step (Song et al. 2021): reverses the discretised forward step."""

    def __call__(self, sde, score, key, x, s, t):
        a, var = _transition(sde, s, t)
        z = jr.normal(key, x.shape, x.dtype)
        return (2 - a) * x + var * checked_score(score, s, x) + jnp.sqrt(var) * z


class Ancestral(AbstractPredictor):
    r"""Ancestral sampling: the posterior $q(x_t \mid x_s, \hat x_0)$ (SMLD for VE, DDPM for VP)."""

    def __call__(self, sde, score, key, x, s, t):
        a, var = _transition(sde, s, t)
        _, sig_s = sde.marginal(s)
        _, sig_t = sde.marginal(t)
        mean = (x + var * checked_score(score, s, x)) / a
        std = jnp.sqrt(var) * sig_t / sig_s
        return mean + std * jr.normal(key, x.shape, x.dtype)


class AbstractCorrector(eqx.Module):
    """`n_steps` Langevin steps at a fixed time, on one sample, one evaluation per step."""

    snr: eqx.AbstractVar[float | jax.Array]
    n_steps: eqx.AbstractVar[int]

    def __check_init__(self):
        check_positive("snr", self.snr)
        check_int("n_steps", self.n_steps)

    @abc.abstractmethod
    def step_size(self, sde, s, t, x, grad, z, metric): ...

    def __call__(self, sde, score, key, x, s, t):
        if isinstance(self, AbstractPreconditionedCorrector):
            m = self.metric(s)
        else:
            m = IdentityPreconditioner()

        def body(x, k):
            grad = checked_score(score, s, x)
            z = jr.normal(k, x.shape, x.dtype)
            eps = self.step_size(sde, s, t, x, grad, z, m).astype(x.dtype)
            step = x + eps * m.apply(grad) + jnp.sqrt(2 * eps) * m.sqrt_apply(z)
            return step.astype(x.dtype), None

        x, _ = jax.lax.scan(body, x, jr.split(key, self.n_steps))
        return x


class AbstractPreconditionedCorrector(AbstractCorrector):
    r"""A corrector that moves in a metric $M$: `preconditioner`, a fixed
    [`scoresde.AbstractPreconditioner`][] or a function `preconditioner(t)` returning the metric
    at the corrector's time (one per noise level). A corrector that is not one uses $M = I$."""

    preconditioner: eqx.AbstractVar[AbstractPreconditioner | Callable]

    def metric(self, s) -> AbstractPreconditioner:
        """The corrector's metric $M$ at time `s`: the `preconditioner`, or its value at `s`
        when it is a function of time (one metric per noise level)."""
        m = self.preconditioner
        if isinstance(m, AbstractPreconditioner):
            return m
        out = m(s)
        if not isinstance(out, AbstractPreconditioner):
            raise TypeError(
                "preconditioner(t) must return a preconditioner (e.g. ss.DensePreconditioner); "
                f"got {type(out).__name__}."
            )
        return out


class LangevinCorrector(AbstractPreconditionedCorrector):
    r"""Langevin corrector with a target signal-to-noise ratio, step size per sample:
    $\epsilon = 2\alpha_{s|t}^2(\mathrm{snr}\,\|z\|/\|\mathrm{score}\|_M)^2$,
    $\|g\|_M^2 = g^\top M g$ (the snr of drift $\epsilon Mg$ to noise $\sqrt{2\epsilon}M^{1/2}z$
    measured in the metric $M^{-1}$; $\|g\|_I$ is the original rule).

    **Arguments:** `snr` (default 0.16, the original VE setting; 0.01 for VP), `n_steps`
    (default 1), `preconditioner`: a fixed metric $M$ (default the identity), or a function
    `preconditioner(t)` returning the metric at the corrector's time (one per noise level).
    """

    snr: float | jax.Array = 0.16
    n_steps: int = eqx.field(static=True, default=1)
    preconditioner: AbstractPreconditioner | Callable = IdentityPreconditioner()

    def step_size(self, sde, s, t, x, grad, z, metric):
        a, _ = _transition(sde, s, t)
        z_norm = jnp.sqrt(jnp.sum(z**2))
        g_norm = jnp.sqrt(jnp.sum(grad * metric.apply(grad)))
        g_norm = jnp.maximum(g_norm, jnp.finfo(x.dtype).tiny)
        return 2 * a**2 * (self.snr * z_norm / g_norm) ** 2


class AnnealedLangevinCorrector(AbstractPreconditionedCorrector):
    r"""Annealed Langevin corrector: $\epsilon = 2\alpha_{s|t}^2(\mathrm{snr}\,\sigma(s))^2$;
    `preconditioner` as for [`scoresde.LangevinCorrector`][]."""

    snr: float | jax.Array = 0.16
    n_steps: int = eqx.field(static=True, default=1)
    preconditioner: AbstractPreconditioner | Callable = IdentityPreconditioner()

    def step_size(self, sde, s, t, x, grad, z, metric):
        a, _ = _transition(sde, s, t)
        _, sigma = sde.marginal(s)
        return 2 * a**2 * (self.snr * sigma) ** 2


@eqx.filter_jit
def _sample_pc(
    *,
    sde,
    score,
    key,
    t_eps,
    x_T,
    shape,
    predictor,
    corrector,
    steps,
    grid,
    denoise,
    progress,
    cond,
    step_hook,
    rows=None,
):
    if rows is not None:
        shape = (rows.num, *shape[1:])
    dtype = jnp.result_type(float)
    x_T, noise_keys = latents_and_noise_keys(sde, key, shape, x_T, dtype, rows)
    ts = grid.times_for(sde, steps, t_eps, dtype=dtype)

    def step(x, noise_key, cond_i, i):
        s, t = ts[i], ts[i + 1]
        score_i = bind(score, cond_i)
        key_i = jr.fold_in(noise_key, i)
        k_c, k_p = jr.split(key_i)
        if corrector is not None:
            x = corrector(sde, score_i, k_c, x, s, t).astype(dtype)
        x = predictor(sde, score_i, k_p, x, s, t).astype(dtype)
        if step_hook is not None:
            x = step_hook(t, x, jr.fold_in(key_i, 1)).astype(dtype)
        return x

    x = scan_steps(step, x_T, noise_keys, cond, steps, progress=progress, desc="sample_pc")
    if denoise:
        x = tweedie_batch(sde, score, ts[-1], x, cond)
    per_step = 1 + (corrector.n_steps if corrector is not None else 0)
    calls = steps * per_step + (1 if denoise else 0)
    nfe = jnp.full((shape[0],), network_nfe(score, calls), jnp.int32)
    # num_steps and the per-sample finiteness come out of this program: nothing after it compiles.
    return x, nfe, jnp.full((shape[0],), steps, jnp.int32), finite_rows(x)


def sample_pc(
    sde: AbstractSDE,
    score,
    *,
    key,
    shape: tuple[int, ...],
    predictor: AbstractPredictor = ReverseDiffusion(),
    corrector: AbstractCorrector | None = LangevinCorrector(),
    steps: int | None = None,
    t_eps: float | None = None,
    grid=None,
    denoise: bool = True,
    x_T=None,
    progress: bool = False,
    cond=None,
    step_hook=None,
    sharding=None,
    chunk_size: int | None = None,
) -> SampleResult:
    r"""Predictor-corrector sampling of the reverse-time SDE (see the module docstring).

    **Arguments:**

    - `sde`, `score`: the SDE and `score(t, x)` on one sample.
    - `key`: sample `i` uses `fold_in(key, i)`; `shape = (num, *data_shape)`.
    - `predictor`: [`scoresde.ReverseDiffusion`][] (default), [`scoresde.EulerMaruyama`][] or
      [`scoresde.Ancestral`][].
    - `corrector`: [`scoresde.LangevinCorrector`][] (default), [`scoresde.AnnealedLangevinCorrector`][]
      or `None`.
    - `steps`, `grid`, `t_eps`: the time grid, as in [`scoresde.sample_sde`][] (`steps` default
      1000; `grid=None`: uniform in $t$; a grid of given times, e.g. a [`scoresde.TimeGrid`][],
      implies `steps` and `t_eps`).
    - `denoise`: finish with one Tweedie step at `t_eps` (+1 NFE).
    - `x_T`: given latents instead of prior draws.
    - `progress`: show a progress bar (one tick per step of the whole batch).
    - `cond`: per-sample conditioning, as in [`scoresde.sample_ode`][].
    - `step_hook`: `hook(t, x, key) -> x` on one sample, applied after each predictor step
      (at the step's end time `t`, with its own key), e.g. [`scoresde.guidance.Replacement`][];
      with `predictor=EulerMaruyama(), corrector=None` this is the fixed-step reverse SDE.
    - `sharding`, `chunk_size`: split the batch over devices (the result comes back with that
      sharding) and stream it in chunks, with results equal to the one-device call, as in
      [`scoresde.sample_ode`][].

    **Returns:** a [`scoresde.SampleResult`][]; `nfe = steps * (1 + n_steps) (+1)` per sample
    (score calls; times the score's `nfe_per_call` for a guided score).

    ??? cite "Reference"
        ```bibtex
        @inproceedings{song2021sde,
          title={Score-Based Generative Modeling through Stochastic Differential Equations},
          author={Song, Yang and Sohl-Dickstein, Jascha and Kingma, Diederik P. and Kumar,
                  Abhishek and Ermon, Stefano and Poole, Ben},
          booktitle={ICLR}, year={2021}
        }
        ```
    """
    check_sde_and_score(sde, score)
    score = on_network_times(grid, sde, score)  # a grid tuned with them
    key = check_key(key)
    if not isinstance(predictor, AbstractPredictor):
        raise TypeError(
            "predictor must be EulerMaruyama(), ReverseDiffusion() or Ancestral(); got "
            f"{predictor!r}."
        )
    if corrector is not None and not isinstance(corrector, AbstractCorrector):
        raise TypeError(
            "corrector must be LangevinCorrector(...), AnnealedLangevinCorrector(...) or None; "
            f"got {corrector!r}."
        )
    shape = check_shape(shape)
    if step_hook is not None and not callable(step_hook):
        raise TypeError(f"step_hook must be callable as hook(t, x, key); got {step_hook!r}.")
    # None: uniform in t, as for the reverse SDE
    grid, steps, t_eps = resolve_explicit(solver_grid(grid), sde, steps, t_eps)
    steps = check_steps(1000 if steps is None else steps)
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    dtype = jnp.result_type(float)
    x_T, cond = check_latents(x_T, shape, dtype), check_cond(cond, shape[0])
    x, nfe, num_steps, finite = map_batch(
        _sample_pc,
        shape[0],
        {"x_T": x_T, "cond": cond},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        key=key,
        t_eps=jnp.asarray(t_eps, dtype),
        shape=shape,
        predictor=predictor,
        corrector=corrector,
        steps=steps,
        grid=grid,
        denoise=check_bool("denoise", denoise),
        progress=check_bool("progress", progress),
        step_hook=step_hook,
    )
    diagnose = diagnose_score(
        score, sde.T, lambda: latents_and_noise_keys(sde, key, shape, x_T, dtype)[0], cond
    )
    raise_if_not_finite(
        "sample_pc",
        x,
        hint="lower the snr or use more steps.",
        finite=finite,
        diagnose=diagnose,
    )
    return SampleResult(x=x, nfe=nfe, num_steps=num_steps)
