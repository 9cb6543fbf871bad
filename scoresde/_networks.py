r"""Score networks: an MLP for vector data and a small U-Net for images.

A network is called as `net(c, x)` on ONE unbatched sample `x` and a scalar noise conditioning
`c` (the parametrisation wrappers, e.g. [`scoresde.EpsPrediction`][], pass
$c = \ln(\sigma(t)/\alpha(t))/4$ and a rescaled `x`). It returns an array of `x`'s shape and dtype
(or a scalar, for energy networks built with `out_size="scalar"`). Parameters are float32 unless
`dtype=` says otherwise; outputs are cast to `x`'s dtype.
"""

import math
from collections.abc import Sequence
from typing import Literal

import einops
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float

from ._custom_types import Key, Scalar


class GaussianFourierFeatures(eqx.Module):
    r"""$[c, \sin(2\pi w c), \cos(2\pi w c)]$ with fixed $w \sim N(0, \text{scale}^2)$.

    The frequencies are not trained (a `stop_gradient` keeps optimisers from moving them).
    """

    weights: Float[Array, " half"]

    def __init__(self, num_features: int, scale: float = 2.0, *, key: Key, dtype=None):
        if num_features < 2 or num_features % 2:
            raise ValueError(f"num_features must be even and >= 2; got {num_features}.")
        dtype = jnp.float32 if dtype is None else dtype
        self.weights = scale * jr.normal(key, (num_features // 2,), dtype)

    @property
    def size(self) -> int:
        return 2 * self.weights.shape[0] + 1

    def __call__(self, c: Scalar) -> Float[Array, " size"]:
        w = jax.lax.stop_gradient(self.weights)
        c = jnp.asarray(c, w.dtype)
        angle = 2 * math.pi * w * c
        return jnp.concatenate([c[None], jnp.sin(angle), jnp.cos(angle)])


def _as_shape(data_shape) -> tuple[int, ...]:
    if isinstance(data_shape, int):
        data_shape = (data_shape,)
    try:
        shape = tuple(int(s) for s in data_shape)
    except TypeError:
        raise TypeError(
            f"data_shape must be an int or a tuple of ints; got {data_shape!r}."
        ) from None
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"data_shape must be non-empty with positive entries; got {shape}.")
    return shape


def _check_input(x, data_shape, who):
    if jnp.shape(x) != data_shape:
        raise ValueError(
            f"{who} takes ONE sample of shape {data_shape}; got x with shape {jnp.shape(x)}. "
            "Use jax.vmap for a batch."
        )


class MLPScoreNet(eqx.Module):
    r"""Residual MLP $h_{k+1} = h_k + W_k\,\mathrm{silu}(h_k + U_k\,e(c))$ on flattened data.

    $e(c)$ is a Gaussian Fourier embedding of the noise conditioning. Any data shape works (it is
    flattened); `out_size="scalar"` gives an energy network with a scalar output, an integer
    `out_size=K` a vector of `K` outputs (e.g. the logits of a noise-conditional classifier).

    **Arguments:**

    - `data_shape`: shape of one sample, e.g. `2` or `(2,)`.
    - `width`, `depth`: hidden width and number of residual blocks.
    - `num_fourier`, `fourier_scale`: size and frequency scale of the time embedding.
    - `out_size`: `"data"` (a sample-shaped output), `"scalar"` or an int `K >= 1` (`(K,)`).
    """

    data_shape: tuple[int, ...] = eqx.field(static=True)
    out_size: str | int = eqx.field(static=True)
    embed: GaussianFourierFeatures
    embed_mlp: eqx.nn.Linear
    input_layer: eqx.nn.Linear
    blocks: list
    time_proj: list
    output_layer: eqx.nn.Linear

    def __init__(
        self,
        data_shape: int | Sequence[int],
        *,
        width: int = 128,
        depth: int = 3,
        num_fourier: int = 32,
        fourier_scale: float = 2.0,
        out_size: str | int = "data",  # "data", "scalar" or K, checked below
        key: Key,
        dtype=None,
    ):
        self.data_shape = _as_shape(data_shape)
        if isinstance(out_size, bool) or not (
            out_size in ("data", "scalar") or (isinstance(out_size, int) and out_size >= 1)
        ):
            raise ValueError(f"out_size must be 'data', 'scalar' or an int >= 1; got {out_size!r}.")
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1; got width={width}, depth={depth}.")
        self.out_size = out_size
        dim = math.prod(self.data_shape)
        keys = jr.split(key, 4 + 2 * depth)
        self.embed = GaussianFourierFeatures(num_fourier, fourier_scale, key=keys[0], dtype=dtype)
        self.embed_mlp = eqx.nn.Linear(self.embed.size, width, key=keys[1], dtype=dtype)
        self.input_layer = eqx.nn.Linear(dim, width, key=keys[2], dtype=dtype)
        self.blocks = [eqx.nn.Linear(width, width, key=k, dtype=dtype) for k in keys[4 : 4 + depth]]
        self.time_proj = [
            eqx.nn.Linear(width, width, key=k, dtype=dtype) for k in keys[4 + depth :]
        ]
        out: int | Literal["scalar"] = (
            dim if out_size == "data" else out_size if isinstance(out_size, int) else "scalar"
        )
        self.output_layer = eqx.nn.Linear(width, out, key=keys[3], dtype=dtype)

    def __call__(self, c: Scalar, x: Float[Array, "*data"]) -> Array:
        _check_input(x, self.data_shape, "MLPScoreNet")
        dtype = self.input_layer.weight.dtype
        emb = jax.nn.silu(self.embed_mlp(self.embed(c).astype(dtype)))
        h = self.input_layer(jnp.ravel(x).astype(dtype))
        for block, proj in zip(self.blocks, self.time_proj, strict=True):
            h = h + block(jax.nn.silu(h + proj(emb)))
        out = self.output_layer(jax.nn.silu(h))
        if self.out_size != "data":
            return out.astype(jnp.result_type(x))
        return jnp.reshape(out, self.data_shape).astype(jnp.result_type(x))


def check_label(label, num_classes: int, name: str = "label"):
    """`label` as an int32 scalar in `[0, num_classes]` (`num_classes` is the null label).

    Raises a `TypeError` for a non-integer or non-scalar label, a `ValueError` for a concrete
    label out of range, and (through `equinox.error_if`) a runtime error for a traced one.
    """
    arr = jnp.asarray(label)
    if arr.shape != ():
        raise TypeError(
            f"{name} must be a scalar int (one sample; jax.vmap for a batch); got shape "
            f"{arr.shape}."
        )
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer class index; got dtype {arr.dtype}.")
    msg = f"{name} must lie in [0, {num_classes}] ({num_classes} = the null label)"
    if not isinstance(arr, jax.core.Tracer):
        value = int(arr)
        if not 0 <= value <= num_classes:
            raise ValueError(f"{msg}; got {name}={value}.")
        return arr.astype(jnp.int32)
    bad = (arr < 0) | (arr > num_classes)
    return eqx.error_if(arr, bad, msg + ".").astype(jnp.int32)


def _groups(channels: int, max_groups: int = 8) -> int:
    return math.gcd(channels, max_groups)


class _ResBlock(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    time: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None
    # Add the embedding after norm2, not before: GroupNorm with one channel per group (8 or
    # fewer channels) erases a per-channel offset added before it. Used by class-conditional
    # U-Nets; unconditional ones keep the original order (their checkpoints stay valid).
    emb_after_norm: bool = eqx.field(static=True)

    def __init__(self, c_in, c_out, emb_size, *, key, dtype, emb_after_norm=False):
        self.emb_after_norm = emb_after_norm
        k1, k2, k3, k4 = jr.split(key, 4)
        self.norm1 = eqx.nn.GroupNorm(_groups(c_in), c_in, dtype=dtype)
        self.conv1 = eqx.nn.Conv2d(c_in, c_out, 3, padding=1, key=k1, dtype=dtype)
        self.time = eqx.nn.Linear(emb_size, c_out, key=k2, dtype=dtype)
        self.norm2 = eqx.nn.GroupNorm(_groups(c_out), c_out, dtype=dtype)
        conv2 = eqx.nn.Conv2d(c_out, c_out, 3, padding=1, key=k3, dtype=dtype)
        # Start each block close to the identity.
        self.conv2 = eqx.tree_at(lambda m: m.weight, conv2, 0.1 * conv2.weight)
        self.skip = None if c_in == c_out else eqx.nn.Conv2d(c_in, c_out, 1, key=k4, dtype=dtype)

    def __call__(self, x, emb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.emb_after_norm:
            h = self.norm2(h) + self.time(emb)[:, None, None]
        else:
            h = self.norm2(h + self.time(emb)[:, None, None])
        h = self.conv2(jax.nn.silu(h))
        skip = x if self.skip is None else self.skip(x)
        return skip + h


class _Attention(eqx.Module):
    norm: eqx.nn.GroupNorm
    attn: eqx.nn.MultiheadAttention

    def __init__(self, channels, num_heads, *, key, dtype):
        self.norm = eqx.nn.GroupNorm(_groups(channels), channels, dtype=dtype)
        self.attn = eqx.nn.MultiheadAttention(num_heads, channels, key=key, dtype=dtype)

    def __call__(self, x):
        _, height, width = x.shape
        seq = einops.rearrange(self.norm(x), "c h w -> (h w) c")
        out = self.attn(seq, seq, seq)
        return x + einops.rearrange(out, "(h w) c -> c h w", h=height, w=width)


class _Upsample(eqx.Module):
    conv: eqx.nn.Conv2d

    def __call__(self, x):
        x = einops.repeat(x, "c h w -> c (h a) (w b)", a=2, b=2)
        return self.conv(x)


class UNet(eqx.Module):
    r"""A small U-Net for images of shape `(channels, height, width)`.

    Residual blocks with group norm and a time embedding (Gaussian Fourier features of the
    noise conditioning through a two-layer MLP), stride-2 convolutions down, nearest-neighbour
    upsampling + convolution up, skip connections, and self-attention at the lowest
    resolution. `height` and `width` must be divisible by `2 ** (len(channel_mults) - 1)`:
    `(1, 2)` suits 8x8 images, `(1, 2, 2)` 28x28.

    **Arguments:**

    - `data_shape`: `(channels, height, width)`.
    - `base_channels`, `channel_mults`: channels at each resolution are
      `base_channels * mult`.
    - `num_res_blocks`: residual blocks per resolution on the way down.
    - `attention`: self-attention in the middle (lowest resolution); `num_heads` heads.
    - `num_classes`: if given, the network is class-conditional, `net(c, x, label)`: a learned
      embedding of `label` (`num_classes + 1` rows; the extra index `num_classes` is the
      "null" label of classifier-free guidance) is added to the time embedding. `label` must
      be an int in `[0, num_classes]`; an out-of-range label raises (a `ValueError` when it is
      concrete, an `equinox` runtime error when traced).
    """

    data_shape: tuple[int, int, int] = eqx.field(static=True)
    num_classes: int | None = eqx.field(static=True)
    embed: GaussianFourierFeatures
    embed_mlp: eqx.nn.MLP
    label_embed: eqx.nn.Embedding | None
    conv_in: eqx.nn.Conv2d
    down: list
    mid: list
    up: list
    norm_out: eqx.nn.GroupNorm
    conv_out: eqx.nn.Conv2d

    def __init__(
        self,
        data_shape: Sequence[int],
        *,
        base_channels: int = 32,
        channel_mults: Sequence[int] = (1, 2),
        num_res_blocks: int = 1,
        attention: bool = True,
        num_heads: int = 4,
        num_fourier: int = 32,
        fourier_scale: float = 2.0,
        num_classes: int | None = None,
        key: Key,
        dtype=None,
    ):
        shape = _as_shape(data_shape)
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"num_classes must be None or an int >= 1; got {num_classes!r}.")
        self.num_classes = num_classes
        if len(shape) != 3:
            raise ValueError(f"UNet needs data_shape=(channels, height, width); got {shape}.")
        levels = len(channel_mults)
        if levels < 1 or num_res_blocks < 1:
            raise ValueError("channel_mults must be non-empty and num_res_blocks >= 1.")
        factor = 2 ** (levels - 1)
        if shape[1] % factor or shape[2] % factor:
            raise ValueError(
                f"UNet with {levels} levels needs height and width divisible by {factor}; "
                f"got data_shape={shape}."
            )
        self.data_shape = shape
        keys = iter(jr.split(key, 64 + 8 * levels * (num_res_blocks + 2)))
        emb = 4 * base_channels
        self.embed = GaussianFourierFeatures(
            num_fourier, fourier_scale, key=next(keys), dtype=dtype
        )
        self.embed_mlp = eqx.nn.MLP(
            self.embed.size, emb, emb, 1, activation=jax.nn.silu, key=next(keys), dtype=dtype
        )
        if num_classes is None:
            self.label_embed = None
        else:  # its own key stream: the unconditional weights stay as they were for `key`
            self.label_embed = eqx.nn.Embedding(
                num_classes + 1, emb, key=jr.fold_in(key, 1_000_003), dtype=dtype
            )
        self.conv_in = eqx.nn.Conv2d(
            shape[0], base_channels, 3, padding=1, key=next(keys), dtype=dtype
        )
        late = num_classes is not None
        chans = [base_channels * m for m in channel_mults]
        skips = [base_channels]
        c = base_channels
        down: list[eqx.Module] = []
        for i, c_out in enumerate(chans):
            for _ in range(num_res_blocks):
                down.append(
                    _ResBlock(c, c_out, emb, key=next(keys), dtype=dtype, emb_after_norm=late)
                )
                c = c_out
                skips.append(c)
            if i < levels - 1:
                down.append(
                    eqx.nn.Conv2d(c, c, 3, stride=2, padding=1, key=next(keys), dtype=dtype)
                )
                skips.append(c)
        self.down = down
        mid: list[eqx.Module] = [
            _ResBlock(c, c, emb, key=next(keys), dtype=dtype, emb_after_norm=late)
        ]
        if attention:
            if c % num_heads:
                raise ValueError(f"num_heads={num_heads} must divide the channels {c}.")
            mid.append(_Attention(c, num_heads, key=next(keys), dtype=dtype))
        mid.append(_ResBlock(c, c, emb, key=next(keys), dtype=dtype, emb_after_norm=late))
        self.mid = mid
        up: list[eqx.Module] = []
        for i, c_out in reversed(list(enumerate(chans))):
            for _ in range(num_res_blocks + 1):
                up.append(
                    _ResBlock(
                        c + skips.pop(),
                        c_out,
                        emb,
                        key=next(keys),
                        dtype=dtype,
                        emb_after_norm=late,
                    )
                )
                c = c_out
            if i > 0:
                conv = eqx.nn.Conv2d(c, c, 3, padding=1, key=next(keys), dtype=dtype)
                up.append(_Upsample(conv))
        self.up = up
        self.norm_out = eqx.nn.GroupNorm(_groups(c), c, dtype=dtype)
        conv_out = eqx.nn.Conv2d(c, shape[0], 3, padding=1, key=next(keys), dtype=dtype)
        self.conv_out = eqx.tree_at(lambda m: m.weight, conv_out, 0.1 * conv_out.weight)

    def __call__(self, c: Scalar, x: Float[Array, "channels height width"], label=None) -> Array:
        _check_input(x, self.data_shape, "UNet")
        dtype = self.conv_in.weight.dtype
        emb = self.embed_mlp(self.embed(c))
        if self.label_embed is not None:
            if label is None:
                raise ValueError(
                    f"this UNet is class-conditional (num_classes={self.num_classes}): call it "
                    f"as net(c, x, label), with label = {self.num_classes} for the null label."
                )
            assert self.label_embed is not None and self.num_classes is not None
            emb = emb + self.label_embed(check_label(label, self.num_classes))
        elif label is not None:
            raise ValueError("this UNet is unconditional (num_classes=None); pass no label.")
        h = self.conv_in(x.astype(dtype))
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
        for layer in self.up:
            if isinstance(layer, _ResBlock):
                h = layer(jnp.concatenate([h, hs.pop()], axis=0), emb)
            else:
                h = layer(h)
        out = self.conv_out(jax.nn.silu(self.norm_out(h)))
        return out.astype(jnp.result_type(x))
