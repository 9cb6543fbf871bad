r"""Score-matching objectives: pure functions of a batch returning a scalar, usable with `jax.grad`.

- Denoising score matching in continuous time (`dsm_loss`):
  $E_t\,w(t)\,\lambda(t)\,E_{x_0, z}\|s(t, \alpha x_0 + \sigma z) + z/\sigma\|^2$, with a weighting
  $\lambda$ ([`scoresde.SigmaSquared`][], [`scoresde.LikelihoodWeighting`][],
  [`scoresde.EDMWeighting`][]) and a time sampler ([`scoresde.UniformTime`][],
  [`scoresde.ImportanceTime`][], [`scoresde.EDMTime`][]) that returns $t$ with the importance
  weight $w(t)$ keeping the estimate unbiased for uniform $t$ on $[t_\varepsilon, T]$.
- Discrete multi-scale NCSN (`ncsn_loss`).
- Sliced (`sliced_score_matching_loss`, with its variance-reduced form), implicit
  (`implicit_score_matching_loss`, exact trace) and explicit (`explicit_score_matching_loss`)
  score matching of a time-free `score(x)`.

Sums run over the data dimensions of one sample; means over the batch.
"""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.special as jsp
from jaxtyping import Array, Float

from .._checks import check_positive, check_t_eps
from .._custom_types import Batch, Key, ScoreFn
from .._sde import AbstractSDE


def _check_batch(x, name="x0"):
    if not hasattr(x, "shape") or jnp.ndim(x) < 2:
        raise ValueError(
            f"{name} must be a batch of shape (batch, *data_shape); got shape "
            f"{getattr(x, 'shape', type(x).__name__)}."
        )
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
        raise TypeError(f"{name} must be a floating-point array; got dtype {jnp.result_type(x)}.")


def _sum_data(x):
    return jnp.sum(jnp.reshape(x, (x.shape[0], -1)), axis=1)


# --- weightings ------------------------------------------------------------------------------


class AbstractWeighting(eqx.Module):
    r"""A weighting $\lambda(t)$ of the denoising score-matching objective."""

    @abc.abstractmethod
    def __call__(self, sde: AbstractSDE, t: Array) -> Array: ...


class SigmaSquared(AbstractWeighting):
    r"""$\lambda(t) = \sigma(t)^2$: the noise-prediction loss $E\|\sigma s + z\|^2$."""

    def __call__(self, sde, t):
        return sde.marginal(t)[1] ** 2


class LikelihoodWeighting(AbstractWeighting):
    r"""$\lambda(t) = g(t)^2$: the objective bounds $\mathrm{KL}(p_0 \| p_\theta)$.

    Song et al. (2021), up to $\mathrm{KL}(p_T \| \text{prior})$.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{song2021maximum,
          title={Maximum Likelihood Training of Score-Based Diffusion Models},
          author={Song, Yang and Durkan, Conor and Murray, Iain and Ermon, Stefano},
          booktitle={NeurIPS}, year={2021}}
        ```
    """

    def __call__(self, sde, t):
        return sde.diffusion(t) ** 2


class EDMWeighting(AbstractWeighting):
    r"""Karras et al.'s weighting $\lambda_{EDM}\|D - x_0\|^2$ of the denoiser error.

    $\lambda_{EDM} = (\hat\sigma^2 + \sigma_d^2)/(\hat\sigma\sigma_d)^2$ with
    $\hat\sigma = \sigma/\alpha$. Since $D - x_0 = (\sigma^2/\alpha)(s + z/\sigma)$, in score
    space $\lambda(t) = \sigma^2 (\hat\sigma^2 + \sigma_d^2)/\sigma_d^2$.
    """

    sigma_data: float = 0.5

    def __check_init__(self):
        check_positive("sigma_data", self.sigma_data)

    def __call__(self, sde, t):
        alpha, sigma = sde.marginal(t)
        s_hat = sigma / alpha
        return sigma**2 * (s_hat**2 + self.sigma_data**2) / self.sigma_data**2


# --- time samplers ---------------------------------------------------------------------------


def _uniforms(key, num, stratified, dtype):
    """`num` numbers in (0, 1): iid, or one random offset on the grid i/num (low discrepancy)."""
    if stratified:
        u0 = jr.uniform(key, (), dtype)
        u = jnp.mod(u0 + jnp.arange(num, dtype=dtype) / num, 1.0)
    else:
        u = jr.uniform(key, (num,), dtype)
    tiny = jnp.finfo(dtype).eps
    return jnp.clip(u, tiny, 1 - tiny)


class AbstractTimeSampler(eqx.Module):
    r"""Draws times $t_i \in [t_\varepsilon, T]$ and importance weights $w_i$.

    $w = u/q$ is the ratio of the uniform density $u = 1/(T - t_\varepsilon)$ to the sampler's
    density $q$, so $E_q[w\,\ell(t)] = E_{U[t_\varepsilon, T]}[\ell(t)]$ (samplers that define
    their own objective, like [`scoresde.EDMTime`][], return $w = 1$). `stratified=True` places
    the batch's quantiles on a randomly shifted grid $(u_0 + i/B) \bmod 1$.
    """

    stratified: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def from_uniform(self, sde: AbstractSDE, u: Array, t_eps: float) -> tuple[Array, Array]:
        """Map quantiles `u` in (0, 1) to `(t, weight)`."""

    def sample(
        self, key: Key, sde: AbstractSDE, num: int, t_eps: float, dtype=None
    ) -> tuple[Array, Array]:
        """`num` times and their importance weights."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        return self.from_uniform(sde, _uniforms(key, num, self.stratified, dtype), t_eps)


class UniformTime(AbstractTimeSampler):
    r"""$t \sim U[t_\varepsilon, T]$, weight 1."""

    stratified: bool = eqx.field(default=False, static=True)

    def from_uniform(self, sde, u, t_eps):
        return t_eps + u * (sde.T - t_eps), jnp.ones_like(u)


class ImportanceTime(AbstractTimeSampler):
    r"""$q(t) \propto g(t)^2/\sigma(t)^2$, to lower the variance of the likelihood weighting.

    Since $(\sigma^2)' = 2f\sigma^2 + g^2$ and $\alpha' = f\alpha$,
    $g^2/\sigma^2 = -2\lambda'(t)$ with $\lambda$ the half log-SNR: $q$ is uniform in $\lambda$
    and the inverse CDF is
    $t = \lambda^{-1}(\lambda(t_\varepsilon) - u\,[\lambda(t_\varepsilon) - \lambda(T)])$.
    The weight is $w = \sigma^2 Z / (g^2 (T - t_\varepsilon))$ with
    $Z = 2[\lambda(t_\varepsilon) - \lambda(T)]$, so $w\,g^2$ is bounded.
    """

    stratified: bool = eqx.field(default=False, static=True)

    def from_uniform(self, sde, u, t_eps):
        lam_lo = sde.log_snr(jnp.asarray(t_eps, u.dtype))
        lam_hi = sde.log_snr(jnp.asarray(sde.T, u.dtype))
        t = sde.log_snr_inverse(lam_lo - u * (lam_lo - lam_hi))
        t = jnp.clip(t, t_eps, sde.T)
        _, sigma = sde.marginal(t)
        g2 = sde.diffusion(t) ** 2
        weight = sigma**2 * 2 * (lam_lo - lam_hi) / (g2 * (sde.T - t_eps))
        return t, weight


class EDMTime(AbstractTimeSampler):
    r"""Karras et al.'s log-normal noise levels: $\ln\hat\sigma \sim N(P_{mean}, P_{std}^2)$.

    $\hat\sigma = \sigma/\alpha$; weight 1; $t = \lambda^{-1}(-\ln\hat\sigma)$, clipped to $[t_\varepsilon, T]$. The objective is the
    expectation under this law (no reweighting to uniform $t$).
    """

    p_mean: float = -1.2
    p_std: float = 1.2
    stratified: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        check_positive("p_std", self.p_std)

    def from_uniform(self, sde, u, t_eps):
        log_sigma = self.p_mean + self.p_std * jsp.ndtri(u)
        t = jnp.clip(sde.log_snr_inverse(-log_sigma), t_eps, sde.T)
        return t, jnp.ones_like(u)


# --- denoising score matching ----------------------------------------------------------------


def _check_dsm_args(sde, weighting, time_sampler, t_eps):
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be an AbstractSDE; got {type(sde).__name__}.")
    if not isinstance(weighting, AbstractWeighting):
        raise TypeError(
            f"weighting must be an AbstractWeighting (e.g. SigmaSquared()); got {weighting!r}."
        )
    if not isinstance(time_sampler, AbstractTimeSampler):
        raise TypeError(
            f"time_sampler must be an AbstractTimeSampler (e.g. UniformTime()); got "
            f"{time_sampler!r}."
        )
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    return t_eps


_SIGMA_SQUARED = SigmaSquared()
_UNIFORM_TIME = UniformTime()


def diffuse_batch(key: Key, sde: AbstractSDE, x0: Array, time_sampler, t_eps):
    r"""Times $t_i$ from `time_sampler` (with their weights $w_i$), noise $z_i$ and the diffused
    batch $x_{t_i} = \alpha(t_i) x_{0,i} + \sigma(t_i) z_i$: `(t, w, z, x_t)`."""
    key_t, key_z = jr.split(key)
    dtype = jnp.result_type(x0)
    t, w = time_sampler.sample(key_t, sde, x0.shape[0], t_eps, dtype)
    z = jr.normal(key_z, x0.shape, dtype)
    alpha, sigma = jax.vmap(sde.marginal)(t)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return t, w, z, jnp.reshape(alpha, shape) * x0 + jnp.reshape(sigma, shape) * z


def dsm_loss(
    score: ScoreFn,
    sde: AbstractSDE,
    x0: Batch,
    *,
    key: Key,
    weighting: AbstractWeighting = _SIGMA_SQUARED,
    time_sampler: AbstractTimeSampler = _UNIFORM_TIME,
    t_eps: float | None = None,
    cond=None,
) -> Array:
    r"""Continuous-time denoising score matching on a batch `x0`.

    $$\frac1B \sum_i w_i \frac{\lambda(t_i)}{\sigma_i^2}
      \big\|\sigma_i\, s(t_i, \alpha_i x_{0,i} + \sigma_i z_i) + z_i\big\|^2,$$

    an unbiased estimate of $E_{t \sim U[t_\varepsilon, T]} \lambda(t) E\|s + z/\sigma\|^2$
    (or of the sampler's own objective, for [`scoresde.EDMTime`][]).

    **Arguments:**

    - `score`: `score(t, x)` on one sample (e.g. a parametrisation wrapper).
    - `x0`: data, `(batch, *data_shape)`.
    - `key`: the randomness of $t$ and $z$.
    - `weighting`, `time_sampler`: as values; `t_eps` defaults to `sde.default_t_eps`.
    - `cond`: per-sample conditioning (e.g. class labels, leading axis = batch): the score is
      then called as `score(t, x, cond_i)`.
    """
    _check_batch(x0)
    t_eps = _check_dsm_args(sde, weighting, time_sampler, t_eps)
    t, w, z, x_t = diffuse_batch(key, sde, x0, time_sampler, t_eps)
    sigma = jax.vmap(sde.marginal)(t)[1]
    shape = (-1,) + (1,) * (x0.ndim - 1)
    s = jax.vmap(score)(t, x_t) if cond is None else jax.vmap(score)(t, x_t, cond)  # type: ignore[call-arg]
    if s.shape != x0.shape:
        raise ValueError(f"score(t, x) must return x's shape {x0.shape[1:]}; got {s.shape[1:]}.")
    err = _sum_data((jnp.reshape(sigma, shape) * s + z) ** 2)
    lam = jax.vmap(lambda ti: weighting(sde, ti))(t)
    return jnp.mean(w * lam / sigma**2 * err)


class DenoisingScoreMatching(eqx.Module):
    """[`scoresde.dsm_loss`][] as a module `loss(model, x0, key)` for [`scoresde.fit`][]."""

    sde: AbstractSDE
    weighting: AbstractWeighting = _SIGMA_SQUARED
    time_sampler: AbstractTimeSampler = _UNIFORM_TIME
    t_eps: float | None = None

    def __check_init__(self):
        _check_dsm_args(self.sde, self.weighting, self.time_sampler, self.t_eps)

    def __call__(self, model: ScoreFn, x0: Batch, key: Key) -> Array:
        return dsm_loss(
            model,
            self.sde,
            x0,
            key=key,
            weighting=self.weighting,
            time_sampler=self.time_sampler,
            t_eps=self.t_eps,
        )


# --- NCSN ------------------------------------------------------------------------------------


def geometric_sigmas(sigma_max: float, sigma_min: float, num: int) -> Float[Array, " num"]:
    r"""$\sigma_1 > \dots > \sigma_L$, geometric from `sigma_max` down to `sigma_min`."""
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    if not sigma_min < sigma_max:
        raise ValueError(f"need sigma_min < sigma_max; got {sigma_min} and {sigma_max}.")
    if isinstance(num, bool) or not isinstance(num, int) or num < 2:
        raise ValueError(f"num must be an int >= 2; got num={num!r}.")
    return jnp.exp(jnp.linspace(math.log(sigma_max), math.log(sigma_min), num))


def ncsn_loss(score: ScoreFn, sigmas: Array, x0: Batch, *, key: Key) -> Array:
    r"""Song & Ermon's multi-scale denoising objective (NCSN).

    $$\frac1L\sum_i \frac{\sigma_i^2}{2} E\|s(\sigma_i, \tilde x) + (\tilde x - x)/\sigma_i^2\|^2.$$

    Each sample draws one level $i$ uniformly (an unbiased estimate of the mean over levels)
    and $\tilde x = x + \sigma_i z$. The network is called as `score(sigma_i, x)`: its time
    argument is the noise level, as for [`scoresde.EDMSDE`][] where $\sigma(t) = t$.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{song2019generative,
          title={Generative Modeling by Estimating Gradients of the Data Distribution},
          author={Song, Yang and Ermon, Stefano},
          booktitle={NeurIPS}, year={2019}}
        ```
    """
    _check_batch(x0)
    sigmas = jnp.asarray(sigmas)
    if sigmas.ndim != 1 or sigmas.shape[0] < 1:
        raise ValueError(f"sigmas must have shape (L,); got {sigmas.shape}.")
    dtype = jnp.result_type(x0)
    key_i, key_z = jr.split(key)
    idx = jr.randint(key_i, (x0.shape[0],), 0, sigmas.shape[0])
    sigma = sigmas[idx].astype(dtype)
    z = jr.normal(key_z, x0.shape, dtype)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    x_tilde = x0 + jnp.reshape(sigma, shape) * z
    s = jax.vmap(score)(sigma, x_tilde)
    return 0.5 * jnp.mean(_sum_data((jnp.reshape(sigma, shape) * s + z) ** 2))


class NCSNLoss(eqx.Module):
    """[`scoresde.ncsn_loss`][] as a module `loss(model, x0, key)` for [`scoresde.fit`][]."""

    sigmas: Array

    def __call__(self, model: ScoreFn, x0: Batch, key: Key) -> Array:
        return ncsn_loss(model, self.sigmas, x0, key=key)


# --- sliced, implicit and explicit score matching --------------------------------------------


class AbstractProjection(eqx.Module):
    r"""How sliced score matching draws its directions $v$, with $E[vv^\top] = I$."""

    @abc.abstractmethod
    def sample(self, key: Key, num: int, shape: tuple[int, ...], dtype) -> Array:
        """`num` directions of the sample's `shape`: an array `(num, *shape)`."""


class GaussianProjection(AbstractProjection):
    r"""$v \sim N(0, I)$."""

    def sample(self, key, num, shape, dtype):
        return jr.normal(key, (num, *shape), dtype)


class RademacherProjection(AbstractProjection):
    r"""Independent $\pm 1$ entries: the lowest variance of $v^\top J v$ for a fixed $J$."""

    def sample(self, key, num, shape, dtype):
        return jr.rademacher(key, (num, *shape), dtype)


class SphereProjection(AbstractProjection):
    r"""Uniform on the sphere of radius $\sqrt D$ ($D$ the sample's size)."""

    def sample(self, key, num, shape, dtype):
        v = jr.normal(key, (num, *shape), dtype)
        norm = jnp.sqrt(jnp.sum(jnp.reshape(v, (num, -1)) ** 2, axis=1))
        dim = math.prod(shape)
        return v * jnp.reshape(math.sqrt(dim) / norm, (num,) + (1,) * len(shape))


# The strings `sliced_score_matching_loss(projection=...)` accepts, as their values.
PROJECTIONS: dict[str, AbstractProjection] = {
    "gaussian": GaussianProjection(),
    "rademacher": RademacherProjection(),
    "sphere": SphereProjection(),
}


def as_projection(projection) -> AbstractProjection:
    """`projection` as a value: an `AbstractProjection` unchanged, a name of `PROJECTIONS`
    converted (the one place the string aliases are read)."""
    if isinstance(projection, AbstractProjection):
        return projection
    if isinstance(projection, str) and projection in PROJECTIONS:
        return PROJECTIONS[projection]
    raise ValueError(
        "projection must be GaussianProjection(), RademacherProjection(), SphereProjection() "
        f"or one of the names {tuple(PROJECTIONS)}; got projection={projection!r}."
    )


def sliced_score_matching_loss(
    score,
    x: Batch,
    *,
    key: Key,
    projection: AbstractProjection | str = GaussianProjection(),
    num_projections: int = 1,
    variance_reduced: bool = False,
) -> Array:
    r"""Sliced score matching of a time-free `score(x)`.

    $$E_x E_v[v^\top \partial_x(v^\top s)\, v + (v^\top s)^2/2].$$

    `projection` draws $v$ with $E[vv^\top] = I$: [`scoresde.GaussianProjection`][] (the
    default), [`scoresde.RademacherProjection`][] or [`scoresde.SphereProjection`][] (uniform on
    the sphere of radius $\sqrt D$); the names `"gaussian"`, `"rademacher"` and `"sphere"` are
    aliases. `variance_reduced=True` gives SSM-VR, with
    $\|s\|^2/2$ (the exact expectation over $v$) in place of $(v^\top s)^2/2$. Each
    $v^\top J v$ costs one JVP. Equal in expectation to the implicit objective.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{song2020sliced,
          title={Sliced Score Matching: A Scalable Approach to Density and Score Estimation},
          author={Song, Yang and Garg, Sahaj and Shi, Jiaxin and Ermon, Stefano},
          booktitle={UAI}, year={2020}}
        ```
    """
    _check_batch(x, "x")
    projection = as_projection(projection)
    if isinstance(num_projections, bool) or not isinstance(num_projections, int):
        raise TypeError(f"num_projections must be an int; got {num_projections!r}.")
    if num_projections < 1:
        raise ValueError(f"num_projections must be >= 1; got {num_projections}.")
    dtype = jnp.result_type(x)

    def one(k, xi):
        v = projection.sample(k, num_projections, xi.shape, dtype)
        s, jv = jax.vmap(lambda vi: jax.jvp(score, (xi,), (vi,)))(v)
        trace = jnp.mean(_sum_data(v * jv))
        if variance_reduced:
            quad = 0.5 * jnp.sum(s[0] ** 2)
        else:
            quad = 0.5 * jnp.mean(_sum_data(v * s) ** 2)
        return trace + quad

    keys = jr.split(key, x.shape[0])
    return jnp.mean(jax.vmap(one)(keys, x))


def implicit_score_matching_loss(score, x: Batch) -> Array:
    r"""Hyvarinen's implicit objective, with the exact trace.

    $$E[\|s(x)\|^2/2 + \operatorname{tr}(\partial s/\partial x)].$$

    Costs one `jax.jacfwd` per sample (D JVPs): meant for small dimensions. Equals half the
    explicit objective up to a constant independent of `score`.
    """
    _check_batch(x, "x")

    def one(xi):
        s = score(xi)
        jac = jax.jacfwd(score)(xi)
        d = xi.size
        return 0.5 * jnp.sum(s**2) + jnp.trace(jnp.reshape(jac, (d, d)))

    return jnp.mean(jax.vmap(one)(x))


def explicit_score_matching_loss(score, x: Batch, true_score) -> Array:
    r"""$E\|s(x) - \nabla\ln p(x)\|^2$ against a known `true_score(x)` (both on one sample)."""
    _check_batch(x, "x")
    s = jax.vmap(score)(x)
    target = jax.vmap(true_score)(x)
    if s.shape != x.shape or target.shape != x.shape:
        raise ValueError(
            f"score and true_score must return x's shape {x.shape[1:]}; got {s.shape[1:]} and "
            f"{target.shape[1:]}."
        )
    return jnp.mean(_sum_data((s - target) ** 2))
