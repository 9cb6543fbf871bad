r"""Sequential Monte Carlo along the reverse diffusion: the twisted diffusion sampler.

Targets the posterior $p(x_0 \mid y) \propto p(x_0)\,p(y \mid x_0)$ with `num_particles`
weighted particles (Wu et al. 2023). On the grid $T = t_0 > t_1 > \dots > t_N = t_\varepsilon$
the intermediate targets are $\pi_i(x) \propto p_{t_i}(x)\,\tilde p_{t_i}(y \mid x)$, with a
twisting function $\tilde p_t(y \mid x) \approx p_t(y \mid x)$ and, at the end, the exact
likelihood $p(y \mid x_0)$. Writing $\ell_t = \ln\tilde p_t(y \mid x)$:

- start: $x_{t_0}$ from the SDE's prior, weight $\tilde p_{t_0}(y \mid x_{t_0})$;
- propose: one Euler-Maruyama step of the reverse SDE with the twisted score,
  $q(x_t \mid x_s) = N\big(x_s - [f(s)x_s - g(s)^2(s(s, x_s) + \nabla\ell_s(x_s))]\Delta,\;
  g(s)^2\Delta\,I\big)$, $\Delta = s - t$; the model's own step $p(x_t \mid x_s)$ is the same
  Gaussian without $\nabla\ell_s$;
- weight: $w = p(x_t \mid x_s)\,\tilde p_t(y \mid x_t) / \big(q(x_t \mid x_s)\,
  \tilde p_s(y \mid x_s)\big)$; at the last step $\tilde p_{t_N}$ is replaced by the exact
  likelihood $p(y \mid x_{out})$ of the returned particle ($x_{out}$ = Tweedie's denoiser at
  $t_\varepsilon$ with `denoise=True`, else $x_{t_\varepsilon}$);
- resample (systematic) before a step when the effective sample size
  $1/\sum_i \bar w_i^2$ falls below `resample_threshold * num_particles`.

The product of the mean incremental weights estimates the evidence $p(y)$ without bias (for the
discretised model: the Euler-Maruyama chain from the SDE's prior, not exactly $p_T$). The twist
only changes the variance: with the exact noisy likelihood $p_t(y \mid x)$ the weights are
constant up to the discretisation of the step.

Twists ([`scoresde.TweedieTwist`][], [`scoresde.MomentTwist`][], [`scoresde.LogTwist`][]) are values: small Equinox modules
returning $\ell_t(x)$, $\nabla\ell_t(x)$ and the score at $x$ in one pass.
"""

import abc
import math
import warnings
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, Int

from .._checks import (
    check_bool,
    check_key,
    check_latents,
    check_positive,
    check_shape,
    check_steps,
    check_t_eps,
    is_concrete,
    raise_if_not_finite,
)
from .._custom_types import Sample, Scalar, ScoreFn
from .._grid import time_grid
from .._keys import latents_and_noise_keys
from .._nfe import network_nfe
from .._progress import tick
from .._score_calls import check_like, checked_score, diagnose_score, tweedie
from .._sde import AbstractSDE, check_sde_and_score
from .._sharding import auto_axes, check_sharding, result_sharding
from .guidance import moment_projection
from .measurement import AbstractMeasurement, LinearMeasurement

__all__ = ["AbstractTwist", "LogTwist", "MomentTwist", "SMCResult", "TweedieTwist", "sample_smc"]

# The key of the resampling steps: fold_in(key, _RESAMPLE) with an index that no particle has.
_RESAMPLE = 2**32 - 1


class AbstractTwist(eqx.Module):
    r"""A twisting function $\ell_t(x) = \ln\tilde p_t(y \mid x)$ for [`scoresde.sample_smc`][].

    `__call__(sde, score, m, t, x)` on ONE sample returns `(ell, grad_ell, score_value)`;
    `cost(m)` is `(score evaluations, VJPs through the score)` per call for the measurement `m`.
    """

    @abc.abstractmethod
    def __call__(self, sde, score, m, t: Scalar, x: Sample) -> tuple[Array, Sample, Sample]: ...

    @abc.abstractmethod
    def cost(self, m) -> tuple[int, int]: ...


class TweedieTwist(AbstractTwist):
    r"""The TDS twist (Wu et al. 2023): the likelihood at Tweedie's denoiser $\hat x_0(x)$,
    optionally inflated by the denoiser's spread.

    - `data_var=None`: $\tilde p_t(y \mid x) = p(y \mid \hat x_0(x))$ (`m.log_likelihood` at
      $\hat x_0$: any differentiable likelihood). Exact for no prior, and over-confident at large
      $t$, where $\hat x_0$ is uncertain: it can lose a posterior mode for good (on the
      inverse-problems how-to's 2-D problem its $\ln\hat p(y)$ is off by 46 nats).
    - `data_var=v`: the PiGDM inflation $x_0 \mid x_t \approx N(\hat x_0, r_t^2 I)$,
      $r_t^2 = v\sigma^2/(\alpha^2 v + \sigma^2)$ (exact for $N(\mu, vI)$ priors), giving
      $\tilde p_t(y \mid x) = E_{\varepsilon \sim N(0, I)}\,p(y \mid \hat x_0 + r_t\varepsilon)$.
      For a [`scoresde.LinearMeasurement`][] in closed form, $N(y; A\hat x_0, r_t^2 AA^\top + R)$.
      For any other likelihood $\ell(x_0) = \ln p(y \mid x_0)$ by its second-order expansion at
      $\hat x_0$ (gradient $g$, Hessian $-H$): up to terms free of $x$ (which cancel in the
      weights), $\tilde\ell_t = \ell(\hat x_0) + \tfrac{r_t^2}{2} g^\top u$ with
      $(I + r_t^2 H)u = g$, solved by `cg_steps` conjugate-gradient steps of Hessian-vector
      products of the likelihood (exact for linear-Gaussian likelihoods once `cg_steps`
      exceeds $d_y$; fewer steps interpolate towards the plain twist). The proposal's gradient
      is $J^\top u$, $J = \partial\hat x_0/\partial x$ (any drift keeps the weights exact).

    Cost: 1 score evaluation and 1 VJP through it (plus `cg_steps` Hessian-vector products of
    the likelihood, not of the score).
    """

    data_var: float | None = None
    cg_steps: int = eqx.field(default=8, static=True)

    evals_per_call: ClassVar[int] = 1
    vjps_per_call: ClassVar[int] = 1

    def __check_init__(self):
        if self.data_var is not None:
            check_positive("data_var", self.data_var)
        if not isinstance(self.cg_steps, int) or self.cg_steps < 1:
            raise ValueError(f"cg_steps must be a positive integer; got {self.cg_steps!r}.")

    def cost(self, m):
        return self.evals_per_call, self.vjps_per_call

    def __call__(self, sde, score, m, t, x):
        alpha, sigma = sde.marginal(t)
        if self.data_var is not None and not isinstance(m, LinearMeasurement):
            r2 = self.data_var * sigma**2 / (alpha**2 * self.data_var + sigma**2)
            return _inflated(sde, score, m, t, x, r2.astype(x.dtype), self.cg_steps)

        def ell(x_):
            s = checked_score(score, t, x_)
            x0 = ((x_ + sigma**2 * s) / alpha).astype(x_.dtype)
            if self.data_var is None:
                return m.log_likelihood(x0), s
            v = self.data_var
            r2 = v * sigma**2 / (alpha**2 * v + sigma**2)
            A = m.matrix.astype(x_.dtype)
            cov = r2 * (A @ A.T) + jnp.diag(m.noise_var.astype(x_.dtype))
            chol = jnp.linalg.cholesky(cov)
            z = jax.scipy.linalg.solve_triangular(chol, m.residual(x0), lower=True)
            logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol)))
            return -0.5 * (m.dim_y * math.log(2 * math.pi) + logdet + jnp.sum(z**2)), s

        (value, s), grad = jax.value_and_grad(ell, has_aux=True)(x)
        return value, grad, s


def _inflated(sde, score, m, t, x, r2, cg_steps):
    r"""The inflated Tweedie twist for a general likelihood (see `TweedieTwist`): value
    $\ell(\hat x_0) + \tfrac{r^2}{2} g^\top u$, $(I + r^2 H)u = g$ by CG, gradient $J^\top u$."""
    alpha, sigma = sde.marginal(t)

    def denoise(x_):
        s = checked_score(score, t, x_)
        return ((x_ + sigma**2 * s) / alpha).astype(x_.dtype), s

    x0, vjp, s = jax.vjp(denoise, x, has_aux=True)
    loglik = lambda z: m.log_likelihood(z)  # noqa: E731
    ell0, g = jax.value_and_grad(loglik)(x0)

    def op(v):  # (I + r^2 H) v with H = -Hessian of the log-likelihood
        return v - r2 * jax.jvp(jax.grad(loglik), (x0,), (v,))[1]

    def dot(a, b):
        return jnp.sum(a * b)

    def cg(_, carry):  # from u = 0; a step with non-positive curvature is skipped
        u, res, p, rr = carry
        ap = op(p)
        pap = dot(p, ap)
        ok = (pap > 0) & (rr > 0)
        a = jnp.where(ok, rr / jnp.where(ok, pap, 1), 0)
        u, res = u + a * p, res - a * ap
        rr_new = dot(res, res)
        beta = jnp.where(ok, rr_new / jnp.where(rr > 0, rr, 1), 0)
        return u, res, res + beta * p, jnp.where(ok, rr_new, 0)

    u, _, _, _ = jax.lax.fori_loop(0, cg_steps, cg, (jnp.zeros_like(g), g, g, dot(g, g)))
    value = ell0 + 0.5 * r2 * dot(g, u)
    (grad,) = vjp(u.astype(x.dtype))
    return value, grad.astype(x.dtype), s


class LogTwist(AbstractTwist):
    r"""A given twist `log_twist(t, x)` $= \ln\tilde p_t(y \mid x)$ on one sample: exact when it
    is the noisy likelihood $\ln p_t(y \mid x)$, e.g.
    `ss.analytic.noisy_likelihood_score(prior, sde, m).log_likelihood` (then, on Gaussian and
    mixture priors, the weights vary only through the discretisation of the step).

    Cost: 1 score evaluation (the twist's own gradient is not a VJP through the score).
    """

    log_twist: ScoreFn

    evals_per_call: ClassVar[int] = 1
    vjps_per_call: ClassVar[int] = 0

    def __check_init__(self):
        if not callable(self.log_twist):
            raise TypeError("log_twist must be callable as log_twist(t, x).")

    def cost(self, m):
        return self.evals_per_call, self.vjps_per_call

    def __call__(self, sde, score, m, t, x):
        def ell(x_):
            return check_like(self.log_twist(t, x_), x_, who="log_twist(t, x)", scalar=True)

        value, grad = jax.value_and_grad(ell)(x)
        return value, grad, checked_score(score, t, x)


class MomentTwist(AbstractTwist):
    r"""The TMPD twist: $\tilde p_t(y \mid x) = N(y; A\hat x_0, A C A^\top + R)$ with Tweedie's
    covariance $C = \tfrac{\sigma^2}{\alpha}\,\partial\hat x_0/\partial x$ (the moment
    projection of [`scoresde.guidance.TMPD`][]); its gradient holds $C$ fixed (the proposal may
    use any drift: the weights stay exact). Exact for Gaussian priors; on mixtures the
    covariance follows the posterior spread of $x_0$, which the Tweedie twist ignores.

    A [`scoresde.LinearMeasurement`][] only. Cost: 1 score evaluation and $d_y$ VJPs.
    """

    def __call__(self, sde, score, m, t, x):
        s, ell, grad = moment_projection(sde, score, m, t, x)
        return ell, grad, s

    def cost(self, m):
        return 1, m.dim_y


class SMCResult(eqx.Module):
    """Weighted particles from [`scoresde.sample_smc`][].

    - `x`: the particles, `(num_particles, *data_shape)`.
    - `log_weights`: their normalised log-weights (`logsumexp(log_weights) == 0`); estimate
      $E[h(x_0) \\mid y]$ by `sum(exp(log_weights) * h(x))`.
    - `log_evidence`: the estimate of $\\ln p(y)$ (its exponential is unbiased for $p(y)$).
    - `ess`: the effective sample size after weighting at each grid time, `(steps + 1,)`.
    - `resampled`: whether the particles were resampled before each step, `(steps,)`.
    - `nfe`: network evaluations per particle, a VJP through the score counting as 2 (the
      convention of [`scoresde.SampleResult`][]).
    - `min_ess`: `min(ess)`, the diagnostic to read first: near 1 the estimate rests on one
      particle (the sampler warns below `ESS_WARN_FRACTION * num_particles`).
    - `num_resampled`: how many times the particles were resampled, `sum(resampled)`.
    """

    x: Float[Array, "num *data"]
    log_weights: Float[Array, " num"]
    log_evidence: Float[Array, ""]
    ess: Float[Array, " steps_plus_one"]
    resampled: Bool[Array, " steps"]
    nfe: Int[Array, " num"]
    min_ess: Float[Array, ""]
    num_resampled: Int[Array, ""]


# The diagnostics' thresholds: a warning (an error with throw=True) when the smallest ESS falls
# below this fraction of the particles, or a particle lies beyond RANGE_WARN_FACTOR prior stds.
ESS_WARN_FRACTION = 0.02
RANGE_WARN_FACTOR = 100.0


def _normalise(log_w):
    total = jax.nn.logsumexp(log_w)
    return log_w - total, total


class _Split(eqx.Module):
    """Lay the particles out over the mesh axis of `sharding` (identity without one)."""

    sharding: object = eqx.field(static=True)

    def __call__(self, x):
        if self.sharding is None:
            return x
        return jax.lax.with_sharding_constraint(x, self.sharding)


def _ess(log_w):
    """$1 / \\sum_i \\bar w_i^2$ for normalised log-weights."""
    return jnp.exp(-jax.nn.logsumexp(2 * log_w))


def _systematic(key, log_w):
    """Systematic resampling: ancestors for the points $(u + i)/N$, $u \\sim U[0, 1)$."""
    n = log_w.shape[0]
    u = (jr.uniform(key, (), log_w.dtype) + jnp.arange(n, dtype=log_w.dtype)) / n
    cdf = jnp.cumsum(jnp.exp(log_w))
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n - 1)


@eqx.filter_jit
def _sample_smc(
    *, sde, score, m, twist, key, shape, steps, t_eps, threshold, denoise, x_T, progress, split
):
    dtype = jnp.result_type(float)
    n = shape[0]
    x, noise_keys = latents_and_noise_keys(sde, key, shape, x_T, dtype)
    x = split(x)
    resample_key = jr.fold_in(key, _RESAMPLE)
    ts = time_grid(sde, steps, t_eps=t_eps, dtype=dtype)
    evaluate = jax.vmap(lambda t, x_: twist(sde, score, m, t, x_), in_axes=(None, 0))

    def step(carry, i):
        x, log_w, ell, grad, score_val = carry
        s, t = ts[i], ts[i + 1]
        # Resample before moving when the ESS is low (a key per step: the move is joint).
        do = _ess(log_w) < threshold * n
        ancestors = jnp.where(
            do,
            _systematic(jr.fold_in(resample_key, i), log_w).astype(jnp.int32),
            jnp.arange(n, dtype=jnp.int32),
        )
        x, ell, grad, score_val = (a[ancestors] for a in (x, ell, grad, score_val))
        log_w = jnp.where(do, jnp.full_like(log_w, -math.log(n)), log_w)
        # Twisted Euler-Maruyama proposal; p/q in closed form from the noise z.
        g = sde.diffusion(s)
        dt = s - t
        std = g * jnp.sqrt(dt)
        drift = jax.vmap(lambda x_, s_: sde.drift(s, x_) - g**2 * s_)(x, score_val)
        z = jax.vmap(lambda k, x_: jr.normal(jr.fold_in(k, i), x_.shape, x_.dtype))(noise_keys, x)
        x_new = split((x - drift * dt + g**2 * dt * grad + std * z).astype(dtype))
        flat = (x.shape[0], -1)
        zg = jnp.sum(z.reshape(flat) * grad.reshape(flat), axis=1)
        gg = jnp.sum(grad.reshape(flat) ** 2, axis=1)
        log_p_over_q = -std * zg - 0.5 * std**2 * gg
        return (x_new, log_w, ell, log_p_over_q, do)

    def body(carry, i):
        x_new, log_w, ell, log_pq, do = step(carry, i)
        ell_new, grad_new, score_new = evaluate(ts[i + 1], x_new)
        log_w, log_z = _normalise(log_w + log_pq + ell_new - ell)
        tick(progress, "sample_smc", i, steps)
        return (x_new, log_w, ell_new, grad_new, score_new), (log_z, _ess(log_w), do)

    ell0, grad0, score0 = evaluate(ts[0], x)
    log_w, log_z0 = _normalise(ell0)
    log_z0 = log_z0 - math.log(n)
    carry = (x, log_w, ell0, grad0, score0)
    carry, (log_zs, ess, done) = jax.lax.scan(body, carry, jnp.arange(steps - 1))
    # Last step: the exact likelihood of the returned particle replaces the twist.
    x_new, log_w, ell, log_pq, do = step(carry, steps - 1)
    if denoise:
        x_new = jax.vmap(lambda x_: tweedie(sde, score, ts[-1], x_))(x_new)
    log_lik = jax.vmap(m.log_likelihood)(x_new)
    tick(progress, "sample_smc", steps - 1, steps)
    log_w, log_z_last = _normalise(log_w + log_pq + log_lik - ell)
    log_evidence = log_z0 + jnp.sum(log_zs) + log_z_last
    ess = jnp.concatenate([_ess(ell0 - jax.nn.logsumexp(ell0))[None], ess, _ess(log_w)[None]])
    resampled = jnp.concatenate([done, do[None]])
    return x_new, log_w, log_evidence, ess, resampled


def _check_measurement(m, twist):
    """What `twist` needs of `m`: a linear-Gaussian measurement for `MomentTwist`, a likelihood
    (an `AbstractMeasurement`) for the others."""
    if isinstance(twist, MomentTwist) and not isinstance(m, LinearMeasurement):
        raise TypeError(
            "MomentTwist() needs m, a scoresde.LinearMeasurement (it uses A and the noise "
            f"covariance); got m of type {type(m).__name__}."
        )
    if not isinstance(m, AbstractMeasurement):
        who = (
            "TweedieTwist(data_var=...) needs m to be"
            if isinstance(twist, TweedieTwist) and twist.data_var is not None
            else "m must be"
        )
        raise TypeError(
            f"{who} a scoresde.AbstractMeasurement: a scoresde.LinearMeasurement, or a "
            "subclass of scoresde.AbstractMeasurement defining log_likelihood(x) = ln p(y | x) "
            f"on one sample; got m of type {type(m).__name__}."
        )


def default_twist(m) -> AbstractTwist:
    r"""The twist `sample_smc` uses when none is given: `MomentTwist()` for a
    [`scoresde.LinearMeasurement`][] (covariance-aware, exact on Gaussian priors; measured best in
    `benchmarks/smc_default.py`), else `TweedieTwist(data_var=1.0)` (the likelihood convolved with
    the PiGDM spread of a unit-variance prior: data standardised to unit variance)."""
    return MomentTwist() if isinstance(m, LinearMeasurement) else TweedieTwist(data_var=1.0)


def _diagnose(sde, n, x, log_evidence, min_ess) -> str | None:
    """What is wrong with a run (a collapsed ESS, particles far beyond the prior's scale), or
    `None`; not checked under a JAX transformation."""
    if not (is_concrete(x) and is_concrete(min_ess)):
        return None
    problems = []
    if not float(min_ess) >= ESS_WARN_FRACTION * n:  # NaN included
        problems.append(
            f"the effective sample size fell to {float(min_ess):.3g} of {n} particles (below "
            f"{ESS_WARN_FRACTION:g} * num_particles): the estimates rest on a few particles"
        )
    bound = RANGE_WARN_FACTOR * float(sde.prior_std)
    largest = float(jnp.max(jnp.abs(x)))
    if largest > bound or not math.isfinite(float(log_evidence)):
        problems.append(
            f"a particle reached |x| = {largest:.3g}, beyond {RANGE_WARN_FACTOR:g} times the "
            f"prior's std ({bound:.3g}), log_evidence = {float(log_evidence):.3g}: the "
            "twisted Euler-Maruyama step is unstable"
        )
    if not problems:
        return None
    return (
        "sample_smc: "
        + "; ".join(problems)
        + ". Use more steps, more particles, or a better twist (MomentTwist() for a "
        "LinearMeasurement, TweedieTwist(data_var=v) otherwise)."
    )


def sample_smc(
    sde: AbstractSDE,
    score: ScoreFn,
    m,
    *,
    key,
    shape: tuple[int, ...],
    steps: int = 100,
    twist: AbstractTwist | None = None,
    resample_threshold: float = 0.5,
    t_eps: float | None = None,
    denoise: bool = True,
    x_T=None,
    progress: bool = False,
    sharding=None,
    throw: bool = False,
) -> SMCResult:
    r"""Sample the posterior $p(x_0 \mid y)$ with sequential Monte Carlo along the reverse
    diffusion: the twisted diffusion sampler (see the module docstring); estimates $\ln p(y)$.

    Asymptotically exact in the number of particles (for the discretised model), unlike the
    guided scores of `ss.guidance`, whose bias does not shrink with more samples.

    **Arguments:**

    - `sde`, `score`: the SDE and the prior's `score(t, x)` on one sample.
    - `m`: the measurement, a [`scoresde.LinearMeasurement`][], or with `TweedieTwist()` and
      `LogTwist` any [`scoresde.AbstractMeasurement`][] (its `log_likelihood(x)` on one sample,
      $\ln p(y \mid x_0)$, differentiable).
    - `key`: particle `i` draws its latent and its proposal noise from `fold_in(key, i)`; the
      resampling steps (joint by nature) use `fold_in(fold_in(key, 2**32 - 1), step)`.
    - `shape`: `(num_particles, *data_shape)`, at least 2 particles.
    - `steps`: Euler-Maruyama steps on the uniform grid from `sde.T` to `t_eps`.
    - `twist`: default (`None`) [`scoresde.MomentTwist`][] for a [`scoresde.LinearMeasurement`][]
      (covariance-aware, exact on Gaussian priors) and `TweedieTwist(data_var=1.0)` for any
      other likelihood (see [`scoresde.TweedieTwist`][]; `data_var` is the data's variance,
      pass yours); or [`scoresde.LogTwist`][] (a given $\ln\tilde p_t(y \mid x)$, e.g. the
      exact one). The plain `TweedieTwist()` is over-confident: on a two-mode posterior it
      loses modes (`benchmarks/smc_default.py`).
    - `resample_threshold`: in $[0, 1]$; systematic resampling before a step when
      ESS < `resample_threshold * num_particles` (0: never, 1: whenever the weights differ).
    - `t_eps`: the last time (default `sde.default_t_eps`).
    - `denoise`: return Tweedie's denoiser at `t_eps` (+1 NFE) rather than $x_{t_\varepsilon}$.
    - `x_T`: given latents instead of prior draws (e.g. exact draws from $p_T$).
    - `progress`: a progress bar.
    - `sharding`: a `jax.sharding.NamedSharding` splitting the particles over a mesh axis. The
      particles are coupled by resampling, so this is not the per-device loop of the other
      samplers: the particle arrays are laid out over the devices and XLA splits the
      per-particle work (the score and twist evaluations, the proposals) and inserts the
      collectives the weights' normalisation and the resampling gathers need. The same
      particles as on one device, up to the rounding of those sums. The number of particles
      must be a multiple of the device count.
    - `throw`: raise `RuntimeError` instead of warning (`RuntimeWarning`) when the run is
      unreliable: the smallest ESS below `ESS_WARN_FRACTION` (0.02) of the particles, or a
      particle beyond `RANGE_WARN_FACTOR` (100) times `sde.prior_std` (an unstable step). Not
      checked under a JAX transformation (`jit`, `vmap`): read `min_ess` there.

    **Returns:** an [`scoresde.SMCResult`][]; `nfe = steps * (evals + 2 vjps) (+1)` per
    particle (3 per step with `TweedieTwist`, $1 + 2 d_y$ with `MomentTwist`, 1 with `LogTwist`),
    times the score's own cost per call when it declares one (a guided score).

    **Raises:** `ValueError` for a measurement whose width is not the sample size, a threshold
    outside $[0, 1]$, a bad `shape` (fewer than 2 particles included), `steps` or `t_eps`;
    `FloatingPointError` for non-finite particles; `RuntimeError` with `throw=True` (above); `TypeError` for a `twist` that is not
    an [`scoresde.AbstractTwist`][], an `m` that is not an [`scoresde.AbstractMeasurement`][],
    or one that is not a [`scoresde.LinearMeasurement`][] where the twist needs it.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{wu2023tds,
          title={Practical and Asymptotically Exact Conditional Sampling in Diffusion Models},
          author={Wu, Luhuan and Trippe, Brian L. and Naesseth, Christian A. and
                  Blei, David M. and Cunningham, John P.},
          booktitle={NeurIPS}, year={2023}
        }
        ```
    """
    check_sde_and_score(sde, score)
    key = check_key(key)
    shape = check_shape(shape)
    if shape[0] < 2:
        raise ValueError(
            f"sample_smc needs at least 2 particles: shape=(num_particles, *data_shape) with "
            f"num_particles >= 2 (one particle has no weights to compare); got shape={shape}."
        )
    steps = check_steps(steps)
    throw = check_bool("throw", throw)
    if twist is None:
        twist = default_twist(m) if isinstance(m, AbstractMeasurement) else TweedieTwist()
    if not isinstance(twist, AbstractTwist):
        raise TypeError(
            f"twist must be TweedieTwist(...), MomentTwist() or LogTwist(log_twist); got {twist!r}."
        )
    _check_measurement(m, twist)
    size = math.prod(shape[1:])
    if isinstance(m, LinearMeasurement) and m.dim_x != size:
        raise ValueError(
            f"m's A has width {m.dim_x}, but the data shape {shape[1:]} has {size} entries; A "
            "must act on the flattened sample."
        )
    try:
        threshold = float(resample_threshold)
    except (TypeError, ValueError):
        raise TypeError(
            f"resample_threshold must be a number in [0, 1]; got {resample_threshold!r}."
        ) from None
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"resample_threshold must lie in [0, 1]; got resample_threshold={resample_threshold}."
        )
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    denoise = check_bool("denoise", denoise)
    if sharding is not None and shape[0] % check_sharding(sharding)[1]:
        raise ValueError(
            f"sample_smc: {shape[0]} particles do not split evenly over the "
            f"{check_sharding(sharding)[1]} devices of sharding (padding would change the "
            "particle system); use a multiple of the device count."
        )
    dtype = jnp.result_type(float)
    x_T = check_latents(x_T, shape, dtype)
    x, log_w, log_z, ess, resampled = _sample_smc(
        sde=sde,
        score=score,
        m=m,
        twist=twist,
        key=key,
        shape=shape,
        steps=steps,
        t_eps=jnp.asarray(t_eps, dtype),
        threshold=jnp.asarray(threshold, dtype),
        denoise=denoise,
        x_T=x_T,
        progress=check_bool("progress", progress),
        split=_Split(None if sharding is None else auto_axes(sharding)),
    )
    raise_if_not_finite(
        "sample_smc",
        x,
        hint="use more steps or a twist with data_var.",
        diagnose=diagnose_score(
            score, sde.T, lambda: latents_and_noise_keys(sde, key, shape, x_T, dtype)[0]
        ),
    )
    min_ess = jnp.min(ess)
    problem = _diagnose(sde, shape[0], x, log_z, min_ess)
    if problem is not None and throw:
        raise RuntimeError(problem)
    if problem is not None:
        warnings.warn(problem, RuntimeWarning, stacklevel=2)
    evals, vjps = twist.cost(m)
    calls = steps * (evals + 2 * vjps) + (1 if denoise else 0)  # a VJP counting 2 calls
    nfe = jnp.full((shape[0],), network_nfe(score, calls), jnp.int32)
    if sharding is not None:
        x, log_w, nfe = jax.device_put((x, log_w, nfe), result_sharding(sharding, shape[0]))
    return SMCResult(
        x=x,
        log_weights=log_w,
        log_evidence=log_z,
        ess=ess,
        resampled=resampled,
        nfe=nfe,
        min_ess=min_ess,
        num_resampled=jnp.sum(resampled.astype(jnp.int32)),
    )
