r"""Measurements: what an inverse problem observes. `AbstractMeasurement` is the capability
(a likelihood $\ln p(y \mid x)$); `LinearMeasurement` is $y = A x + n$, $n \sim N(0, R)$,
$R = \operatorname{diag}(s_y^2)$ (inpainting, deblurring, super-resolution, ...)."""

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import lineax as lx
import numpy as np
from jaxtyping import Array, Bool, Float

from .._checks import all_finite, check_int, check_positive, is_concrete
from .._custom_types import Key, Sample

_LOG_2PI = math.log(2 * math.pi)


def _as_operator(A) -> lx.AbstractLinearOperator:
    if isinstance(A, lx.AbstractLinearOperator):
        return A
    A = jnp.asarray(A)
    if not jnp.issubdtype(A.dtype, jnp.floating):
        A = A.astype(float)
    if A.ndim != 2:
        raise ValueError(
            f"A must be a (d_y, d) matrix acting on the flattened sample, or a lineax operator; "
            f"got an array of shape {A.shape}."
        )
    _check_finite("A", A)
    return lx.MatrixLinearOperator(A)


def _check_finite(name: str, value) -> None:
    """A concrete `value` must be finite (a NaN in `y` or `A` would make every posterior and
    every guided score NaN); a traced one is not checked."""
    if is_concrete(value) and not all_finite(value):
        raise ValueError(f"{name} contains non-finite values (NaN or inf).")


class AbstractMeasurement(eqx.Module):
    r"""An observation $y$ of a sample with a differentiable likelihood $\ln p(y \mid x)$.

    What [`scoresde.sample_smc`][] needs of its measurement (with [`scoresde.TweedieTwist`][]
    or [`scoresde.LogTwist`][]); subclass it for a non-linear or non-Gaussian observation model.
    [`scoresde.LinearMeasurement`][] is the linear-Gaussian one, which the guided scores and
    [`scoresde.MomentTwist`][] need.
    """

    @abc.abstractmethod
    def log_likelihood(self, x: Sample) -> Array:
        r"""$\ln p(y \mid x)$ for ONE sample `x`: a scalar, differentiable in `x`."""


class LinearMeasurement(AbstractMeasurement):
    r"""A linear measurement $y = A x + n$, $n \sim N(0, \operatorname{diag}(s_y^2))$.

    $A$ acts on the FLATTENED sample: $A x$ means `A @ x.ravel()`.

    **Arguments:**

    - `A`: a `(d_y, d)` array, or a `lineax.AbstractLinearOperator` whose input is the
      flattened sample `(d,)` (or the sample's own shape) and whose output has `d_y` entries.
    - `y`: the observation, shape `(d_y,)`.
    - `noise_std`: $s_y > 0$, a scalar or one per row `(d_y,)`.

    Use [`scoresde.LinearMeasurement.from_mask`][] for inpainting.

    **Raises:** `ValueError` for `A` that is not a matrix, `y` of the wrong length, `y` or an
    array `A` with a NaN or inf (when concrete), `noise_std` of the wrong shape or not `> 0`. A sample of the wrong size for `A` is refused when the
    measurement is applied to it.
    """

    operator: lx.AbstractLinearOperator
    y: Float[Array, " d_y"]
    noise_std: Float[Array, " d_y"]
    mask: Bool[Array, "*data"] | None

    def __init__(self, A, y, noise_std, *, mask=None):
        operator = _as_operator(A)
        d_y = operator.out_size()
        y = jnp.asarray(y)
        if not jnp.issubdtype(y.dtype, jnp.floating):
            y = y.astype(float)
        if y.shape != (d_y,):
            raise ValueError(
                f"y must have shape (d_y,) = ({d_y},), one entry per row of A; got y with shape "
                f"{y.shape}."
            )
        _check_finite("y", y)
        noise_std = jnp.asarray(noise_std, y.dtype)
        if noise_std.shape not in ((), (d_y,)):
            raise ValueError(
                f"noise_std must be a scalar or have shape ({d_y},); got shape {noise_std.shape}."
            )
        check_positive("noise_std", noise_std)
        self.operator = operator
        self.y = y
        self.noise_std = jnp.broadcast_to(noise_std, (d_y,))
        self.mask = mask

    @classmethod
    def from_mask(cls, mask, x_observed, noise_std) -> "LinearMeasurement":
        r"""Inpainting: observe the entries of `x_observed` where `mask` is True.

        $A$ selects the observed entries (in `ravel` order), so $y$ = `x_observed[mask]`.

        **Arguments:**

        - `mask`: booleans of the sample's shape (True = observed); must be concrete.
        - `x_observed`: a sample of that shape (values off the mask are ignored).
        - `noise_std`: $s_y > 0$, a scalar or one per observed entry.
        """
        if not is_concrete(mask):
            raise TypeError("mask must be a concrete array (not traced): it fixes d_y.")
        mask_np = np.asarray(mask)
        if mask_np.dtype != np.bool_:
            raise TypeError(f"mask must be boolean (True = observed); got dtype {mask_np.dtype}.")
        x_observed = jnp.asarray(x_observed)
        if not jnp.issubdtype(x_observed.dtype, jnp.floating):
            x_observed = x_observed.astype(float)
        if x_observed.shape != mask_np.shape:
            raise ValueError(
                f"mask has shape {mask_np.shape} but x_observed has shape {x_observed.shape}; "
                "mask must have the sample's shape."
            )
        if not mask_np.any():
            raise ValueError("mask observes nothing: at least one entry must be True.")
        idx = jnp.asarray(np.flatnonzero(mask_np))
        structure = jax.ShapeDtypeStruct((mask_np.size,), x_observed.dtype)
        operator = lx.FunctionLinearOperator(lambda v: v[idx], structure)
        y = x_observed.reshape(-1)[idx]
        return cls(operator, y, noise_std, mask=jnp.asarray(mask_np))

    @classmethod
    def grayscale(cls, gray, noise_std, *, channels: int = 3) -> "LinearMeasurement":
        r"""Colourisation: observe the channel mean of a `(channels, *spatial)` image.

        $y_p = \frac{1}{C}\sum_c x_{c,p}$ for every pixel $p$ (channels first, the library's
        image layout), so $A = \frac{1}{C}[I\;I\;\cdots\;I]$ has orthogonal rows.

        **Arguments:**

        - `gray`: the observed grey image, shape `spatial` (e.g. `(8, 8)`), or `(1, *spatial)`.
        - `noise_std`: $s_y > 0$, a scalar or one per pixel.
        - `channels`: $C$, the number of colour channels of the images (default 3).
        """
        channels = check_int("channels", channels)
        gray = jnp.asarray(gray)
        if not jnp.issubdtype(gray.dtype, jnp.floating):
            gray = gray.astype(float)
        if gray.ndim >= 2 and gray.shape[0] == 1:
            gray = gray[0]
        if gray.ndim == 0:
            raise ValueError("gray must be an image (its spatial shape); got a scalar.")
        spatial = gray.shape
        structure = jax.ShapeDtypeStruct((channels, *spatial), gray.dtype)
        operator = lx.FunctionLinearOperator(lambda v: jnp.mean(v, axis=0).reshape(-1), structure)
        return cls(operator, gray.reshape(-1), noise_std)

    @property
    def dim_y(self) -> int:
        return self.operator.out_size()

    @property
    def dim_x(self) -> int:
        return self.operator.in_size()

    @property
    def noise_var(self) -> Float[Array, " d_y"]:
        return self.noise_std**2

    @property
    def matrix(self) -> Float[Array, "d_y d"]:
        """$A$ as a dense `(d_y, d)` matrix (materialised for operators)."""
        return self.operator.as_matrix()

    def _check(self, x):
        if jnp.size(x) != self.dim_x:
            raise ValueError(
                f"A has width {self.dim_x} but the sample x has shape {jnp.shape(x)} "
                f"({jnp.size(x)} entries); A must act on the flattened sample."
            )
        if self.mask is not None and jnp.shape(x) != self.mask.shape:
            raise ValueError(
                f"the measurement's mask has shape {self.mask.shape} but the sample x has shape "
                f"{jnp.shape(x)}; the mask must have the sample's shape."
            )

    def apply(self, x: Sample) -> Float[Array, " d_y"]:
        """$A x$ for one sample `x` (of any shape with `d` entries)."""
        self._check(x)
        in_shape = self.operator.in_structure().shape
        return jnp.reshape(self.operator.mv(jnp.reshape(x, in_shape)), (-1,))

    def transpose(self, v: Float[Array, " d_y"], like: Sample) -> Sample:
        """$A^\\top v$, shaped like the sample `like`."""
        self._check(like)
        out_shape = self.operator.out_structure().shape
        return jnp.reshape(self.operator.transpose().mv(jnp.reshape(v, out_shape)), jnp.shape(like))

    def residual(self, x: Sample) -> Float[Array, " d_y"]:
        """$y - A x$."""
        return self.y - self.apply(x)

    def log_likelihood(self, x: Sample) -> Array:
        r"""$\ln N(y; A x, R)$ for one sample `x`."""
        r = self.residual(x)
        var = self.noise_var
        return -0.5 * (self.dim_y * _LOG_2PI + jnp.sum(jnp.log(var)) + jnp.sum(r**2 / var))

    def sample_y(self, key: Key, x: Sample) -> Float[Array, " d_y"]:
        """A fresh observation $A x + n$ of the sample `x` (for simulation studies)."""
        noise = jr.normal(key, (self.dim_y,), self.y.dtype)
        return self.apply(x) + self.noise_std * noise
