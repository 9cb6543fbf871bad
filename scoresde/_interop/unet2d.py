r"""diffusers' `UNet2DModel` in Equinox, on ONE sample `(channels, height, width)`.

The layers compute what diffusers' do (`ResnetBlock2D`, the attention block of
`AttnDownBlock2D`/`AttnUpBlock2D`/`UNetMidBlock2D`, `Downsample2D`/`Upsample2D` with a
convolution, `GroupNorm`, the sinusoidal `Timesteps` embedding and `TimestepEmbedding`), and
are built from a state dict (diffusers' parameter names, weights as NumPy arrays) by
`UNet2D.load`, which checks every shape against the config and that every weight is used.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .config import UNet2DConfig

# diffusers' names for the attention projections before 0.14, read as the current ones.
_DEPRECATED_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


class StateDict:
    """Weights by diffusers name, taken with their expected shapes; remembers what was used."""

    def __init__(self, arrays: dict[str, np.ndarray], dtype, source: str):
        self.arrays = {}
        for name, value in arrays.items():
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] in _DEPRECATED_ATTENTION:
                parts[-2] = _DEPRECATED_ATTENTION[parts[-2]]
            self.arrays[".".join(parts)] = value
        self.dtype = dtype
        self.source = source
        self.used: set[str] = set()

    def take(self, name: str, shape: tuple[int, ...]) -> Array:
        if name not in self.arrays:
            raise ValueError(f"{self.source}: weight {name!r} (shape {shape}) is missing.")
        value = self.arrays[name]
        if tuple(value.shape) != tuple(shape):
            raise ValueError(
                f"{self.source}: weight {name!r} has shape {tuple(value.shape)}; the config "
                f"implies {tuple(shape)}."
            )
        self.used.add(name)
        return jnp.asarray(np.asarray(value, dtype=np.float32), self.dtype)

    def check_all_used(self):
        extra = sorted(set(self.arrays) - self.used)
        if extra:
            raise ValueError(
                f"{self.source}: weight(s) {extra[:5]}{' ...' if len(extra) > 5 else ''} are not "
                "part of the network the config describes."
            )


class Conv2d(eqx.Module):
    """A 2-D convolution (torch's layout: weight `(out, in, k, k)`), stride and padding fixed."""

    weight: Float[Array, "o i k k"]
    bias: Float[Array, " o"]
    stride: int = eqx.field(static=True)
    padding: tuple[tuple[int, int], tuple[int, int]] = eqx.field(static=True)

    @classmethod
    def load(cls, w: StateDict, name, cin, cout, k, stride=1, padding=None):
        p = (k // 2, k // 2) if padding is None else padding
        return cls(
            w.take(f"{name}.weight", (cout, cin, k, k)),
            w.take(f"{name}.bias", (cout,)),
            stride,
            (p, p) if isinstance(p[0], int) else p,
        )

    def __call__(self, x):
        y = jax.lax.conv_general_dilated(
            x[None],
            self.weight,
            (self.stride, self.stride),
            self.padding,
            dimension_numbers=("NCHW", "OIHW", "NCHW"),
        )[0]
        return y + self.bias[:, None, None]


class Linear(eqx.Module):
    weight: Float[Array, "o i"]
    bias: Float[Array, " o"]

    @classmethod
    def load(cls, w: StateDict, name, cin, cout):
        return cls(w.take(f"{name}.weight", (cout, cin)), w.take(f"{name}.bias", (cout,)))

    def __call__(self, x):
        y = x @ self.weight.T
        return y + jnp.broadcast_to(self.bias, y.shape)


class GroupNorm(eqx.Module):
    r"""Group normalisation over `(channels, *spatial)`: mean and (biased) variance per group of
    channels, then a per-channel affine map."""

    weight: Float[Array, " c"]
    bias: Float[Array, " c"]
    groups: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)

    @classmethod
    def load(cls, w: StateDict, name, channels, groups, eps):
        return cls(
            w.take(f"{name}.weight", (channels,)),
            w.take(f"{name}.bias", (channels,)),
            groups,
            eps,
        )

    def __call__(self, x):
        c = x.shape[0]
        g = x.reshape(self.groups, -1)
        mean = jnp.mean(g, axis=1, keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=1, keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + self.eps)
        shape = (c,) + (1,) * (x.ndim - 1)
        return g.reshape(x.shape) * self.weight.reshape(shape) + self.bias.reshape(shape)


def timestep_embedding(t, dim: int, flip_sin_to_cos: bool, freq_shift: float):
    r"""diffusers' sinusoidal embedding of a (fractional) timestep $t$: with $h$ = `dim // 2`
    and $\omega_j = \exp(-\ln(10^4)\, j / (h - \text{freq\_shift}))$, $[\sin(t\omega), \cos(t\omega)]$
    (`[cos, sin]` with `flip_sin_to_cos`), zero-padded to an odd `dim`; in float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    angle = jnp.asarray(t, jnp.float32) * freqs
    parts = (
        [jnp.cos(angle), jnp.sin(angle)] if flip_sin_to_cos else [jnp.sin(angle), jnp.cos(angle)]
    )
    emb = jnp.concatenate(parts)
    return jnp.pad(emb, (0, dim % 2))


class ResnetBlock2D(eqx.Module):
    r"""$h = \mathrm{conv_2}(\mathrm{silu}(N_2(\mathrm{conv_1}(\mathrm{silu}(N_1 x)) + W e)))$,
    output $(\mathrm{shortcut}(x) + h)/s$; with `scale_shift`, $N_2(\cdot)(1 + a) + b$ instead
    of adding $W e = [a, b]$."""

    norm1: GroupNorm
    conv1: Conv2d
    time_emb_proj: Linear
    norm2: GroupNorm
    conv2: Conv2d
    conv_shortcut: Conv2d | None
    scale_shift: bool = eqx.field(static=True)
    output_scale_factor: float = eqx.field(static=True)

    @classmethod
    def load(cls, w, name, cin, cout, temb, cfg: UNet2DConfig, output_scale_factor=1.0):
        groups, eps = cfg.norm_num_groups, cfg.norm_eps
        scale_shift = cfg.resnet_time_scale_shift == "scale_shift"
        return cls(
            GroupNorm.load(w, f"{name}.norm1", cin, groups, eps),
            Conv2d.load(w, f"{name}.conv1", cin, cout, 3),
            Linear.load(w, f"{name}.time_emb_proj", temb, 2 * cout if scale_shift else cout),
            GroupNorm.load(w, f"{name}.norm2", cout, groups, eps),
            Conv2d.load(w, f"{name}.conv2", cout, cout, 3),
            Conv2d.load(w, f"{name}.conv_shortcut", cin, cout, 1) if cin != cout else None,
            scale_shift,
            output_scale_factor,
        )

    def __call__(self, x, temb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        e = self.time_emb_proj(jax.nn.silu(temb))[:, None, None]
        if self.scale_shift:
            scale, shift = jnp.split(e, 2)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + e)
        h = self.conv2(jax.nn.silu(h))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return (skip + h) / self.output_scale_factor


class Attention(eqx.Module):
    r"""Spatial self-attention with a residual: on the $HW$ positions of
    $h = N(x)$, heads of $\mathrm{softmax}(q k^\top/\sqrt{d})\,v$, projected back; output
    $(x + \mathrm{out})/s$."""

    group_norm: GroupNorm | None
    to_q: Linear
    to_k: Linear
    to_v: Linear
    to_out: Linear
    heads: int = eqx.field(static=True)
    rescale_output_factor: float = eqx.field(static=True)

    @classmethod
    def load(cls, w, name, channels, head_dim, groups, eps, rescale=1.0):
        heads = channels // head_dim
        inner = heads * head_dim
        norm = (
            None
            if groups is None
            else GroupNorm.load(w, f"{name}.group_norm", channels, groups, eps)
        )
        return cls(
            norm,
            Linear.load(w, f"{name}.to_q", channels, inner),
            Linear.load(w, f"{name}.to_k", channels, inner),
            Linear.load(w, f"{name}.to_v", channels, inner),
            Linear.load(w, f"{name}.to_out.0", inner, channels),
            heads,
            rescale,
        )

    def __call__(self, x):
        c, hgt, wid = x.shape
        h = x if self.group_norm is None else self.group_norm(x)
        h = h.reshape(c, hgt * wid).T  # (positions, channels)
        q, k, v = self.to_q(h), self.to_k(h), self.to_v(h)
        q, k, v = (a.reshape(a.shape[0], self.heads, -1) for a in (q, k, v))
        d = q.shape[-1]
        logits = jnp.einsum("qhd,khd->hqk", q, k) / jnp.sqrt(jnp.asarray(d, q.dtype))
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
        out = jnp.einsum("hqk,khd->qhd", weights, v).reshape(h.shape[0], -1)
        out = self.to_out(out).T.reshape(c, hgt, wid)
        return (out + x) / self.rescale_output_factor


class Downsample2D(eqx.Module):
    """A stride-2 3x3 convolution; with `downsample_padding = 0`, after padding one row and
    column of zeros at the bottom and right (diffusers' asymmetric padding)."""

    conv: Conv2d

    @classmethod
    def load(cls, w, name, channels, padding):
        pad = ((0, 1), (0, 1)) if padding == 0 else ((padding, padding), (padding, padding))
        return cls(Conv2d.load(w, f"{name}.conv", channels, channels, 3, 2, pad))

    def __call__(self, x):
        return self.conv(x)


class Upsample2D(eqx.Module):
    """Nearest-neighbour upsampling by 2, then a 3x3 convolution."""

    conv: Conv2d

    @classmethod
    def load(cls, w, name, channels):
        return cls(Conv2d.load(w, f"{name}.conv", channels, channels, 3))

    def __call__(self, x):
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


def _head_dim(cfg: UNet2DConfig, channels: int) -> int:
    return cfg.attention_head_dim if cfg.attention_head_dim is not None else channels


class DownBlock(eqx.Module):
    """`DownBlock2D` (no attentions) or `AttnDownBlock2D`: resnets (each followed by its
    attention), then a downsampler except in the last block; returns the skips it leaves."""

    resnets: tuple[ResnetBlock2D, ...]
    attentions: tuple[Attention, ...] | None
    downsampler: Downsample2D | None

    def __call__(self, x, temb):
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
            skips.append(x)
        if self.downsampler is not None:
            x = self.downsampler(x)
            skips.append(x)
        return x, skips


class UpBlock(eqx.Module):
    """`UpBlock2D` or `AttnUpBlock2D`: each resnet takes the state concatenated with the last
    remaining skip; then an upsampler except in the last block."""

    resnets: tuple[ResnetBlock2D, ...]
    attentions: tuple[Attention, ...] | None
    upsampler: Upsample2D | None

    def __call__(self, x, skips, temb):
        for i, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips.pop()]), temb)
            if self.attentions is not None:
                x = self.attentions[i](x)
        if self.upsampler is not None:
            x = self.upsampler(x)
        return x


class MidBlock(eqx.Module):
    """`UNetMidBlock2D`: resnet, then (attention, resnet) once."""

    resnets: tuple[ResnetBlock2D, ...]
    attentions: tuple[Attention, ...] | None

    def __call__(self, x, temb):
        x = self.resnets[0](x, temb)
        for i, resnet in enumerate(self.resnets[1:]):
            if self.attentions is not None:
                x = self.attentions[i](x)
            x = resnet(x, temb)
        return x


class UNet2D(eqx.Module):
    r"""diffusers' `UNet2DModel` (positional time embedding) as `net(timestep, x)` on ONE
    sample `x` of shape `(in_channels, height, width)`, `timestep` a (fractional) scalar in
    diffusers' units; built from a diffusers folder by [`scoresde.interop.from_diffusers`][]."""

    conv_in: Conv2d
    linear_1: Linear
    linear_2: Linear
    down_blocks: tuple[DownBlock, ...]
    mid_block: MidBlock | None
    up_blocks: tuple[UpBlock, ...]
    conv_norm_out: GroupNorm
    conv_out: Conv2d
    config: UNet2DConfig = eqx.field(static=True)

    @classmethod
    def load(cls, cfg: UNet2DConfig, w: StateDict) -> "UNet2D":
        """The network of `cfg` with the weights of `w` (every shape checked, every weight
        used)."""
        ch = cfg.block_out_channels
        temb = cfg.time_embed_dim
        groups, eps = cfg.norm_num_groups, cfg.norm_eps
        conv_in = Conv2d.load(w, "conv_in", cfg.in_channels, ch[0], 3)
        linear_1 = Linear.load(w, "time_embedding.linear_1", ch[0], temb)
        linear_2 = Linear.load(w, "time_embedding.linear_2", temb, temb)
        downs = []
        cout = ch[0]
        for i, kind in enumerate(cfg.down_block_types):
            cin, cout = cout, ch[i]
            p = f"down_blocks.{i}"
            resnets = tuple(
                ResnetBlock2D.load(w, f"{p}.resnets.{j}", cin if j == 0 else cout, cout, temb, cfg)
                for j in range(cfg.layers_per_block)
            )
            attns = None
            if kind == "AttnDownBlock2D":
                attns = tuple(
                    Attention.load(
                        w, f"{p}.attentions.{j}", cout, _head_dim(cfg, cout), groups, eps
                    )
                    for j in range(cfg.layers_per_block)
                )
            last = i == len(ch) - 1
            down = (
                None
                if last
                else Downsample2D.load(w, f"{p}.downsamplers.0", cout, cfg.downsample_padding)
            )
            downs.append(DownBlock(resnets, attns, down))
        mid = None
        if cfg.mid_block_type is not None:
            c, s = ch[-1], cfg.mid_block_scale_factor
            resnets = tuple(
                ResnetBlock2D.load(w, f"mid_block.resnets.{j}", c, c, temb, cfg, s)
                for j in range(2)
            )
            attns = None
            if cfg.add_attention:
                attn_groups: int | None = cfg.attn_norm_num_groups
                if attn_groups is None:
                    attn_groups = groups if cfg.resnet_time_scale_shift == "default" else None
                attns = (
                    Attention.load(
                        w, "mid_block.attentions.0", c, _head_dim(cfg, c), attn_groups, eps, s
                    ),
                )
            mid = MidBlock(resnets, attns)
        ups = []
        rev = tuple(reversed(ch))
        cout = rev[0]
        for i, kind in enumerate(cfg.up_block_types):
            prev, cout = cout, rev[i]
            cin = rev[min(i + 1, len(ch) - 1)]
            p = f"up_blocks.{i}"
            n = cfg.layers_per_block + 1
            resnets = tuple(
                ResnetBlock2D.load(
                    w,
                    f"{p}.resnets.{j}",
                    (prev if j == 0 else cout) + (cin if j == n - 1 else cout),
                    cout,
                    temb,
                    cfg,
                )
                for j in range(n)
            )
            attns = None
            if kind == "AttnUpBlock2D":
                attns = tuple(
                    Attention.load(
                        w, f"{p}.attentions.{j}", cout, _head_dim(cfg, cout), groups, eps
                    )
                    for j in range(n)
                )
            last = i == len(ch) - 1
            up = None if last else Upsample2D.load(w, f"{p}.upsamplers.0", cout)
            ups.append(UpBlock(resnets, attns, up))
        norm_out = GroupNorm.load(w, "conv_norm_out", ch[0], groups, eps)
        conv_out = Conv2d.load(w, "conv_out", ch[0], cfg.out_channels, 3)
        w.check_all_used()
        return cls(
            conv_in, linear_1, linear_2, tuple(downs), mid, tuple(ups), norm_out, conv_out, cfg
        )

    def __call__(self, timestep, x):
        cfg = self.config
        if x.shape != cfg.data_shape:
            raise ValueError(
                f"UNet2D takes ONE sample of shape {cfg.data_shape}; got x with shape {x.shape}. "
                "Use jax.vmap for a batch."
            )
        dtype = self.conv_in.weight.dtype
        h = x.astype(dtype)
        if cfg.center_input_sample:
            h = 2 * h - 1
        emb = timestep_embedding(
            timestep, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift
        )
        temb = self.linear_2(jax.nn.silu(self.linear_1(emb.astype(dtype))))
        h = self.conv_in(h)
        skips = [h]
        for block in self.down_blocks:
            h, new = block(h, temb)
            skips.extend(new)
        if self.mid_block is not None:
            h = self.mid_block(h, temb)
        for block in self.up_blocks:
            h = block(h, skips, temb)
        h = self.conv_out(jax.nn.silu(self.conv_norm_out(h)))
        return h.astype(x.dtype)
