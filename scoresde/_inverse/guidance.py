r"""Guided scores, each a `score(t, x)`; the public face and its overview are `scoresde.guidance`."""

import abc
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

from .._checks import check_int, check_positive
from .._custom_types import Key, Sample, Scalar, ScoreFn
from .._nfe import AbstractCostedScore, network_evals
from .._score_calls import check_like, checked_score
from .._sde import AbstractSDE, check_sde_and_score
from .measurement import LinearMeasurement

__all__ = [
    "AbstractGuidedScore",
    "DPS",
    "TMPD",
    "Classifier",
    "ClassifierFree",
    "PiGDM",
    "Posterior",
    "Replacement",
]


def _check_measurement(m) -> LinearMeasurement:
    if not isinstance(m, LinearMeasurement):
        raise TypeError(f"m must be a scoresde.LinearMeasurement; got {type(m).__name__}.")
    return m


def _check_label(name, value, num_classes=None):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int class index; got {name}={value!r}.")
    if value < 0 or (num_classes is not None and value >= num_classes):
        bound = "" if num_classes is None else f" < num_classes={num_classes}"
        raise ValueError(f"{name} must be >= 0{bound}; got {name}={value}.")
    return int(value)


def _denoiser(sde, score, t, x):
    r"""`(s, x0_hat, vjp)` with $s$ = `score(t, x)`, $\hat x_0$ Tweedie's denoiser and
    `vjp(v)` $= J^\top v$, $J = \partial\hat x_0/\partial x = (I + \sigma^2\,\partial s/\partial x)/\alpha$
    (one score evaluation; each `vjp` call is one VJP through the score)."""
    alpha, sigma = sde.marginal(t)
    s, vjp_s = jax.vjp(lambda x_: checked_score(score, t, x_), x)

    def vjp(v):
        return (v + sigma**2 * vjp_s(v)[0]) / alpha

    return s, (x + sigma**2 * s) / alpha, vjp


def _check_diameter(support_diameter):
    if support_diameter is None:
        return None
    check_positive("support_diameter", support_diameter)
    return jnp.asarray(support_diameter)


def _within_support(sde, t, g, diameter):
    r"""Scale the guidance term $g \approx \nabla_x \ln p_t(y \mid x)$ back onto the ball that
    the exact term never leaves when the data lie in a set of diameter $D$:
    $\nabla_x \ln p_t(y \mid x) = \tfrac{\alpha}{\sigma^2}(\mathbb E[x_0 \mid x, y] -
    \mathbb E[x_0 \mid x])$ (Tweedie for the posterior and the prior), both means in the
    support's convex hull, so $\lVert\nabla_x \ln p_t(y \mid x)\rVert \le \alpha D / \sigma^2$.
    `None` leaves $g$ unchanged."""
    if diameter is None:
        return g
    alpha, sigma = sde.marginal(t)
    bound = (alpha * diameter / sigma**2).astype(g.dtype)
    norm = jnp.sqrt(jnp.sum(g**2))
    return g * jnp.minimum(1, bound / jnp.maximum(norm, jnp.finfo(g.dtype).tiny))


class AbstractGuidedScore(AbstractCostedScore):
    r"""A guided score: a `score(t, x)` on ONE sample that declares what one call costs.

    - `evals_per_call`: evaluations of the wrapped score per call (a class attribute).
    - `vjps_per_call`: vector-Jacobian products through the wrapped score per call; a class
      attribute where it is fixed, a property where it depends on the instance
      ([`scoresde.guidance.TMPD`][]: $d_y$).
    - `nfe_per_call`: the two in network evaluations, a VJP counting as 2:
      `evals_per_call + 2 * vjps_per_call` (times the wrapped score's own `nfe_per_call` when
      it is itself a guided score; [`scoresde.guidance.Classifier`][] adds its classifier's 3).
      Every sampler reports `nfe` in these units.

    A subclass that does not declare both cannot be instantiated.
    """

    evals_per_call: eqx.AbstractClassVar[int]

    @property
    @abc.abstractmethod
    def vjps_per_call(self) -> int:
        """VJPs through the wrapped score per call."""

    @property
    def nfe_per_call(self) -> int:
        """Network evaluations per call, a VJP counting as 2."""
        return self.evals_per_call + 2 * self.vjps_per_call

    @abc.abstractmethod
    def __call__(self, t: Scalar, x: Sample) -> Sample: ...


class _AbstractWrapsScore(AbstractGuidedScore):
    """A guided score around one `score(t, x)`, which may itself declare a cost: each
    evaluation of it and each VJP through it costs that many times more."""

    score: eqx.AbstractVar[ScoreFn]

    @property
    def nfe_per_call(self) -> int:
        return (self.evals_per_call + 2 * self.vjps_per_call) * network_evals(self.score)


class Posterior(_AbstractWrapsScore):
    r"""$\nabla\ln p_t(x \mid y) = \nabla\ln p_t(x) + \nabla\ln p_t(y \mid x)$: exact if both are.

    With [`scoresde.analytic.marginal_score`][] and
    [`scoresde.analytic.noisy_likelihood_score`][] it is the exact posterior score for Gaussian
    and Gaussian-mixture priors: the oracle the approximate methods are tested against.

    **Arguments:**

    - `score`: the prior's `score(t, x)`.
    - `likelihood_score`: $\nabla_x \ln p_t(y \mid x)$ as a `score(t, x)`.
    """

    score: ScoreFn
    likelihood_score: ScoreFn

    evals_per_call: ClassVar[int] = 1
    vjps_per_call: ClassVar[int] = 0

    def __check_init__(self):
        if not callable(self.score):
            raise TypeError(f"score must be callable as score(t, x); got {self.score!r}.")
        if not callable(self.likelihood_score):
            raise TypeError(
                "likelihood_score must be callable as likelihood_score(t, x); got "
                f"{self.likelihood_score!r}."
            )

    def __call__(self, t: Scalar, x: Sample) -> Sample:
        s = checked_score(self.score, t, x)
        ls = check_like(self.likelihood_score(t, x), x, who="likelihood_score(t, x)")
        return s + ls


class DPS(_AbstractWrapsScore):
    r"""Diffusion posterior sampling (Chung et al. 2023): approximate, exact for no prior.

    Replaces $p(x_0 \mid x_t)$ by a point mass at Tweedie's $\hat x_0(x)$:

    $$s(t, x) + \lambda\,\nabla_x \ln N(y; A\hat x_0(x), R)
      = s(t, x) - \tfrac{\lambda}{2}\,\nabla_x \lVert y - A\hat x_0(x)\rVert^2_{R^{-1}}
      = s + \lambda J^\top A^\top R^{-1}(y - A\hat x_0).$$

    Normalisation: `scale` $\lambda$ multiplies the log-likelihood gradient, so
    $\lambda = 1$ is the plain point-estimate likelihood with the measurement's own noise
    (for scalar noise, $-\nabla\lVert y - A\hat x_0\rVert^2 / (2 s_y^2)$). The paper's step
    $\zeta / \lVert y - A\hat x_0\rVert$ applied to the unweighted squared norm is a
    sampler-dependent, time-varying $\lambda$; it ignores the spread of $p(x_0 \mid x_t)$ and so
    over-weights $y$ at large $t$ (see [`scoresde.guidance.TMPD`][] for the fix).

    Cost: 1 score evaluation and 1 VJP through it.

    **Arguments:** `scale` $\lambda \ge 0$ (default 1); `support_diameter`: optional $D$, the diameter of a set that holds the data
      ($2\sqrt d$ for data in $[-1, 1]^d$). The guidance term is then scaled back to norm
      $\le \alpha D / \sigma^2$, a bound the exact $\nabla_x \ln p_t(y \mid x)$ obeys, so
      exact guidance is unchanged while a learned network's Jacobian error, amplified about
      $1/\alpha^2$ at high noise, cannot blow the sampler up. Default `None` (no bound).

    ??? cite "Reference"
        ```bibtex
        @inproceedings{chung2023dps,
          title={Diffusion Posterior Sampling for General Noisy Inverse Problems},
          author={Chung, Hyungjin and Kim, Jeongsol and Mccann, Michael T. and
                  Klasky, Marc L. and Ye, Jong Chul},
          booktitle={ICLR}, year={2023}
        }
        ```
    """

    sde: AbstractSDE
    score: ScoreFn
    measurement: LinearMeasurement
    scale: Float[Array, ""]
    support_diameter: Float[Array, ""] | None

    evals_per_call: ClassVar[int] = 1
    vjps_per_call: ClassVar[int] = 1

    def __init__(self, sde, score, m, scale=1.0, *, support_diameter=None):
        check_sde_and_score(sde, score)
        check_positive("scale", scale, strict=False)
        self.sde, self.score, self.measurement = sde, score, _check_measurement(m)
        self.scale = jnp.asarray(scale)
        self.support_diameter = _check_diameter(support_diameter)

    def __call__(self, t: Scalar, x: Sample) -> Sample:
        m = self.measurement
        s, x0, vjp = _denoiser(self.sde, self.score, t, x)
        g = m.transpose((m.y - m.apply(x0)) / m.noise_var, x).astype(x.dtype)
        g = _within_support(self.sde, t, vjp(g).astype(x.dtype), self.support_diameter)
        return s + (self.scale * g).astype(x.dtype)


class PiGDM(_AbstractWrapsScore):
    r"""Pseudo-inverse guided diffusion (Song et al. 2023): approximate; exact for $N(\mu, vI)$
    priors with `data_var` $= v$.

    Models $p(x_0 \mid x_t) \approx N(\hat x_0(x), r_t^2 I)$ with
    $r_t^2 = v\sigma^2 / (\alpha^2 v + \sigma^2)$ (the posterior variance of $x_0$ under a
    $N(\mu, vI)$ prior; the paper's $\sigma_t^2/(1 + \sigma_t^2)$ is $v = 1$, $\alpha = 1$):

    $$s(t, x) + J^\top A^\top (r_t^2 A A^\top + R)^{-1} (y - A\hat x_0(x)).$$

    $AA^\top$ ($d_y \times d_y$) is formed once at construction; each call solves one
    $d_y \times d_y$ system. Cost: 1 score evaluation and 1 VJP.

    **Arguments:** `data_var` $v > 0$ (default 1: data scaled to unit variance); `support_diameter`: optional $D$, the diameter of a set that holds the data
      ($2\sqrt d$ for data in $[-1, 1]^d$). The guidance term is then scaled back to norm
      $\le \alpha D / \sigma^2$, a bound the exact $\nabla_x \ln p_t(y \mid x)$ obeys, so
      exact guidance is unchanged while a learned network's Jacobian error, amplified about
      $1/\alpha^2$ at high noise, cannot blow the sampler up. Default `None` (no bound).

    ??? cite "Reference"
        ```bibtex
        @inproceedings{song2023pgdm,
          title={Pseudoinverse-Guided Diffusion Models for Inverse Problems},
          author={Song, Jiaming and Vahdat, Arash and Mardani, Morteza and Kautz, Jan},
          booktitle={ICLR}, year={2023}
        }
        ```
    """

    sde: AbstractSDE
    score: ScoreFn
    measurement: LinearMeasurement
    data_var: Float[Array, ""]
    gram: Float[Array, "d_y d_y"]
    support_diameter: Float[Array, ""] | None

    evals_per_call: ClassVar[int] = 1
    vjps_per_call: ClassVar[int] = 1

    def __init__(self, sde, score, m, *, data_var=1.0, support_diameter=None):
        check_sde_and_score(sde, score)
        check_positive("data_var", data_var)
        self.sde, self.score, self.measurement = sde, score, _check_measurement(m)
        self.data_var = jnp.asarray(data_var)
        self.support_diameter = _check_diameter(support_diameter)
        A = m.matrix
        self.gram = A @ A.T

    def __call__(self, t: Scalar, x: Sample) -> Sample:
        m = self.measurement
        alpha, sigma = self.sde.marginal(t)
        s, x0, vjp = _denoiser(self.sde, self.score, t, x)
        r2 = self.data_var * sigma**2 / (alpha**2 * self.data_var + sigma**2)
        cov = r2 * self.gram + jnp.diag(m.noise_var)
        w = jnp.linalg.solve(cov, m.y - m.apply(x0))
        g = vjp(m.transpose(w, x).astype(x.dtype)).astype(x.dtype)
        return s + _within_support(self.sde, t, g, self.support_diameter)


class TMPD(_AbstractWrapsScore):
    r"""Tweedie moment projected diffusion (Boys et al. 2023): approximate; exact for Gaussian
    priors (with `diagonal=False`).

    Projects $p(x_0 \mid x_t)$ on a Gaussian with Tweedie's two moments, mean $\hat x_0$ and
    covariance $C = \tfrac{\sigma^2}{\alpha} J$, so that
    $p_t(y \mid x) \approx N(y; A\hat x_0, A C A^\top + R)$ and, holding the covariance fixed,

    $$s(t, x) + J^\top A^\top (A C A^\top + R)^{-1} (y - A\hat x_0(x)).$$

    - `diagonal=False`: $A C A^\top$ from $d_y$ VJPs $J^\top a_i$ (rows $a_i$ of $A$; $J$ is
      symmetric for a true score); the guidance term reuses them. Cost: 1 score evaluation
      and $d_y$ VJPs (`vjps_per_call == d_y`).
    - `diagonal=True`: $C \approx \operatorname{diag}(c)$, $c = \tfrac{\sigma^2}{\alpha} J^\top
      \mathbf 1$ (row sums: exact when $C$ is diagonal), so $A C A^\top \approx
      \operatorname{diag}((A \circ A) c)$; then one more VJP for $J^\top A^\top w$. Cost:
      1 score evaluation and 2 VJPs. Approximate even for Gaussian priors unless $C$ is
      diagonal and $A$ selects or scales coordinates.

    **Arguments:** `support_diameter`: as [`scoresde.guidance.PiGDM`][].

    ??? cite "Reference"
        ```bibtex
        @article{boys2023tmpd,
          title={Tweedie Moment Projected Diffusions for Inverse Problems},
          author={Boys, Benjamin and Girolami, Mark and Pidstrigach, Jakiw and Reich, Sebastian
                  and Mosca, Alan and Akyildiz, O. Deniz},
          journal={arXiv:2310.06721}, year={2023}
        }
        ```
    """

    sde: AbstractSDE
    score: ScoreFn
    measurement: LinearMeasurement
    diagonal: bool = eqx.field(static=True)
    support_diameter: Float[Array, ""] | None

    evals_per_call: ClassVar[int] = 1

    def __init__(self, sde, score, m, diagonal=False, *, support_diameter=None):
        check_sde_and_score(sde, score)
        if not isinstance(diagonal, (bool, np.bool_)):
            raise TypeError(f"diagonal must be True or False; got diagonal={diagonal!r}.")
        self.sde, self.score, self.measurement = sde, score, _check_measurement(m)
        self.diagonal = bool(diagonal)
        self.support_diameter = _check_diameter(support_diameter)

    @property
    def vjps_per_call(self) -> int:
        return 2 if self.diagonal else self.measurement.dim_y

    def __call__(self, t: Scalar, x: Sample) -> Sample:
        m = self.measurement
        alpha, sigma = self.sde.marginal(t)
        if self.diagonal:
            s, x0, vjp = _denoiser(self.sde, self.score, t, x)
            residual = m.y - m.apply(x0)
            c = sigma**2 / alpha * vjp(jnp.ones_like(x))
            var_y = (m.matrix**2) @ jnp.reshape(c, (-1,)) + m.noise_var
            g = vjp(m.transpose(residual / var_y, x).astype(x.dtype))
        else:
            s, _, g = moment_projection(self.sde, self.score, m, t, x)
        return s + _within_support(self.sde, t, g.astype(x.dtype), self.support_diameter)


def moment_projection(sde, score, m, t, x):
    r"""TMPD's Gaussian projection of the noisy likelihood on ONE sample:
    $\ell = \ln N(y; A\hat x_0, A C A^\top + R)$, $C = \tfrac{\sigma^2}{\alpha} J$, and its
    gradient holding the covariance fixed, $J^\top A^\top (A C A^\top + R)^{-1}(y - A\hat x_0)$.

    Returns `(score_value, ell, grad)`. Cost: 1 score evaluation and $d_y$ VJPs (`J^T a_i`
    for the rows $a_i$ of $A$, reused by the gradient; $J$ is symmetric for a true score).
    """
    alpha, sigma = sde.marginal(t)
    s, x0, vjp = _denoiser(sde, score, t, x)
    residual = m.y - m.apply(x0)
    rows = jax.vmap(lambda e: m.transpose(e, x).astype(x.dtype))(jnp.eye(m.dim_y, dtype=x.dtype))
    j_rows = jax.vmap(vjp)(rows)  # J^T a_i, shape (d_y, *x.shape)
    ajat = jax.vmap(m.apply)(j_rows)  # [i, j] = a_j . J^T a_i
    cov = sigma**2 / alpha * 0.5 * (ajat + ajat.T) + jnp.diag(m.noise_var)
    chol = jnp.linalg.cholesky(cov)
    z = jax.scipy.linalg.solve_triangular(chol, residual, lower=True)
    w = jax.scipy.linalg.solve_triangular(chol.T, z, lower=False)
    logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    ell = -0.5 * (m.dim_y * jnp.log(2 * jnp.pi) + logdet + jnp.sum(z**2))
    g = jnp.tensordot(w.astype(x.dtype), j_rows, axes=1)
    return s, ell, g.astype(x.dtype)


class Classifier(_AbstractWrapsScore):
    r"""Classifier guidance (Dhariwal & Nichol 2021): $s(t, x) + \gamma\,\nabla_x \ln p_t(c \mid x)$.

    Exact ($\gamma = 1$) when `log_prob_fn` is the true noisy classifier $\ln p_t(c \mid x)$;
    $\gamma > 1$ sharpens towards $p_t(x)\,p_t(c \mid x)^\gamma$ (no longer a diffused
    density: approximate by design).

    **Arguments:**

    - `score`: the unconditional `score(t, x)`.
    - `log_prob_fn`: `log_prob_fn(t, x)` -> log-probabilities over classes, shape
      `(num_classes,)`, noise-conditional (trained on $x_t$).
    - `label`: the class index $c$; `scale`: $\gamma \ge 0$.

    Cost: 1 score evaluation plus one classifier gradient, the classifier's forward pass and a
    VJP through it (not counted in `vjps_per_call`, which counts VJPs through the score):
    `nfe_per_call` is $1 + 3 = 4$ network evaluations.
    """

    score: ScoreFn
    log_prob_fn: Callable
    label: int = eqx.field(static=True)
    scale: Float[Array, ""]

    evals_per_call: ClassVar[int] = 1
    vjps_per_call: ClassVar[int] = 0

    @property
    def nfe_per_call(self) -> int:
        """The score's evaluation plus the classifier's gradient (1 forward + 1 VJP = 3)."""
        return network_evals(self.score) + 3 * network_evals(self.log_prob_fn)

    def __init__(self, score, log_prob_fn, label, scale=1.0):
        if not callable(score):
            raise TypeError("score must be callable as score(t, x).")
        if not callable(log_prob_fn):
            raise TypeError("log_prob_fn must be callable as log_prob_fn(t, x).")
        check_positive("scale", scale, strict=False)
        self.score, self.log_prob_fn = score, log_prob_fn
        self.label = _check_label("label", label)
        self.scale = jnp.asarray(scale)

    def __call__(self, t: Scalar, x: Sample) -> Sample:
        def log_p(x_):
            out = self.log_prob_fn(t, x_)
            if jnp.ndim(out) != 1:
                raise ValueError(
                    "log_prob_fn(t, x) must return log-probabilities of shape (num_classes,); "
                    f"got shape {jnp.shape(out)}."
                )
            _check_label("label", self.label, jnp.shape(out)[0])
            return out[self.label]

        s = checked_score(self.score, t, x)
        return s + (self.scale * jax.grad(log_p)(x)).astype(x.dtype)


class ClassifierFree(AbstractGuidedScore):
    r"""Classifier-free guidance (Ho & Salimans 2022):
    $\gamma\,s(t, x, c) + (1 - \gamma)\,s(t, x, \varnothing)$.

    Convention: `scale` $\gamma$ weights the conditional score, so $\gamma = 1$ IS the
    conditional score (exactly: the unconditional term is multiplied by zero), $\gamma = 0$
    the unconditional one, and Ho & Salimans' $w$ is $\gamma - 1$. Exact for $\gamma \in
    \{0, 1\}$ with exact scores; $\gamma > 1$ targets $p_t(x)\,p_t(c \mid x)^\gamma$
    heuristically (approximate).

    **Arguments:**

    - `score_fn`: `score_fn(t, x, label)` on one sample.
    - `label`, `null_label`: the class and the "no class" index (distinct ints >= 0).
    - `scale`: $\gamma \ge 0$ (a negative scale, guidance away from the class, is refused).
    - `num_classes`: if given, both labels must be `< num_classes`.

    Cost: 2 score evaluations.
    """

    score_fn: Callable
    label: int = eqx.field(static=True)
    null_label: int = eqx.field(static=True)
    scale: Float[Array, ""]

    evals_per_call: ClassVar[int] = 2
    vjps_per_call: ClassVar[int] = 0

    @property
    def nfe_per_call(self) -> int:
        return 2 * network_evals(self.score_fn)

    def __init__(self, score_fn, label, null_label, scale=1.0, *, num_classes=None):
        if not callable(score_fn):
            raise TypeError("score_fn must be callable as score_fn(t, x, label).")
        if num_classes is not None:
            num_classes = check_int("num_classes", num_classes, minimum=1)
        self.label = _check_label("label", label, num_classes)
        self.null_label = _check_label("null_label", null_label, num_classes)
        if self.label == self.null_label:
            raise ValueError(f"label and null_label must differ; both are {label}.")
        check_positive("scale", scale, strict=False)  # as DPS, PiGDM and Classifier
        self.score_fn = score_fn
        self.scale = jnp.asarray(scale)

    def __call__(self, t: Scalar, x: Sample) -> Sample:
        cond = check_like(self.score_fn(t, x, self.label), x, who="score_fn(t, x, label)")
        uncond = check_like(
            self.score_fn(t, x, self.null_label), x, who="score_fn(t, x, null_label)"
        )
        return (self.scale * cond + (1 - self.scale) * uncond).astype(x.dtype)


class Replacement(eqx.Module):
    r"""Replacement / projection (Song et al. 2021, score_sde's inpainting and colourisation): a
    step hook; BIASED.

    `hook(t, x, key) -> x` on ONE sample: draws $\tilde y_t = \alpha(t)\,y + \sigma(t)\,z$ and
    projects `x` onto $\{x : A x = \tilde y_t\}$, $x \leftarrow x + A^+(\tilde y_t - A x)$
    with the pseudo-inverse $A^+ = A^\top (AA^\top)^{-1}$. For a mask this overwrites the
    observed entries; for a channel mean ([`scoresde.LinearMeasurement.grayscale`][]) it shifts
    every channel of a pixel by the same amount, score_sde's colourisation in its decoupled
    colour space. Call it after each step of a fixed-step reverse sampler, at the step's new time
    `t`: `scoresde.sample_pc(..., step_hook=hook)` (with `predictor=EulerMaruyama(),
    corrector=None`, the fixed-step reverse SDE).

    The observed part is re-noised independently of the rest, so the unobserved directions
    never feel $p_t(y \mid x)$ through the correlations of the prior: the result is NOT the
    posterior (measured in [Replacement is biased](../how-to/inverse-problems.md#replacement-is-biased)).
    The measurement's `noise_std` is ignored ($y$ is treated as exact).

    **Arguments:** `sde`; `m`, a [`scoresde.LinearMeasurement`][] whose $A$ has full row rank
    (for a general $A$ its dense pseudo-inverse is formed once, $d_y \times d$ memory).
    """

    sde: AbstractSDE
    measurement: LinearMeasurement
    pinv: Float[Array, "d d_y"] | None

    evals_per_call: ClassVar[int] = 0
    vjps_per_call: ClassVar[int] = 0

    def __init__(self, sde, m):
        if not isinstance(sde, AbstractSDE):
            raise TypeError(f"sde must be a scoresde SDE (AbstractSDE); got {type(sde).__name__}.")
        m = _check_measurement(m)
        self.sde, self.measurement = sde, m
        if m.mask is not None:
            self.pinv = None  # A A^T = I, so A^+ = A^T: no dense matrix for masks
            return
        A = np.asarray(m.matrix, np.float64)
        singular = np.linalg.svd(A, compute_uv=False)
        if singular.min() <= 1e-10 * singular.max():
            raise ValueError(
                "Replacement needs A of full row rank (its rows linearly independent); the "
                f"smallest singular value of A is {singular.min():.3g}."
            )
        self.pinv = jnp.asarray(np.linalg.pinv(A), m.y.dtype)

    def __call__(self, t: Scalar, x: Sample, key: Key) -> Sample:
        m = self.measurement
        alpha, sigma = self.sde.marginal(t)
        y_t = alpha * m.y + sigma * jr.normal(key, (m.dim_y,), m.y.dtype)
        r = y_t - m.apply(x)
        step = m.transpose(r, x) if self.pinv is None else (self.pinv @ r).reshape(jnp.shape(x))
        return (x + step).astype(x.dtype)
