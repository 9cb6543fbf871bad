r"""Training class-conditional score models for classifier-free guidance.

A class-conditional model is `model(t, x, label)` (e.g. a parametrisation wrapper around
`UNet(..., num_classes=K)`), with the extra "null" label `K` for the unconditional score.
[`scoresde.LabelDropoutDSM`][] trains both at once (Ho & Salimans 2021): each label is replaced
by the null label with probability `p_uncond`. [`scoresde.fit`][] draws batches from ONE array,
so images and labels travel packed: `pack_labels(images, labels)` is an array
`(num, prod(data_shape) + 1)`, and `UnpackLabels(data_shape, preprocess)` (the `preprocess=` of
`fit`) splits each batch back into `(x0, labels)` inside the compiled step::

    data = ss.pack_labels(digits.train, digits.train_labels)
    loss = ss.LabelDropoutDSM(sde, num_classes=10, p_uncond=0.1)
    ss.fit(model, loss, data, key=key, steps=..., preprocess=ss.UnpackLabels((1, 8, 8),
           ss.dequantize))

Sample with `ss.guidance.ClassifierFree(model, label, null_label=10, scale)`.

Classifier guidance needs a NOISE-CONDITIONAL classifier $\ln p_t(c \mid x_t)$:
[`scoresde.NoisyCrossEntropy`][] trains `model(t, x) -> logits` (e.g.
`MLPScoreNet(data_shape, out_size=10, ...)`) on diffused data with the same packed batches, and
`ss.guidance.Classifier(score, lambda t, x: jax.nn.log_softmax(model(t, x)), label, scale)`
samples with it.

??? cite "Reference"
    ```bibtex
    @inproceedings{ho2021classifierfree,
      title={Classifier-Free Diffusion Guidance},
      author={Ho, Jonathan and Salimans, Tim},
      booktitle={NeurIPS Workshop on Deep Generative Models}, year={2021}}
    ```
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array

from .._custom_types import Key
from .._sde import AbstractSDE
from .losses import (
    _SIGMA_SQUARED,
    _UNIFORM_TIME,
    AbstractTimeSampler,
    AbstractWeighting,
    _check_dsm_args,
    diffuse_batch,
    dsm_loss,
)


def pack_labels(x, labels) -> Array:
    """`x` `(num, *data_shape)` and integer `labels` `(num,)` as one float array
    `(num, prod(data_shape) + 1)` (the label in the last column), for [`scoresde.fit`][].

    Integer images (e.g. 8-bit digits) are stored as float32 values, exactly."""
    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (num, *data_shape); got shape {x.shape}.")
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"labels must have shape (num,) = ({x.shape[0]},), one per row of x; got shape "
            f"{labels.shape}."
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers; got dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0; got a label {labels.min()}.")
    dtype = (
        np.result_type(x.dtype, np.float32) if np.issubdtype(x.dtype, np.floating) else (np.float32)
    )
    flat = x.reshape(x.shape[0], -1).astype(dtype)
    return jnp.asarray(np.concatenate([flat, labels[:, None].astype(dtype)], axis=1))


class UnpackLabels(eqx.Module):
    """`preprocess(key, batch)` for [`scoresde.fit`][]: a packed batch (see
    [`scoresde.pack_labels`][]) back to `(x0, labels)`, with `x0` of `data_shape` passed through
    the optional `preprocess(key, x0)` (e.g. [`scoresde.dequantize`][])."""

    data_shape: tuple[int, ...] = eqx.field(static=True)
    preprocess: Callable | None = None

    def __init__(self, data_shape, preprocess=None):
        shape = (data_shape,) if isinstance(data_shape, int) else tuple(int(s) for s in data_shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"data_shape must be non-empty with positive entries; got {shape}.")
        if preprocess is not None and not callable(preprocess):
            raise TypeError(
                f"preprocess must be callable as preprocess(key, x); got {preprocess!r}."
            )
        self.data_shape = shape
        self.preprocess = preprocess

    def __call__(self, key: Key | None, batch: Array):
        dim = math.prod(self.data_shape)
        if batch.ndim != 2 or batch.shape[1] != dim + 1:
            raise ValueError(
                f"a packed batch must have shape (batch, {dim + 1}) for data_shape "
                f"{self.data_shape}; got {batch.shape} (use pack_labels)."
            )
        x0 = batch[:, :dim].reshape(batch.shape[0], *self.data_shape)
        labels = jnp.round(batch[:, dim]).astype(jnp.int32)
        if self.preprocess is not None:
            x0 = self.preprocess(key, x0)
        return x0, labels


class LabelDropoutDSM(eqx.Module):
    r"""Denoising score matching of a class-conditional `model(t, x, label)` with label
    dropout: each label becomes the null label `num_classes` with probability `p_uncond`, so
    one network learns both $\nabla\ln p_t(x \mid c)$ and $\nabla\ln p_t(x)$.

    `loss(model, (x0, labels), key)`; labels must lie in `[0, num_classes)` (checked by the
    network at run time). Otherwise as [`scoresde.DenoisingScoreMatching`][].
    """

    sde: AbstractSDE
    num_classes: int = eqx.field(static=True)
    p_uncond: float = eqx.field(static=True, default=0.1)
    weighting: AbstractWeighting = _SIGMA_SQUARED
    time_sampler: AbstractTimeSampler = _UNIFORM_TIME
    t_eps: float | None = None

    def __check_init__(self):
        _check_dsm_args(self.sde, self.weighting, self.time_sampler, self.t_eps)
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 1
        ):
            raise ValueError(f"num_classes must be an int >= 1; got {self.num_classes!r}.")
        if not (isinstance(self.p_uncond, (int, float)) and 0 <= self.p_uncond <= 1):
            raise ValueError(f"p_uncond must lie in [0, 1]; got p_uncond={self.p_uncond!r}.")

    def drop_labels(self, key: Key, labels: Array) -> Array:
        """`labels` with each entry replaced by the null label with probability `p_uncond`."""
        drop = jr.bernoulli(key, self.p_uncond, jnp.shape(labels))
        return jnp.where(drop, self.num_classes, labels).astype(jnp.int32)

    def __call__(self, model, batch, key: Key) -> Array:
        x0, labels = _unpacked(batch, "LabelDropoutDSM")
        key_drop, key_dsm = jr.split(key)
        return dsm_loss(
            model,
            self.sde,
            x0,
            key=key_dsm,
            weighting=self.weighting,
            time_sampler=self.time_sampler,
            t_eps=self.t_eps,
            cond=self.drop_labels(key_drop, labels),
        )


def _unpacked(batch, who):
    if not (isinstance(batch, tuple) and len(batch) == 2):
        raise TypeError(
            f"{who} takes batches (x0, labels); pack the data with pack_labels and pass "
            "preprocess=UnpackLabels(data_shape, ...) to fit."
        )
    x0, labels = batch
    labels = jnp.asarray(labels)
    if labels.shape != (jnp.shape(x0)[0],):
        raise ValueError(
            f"labels must have shape ({jnp.shape(x0)[0]},), one per sample; got {labels.shape}."
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integers; got dtype {labels.dtype}.")
    return x0, labels


class NoisyCrossEntropy(eqx.Module):
    r"""Cross-entropy of a noise-conditional classifier `model(t, x) -> logits` on diffused data:
    $E_{t, x_0, c, z}\,[-\ln \operatorname{softmax}(f(t, \alpha(t) x_0 + \sigma(t) z))_c]$,
    $t \sim U[t_\varepsilon, T]$, minimised by the true noisy classifier $\ln p_t(c \mid x_t)$
    (the input of [`scoresde.guidance.Classifier`][]).

    `loss(model, (x0, labels), key)`; labels in `[0, num_classes)` (checked: a label out of
    range is an error, never a silent NaN). `t_eps` defaults to `sde.default_t_eps`.
    """

    sde: AbstractSDE
    num_classes: int = eqx.field(static=True)
    t_eps: float | None = None

    def __check_init__(self):
        _check_dsm_args(self.sde, _SIGMA_SQUARED, _UNIFORM_TIME, self.t_eps)
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 2
        ):
            raise ValueError(f"num_classes must be an int >= 2; got {self.num_classes!r}.")

    def __call__(self, model, batch, key: Key) -> Array:
        x0, labels = _unpacked(batch, "NoisyCrossEntropy")
        labels = eqx.error_if(
            labels,
            (labels < 0) | (labels >= self.num_classes),
            f"labels must lie in [0, {self.num_classes}).",
        )
        t_eps = _check_dsm_args(self.sde, _SIGMA_SQUARED, _UNIFORM_TIME, self.t_eps)
        t, _, _, x_t = diffuse_batch(key, self.sde, x0, _UNIFORM_TIME, t_eps)
        logits = jax.vmap(model)(t, x_t)
        if logits.shape != (x0.shape[0], self.num_classes):
            raise ValueError(
                f"model(t, x) must return {self.num_classes} logits; got shape {logits.shape[1:]}."
            )
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))
