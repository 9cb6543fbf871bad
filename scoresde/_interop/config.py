r"""Reading a diffusers `UNet2DModel` `config.json` into a checked, hashable value.

Only the configurations whose computation [`UNet2D`][scoresde.interop.UNet2D] reproduces are
accepted (those of the `google/ddpm-*` checkpoints and their neighbours); any other key or value
raises a `ValueError` that names it. Keys starting with `_` (`_class_name`,
`_diffusers_version`, `_name_or_path`) are metadata; `_class_name`, when present, must be
`UNet2DModel`.
"""

import dataclasses
import json
import os
from typing import Any

# Keys whose every value is reproduced, with diffusers' defaults for UNet2DModel.
_DEFAULTS: dict[str, Any] = {
    "sample_size": None,
    "in_channels": 3,
    "out_channels": 3,
    "center_input_sample": False,
    "time_embedding_type": "positional",
    "time_embedding_dim": None,
    "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": (
        "DownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
    ),
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    "block_out_channels": (224, 448, 672, 896),
    "layers_per_block": 2,
    "mid_block_scale_factor": 1.0,
    "downsample_padding": 1,
    "downsample_type": "conv",
    "upsample_type": "conv",
    "dropout": 0.0,
    "act_fn": "silu",
    "attention_head_dim": 8,
    "norm_num_groups": 32,
    "attn_norm_num_groups": None,
    "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default",
    "add_attention": True,
    "class_embed_type": None,
    "num_class_embeds": None,
    "num_train_timesteps": None,
}
# Keys with a restricted set of values: the values this reader supports.
_SUPPORTED: dict[str, tuple] = {
    "time_embedding_type": ("positional",),
    "mid_block_type": ("UNetMidBlock2D", None),
    "downsample_type": ("conv",),
    "upsample_type": ("conv",),
    "act_fn": ("silu", "swish"),
    "resnet_time_scale_shift": ("default", "scale_shift"),
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
}
DOWN_BLOCKS = ("DownBlock2D", "AttnDownBlock2D")
UP_BLOCKS = ("UpBlock2D", "AttnUpBlock2D")


def _int(key, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"config key {key!r} must be an int >= {minimum}; got {value!r}.")
    return value


@dataclasses.dataclass(frozen=True)
class UNet2DConfig:
    """A diffusers `UNet2DModel` configuration this package reproduces (see
    `parse_unet_config`); fields as in diffusers, channel lists as tuples, `sample_size` as
    `(height, width)`."""

    sample_size: tuple[int, int]
    in_channels: int
    out_channels: int
    center_input_sample: bool
    time_embedding_dim: int | None
    freq_shift: float
    flip_sin_to_cos: bool
    down_block_types: tuple[str, ...]
    mid_block_type: str | None
    up_block_types: tuple[str, ...]
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    mid_block_scale_factor: float
    downsample_padding: int
    attention_head_dim: int | None
    norm_num_groups: int
    attn_norm_num_groups: int | None
    norm_eps: float
    resnet_time_scale_shift: str
    add_attention: bool

    @property
    def time_embed_dim(self) -> int:
        """The width of the time embedding: `time_embedding_dim` or 4 x the first channels."""
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @property
    def data_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, *self.sample_size)


def parse_unet_config(raw: dict, source: str = "config.json") -> UNet2DConfig:
    """A checked `UNet2DConfig` from the dict of a diffusers `config.json`.

    **Raises:** `ValueError` naming the key (and `source`) for an unknown key, an unsupported
    value, or inconsistent block lists."""
    c = checked_keys(raw, source, ("UNet2DModel",), "UNet2DModel", _DEFAULTS, _SUPPORTED)
    down, up = tuple(c["down_block_types"]), tuple(c["up_block_types"])
    channels = tuple(_int("block_out_channels", ch) for ch in c["block_out_channels"])
    for key, blocks, allowed in (
        ("down_block_types", down, DOWN_BLOCKS),
        ("up_block_types", up, UP_BLOCKS),
    ):
        bad = [b for b in blocks if b not in allowed]
        if bad:
            raise ValueError(
                f"{source}: config key {key!r} has unsupported block(s) {bad}; "
                f"supported: {list(allowed)}."
            )
    if not (len(down) == len(up) == len(channels) >= 1):
        raise ValueError(
            f"{source}: down_block_types, up_block_types and block_out_channels must have the "
            f"same length; got {len(down)}, {len(up)}, {len(channels)}."
        )
    size = c["sample_size"]
    if size is None:
        raise ValueError(f"{source}: config key 'sample_size' is needed (the image size).")
    size = (size, size) if isinstance(size, int) else tuple(size)
    if len(size) != 2:
        raise ValueError(
            f"{source}: config key 'sample_size' must be an int or [h, w]; got {size}."
        )
    factor = 2 ** (len(channels) - 1)
    for s in size:
        _int("sample_size", s)
        if s % factor:
            raise ValueError(
                f"{source}: config key 'sample_size' = {c['sample_size']!r} must be divisible by "
                f"{factor} (one halving per down block but the last)."
            )
    groups = _int("norm_num_groups", c["norm_num_groups"])
    for ch in channels:
        if ch % groups:
            raise ValueError(
                f"{source}: block_out_channels {list(channels)} must be divisible by "
                f"norm_num_groups = {groups}."
            )
    head = c["attention_head_dim"]
    if head is not None:
        _int("attention_head_dim", head)
    attn_groups = c["attn_norm_num_groups"]
    if attn_groups is not None:
        _int("attn_norm_num_groups", attn_groups)
    if c["time_embedding_dim"] is not None:
        _int("time_embedding_dim", c["time_embedding_dim"])
    in_ch, out_ch = _int("in_channels", c["in_channels"]), _int("out_channels", c["out_channels"])
    if out_ch != in_ch:
        raise ValueError(
            f"{source}: config key 'out_channels' = {out_ch} differs from in_channels = {in_ch}: "
            "a score model's output has the sample's shape (a learned-variance model is not "
            "supported)."
        )
    padding = c["downsample_padding"]
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ValueError(f"{source}: config key 'downsample_padding' must be an int >= 0.")
    for key in ("center_input_sample", "flip_sin_to_cos", "add_attention"):
        if not isinstance(c[key], bool):
            raise ValueError(f"{source}: config key {key!r} must be a bool; got {c[key]!r}.")
    return UNet2DConfig(
        sample_size=size,
        in_channels=in_ch,
        out_channels=out_ch,
        center_input_sample=c["center_input_sample"],
        time_embedding_dim=c["time_embedding_dim"],
        freq_shift=float(c["freq_shift"]),
        flip_sin_to_cos=c["flip_sin_to_cos"],
        down_block_types=down,
        mid_block_type=c["mid_block_type"],
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=_int("layers_per_block", c["layers_per_block"]),
        mid_block_scale_factor=float(c["mid_block_scale_factor"]),
        downsample_padding=padding,
        attention_head_dim=head,
        norm_num_groups=groups,
        attn_norm_num_groups=attn_groups,
        norm_eps=float(c["norm_eps"]),
        resnet_time_scale_shift=c["resnet_time_scale_shift"],
        add_attention=c["add_attention"],
    )


def read_json(path: str | os.PathLike) -> dict:
    """The JSON object in the file `path` (`FileNotFoundError` naming it if absent)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such file: {os.fspath(path)!r}.")
    with open(path) as f:
        return json.load(f)


def checked_keys(raw, source, class_names, what, defaults, supported) -> dict:
    """A diffusers config dict with its defaults filled in, after the checks every reader makes:
    a JSON object, `_class_name` one of `class_names` (default the first), no key outside
    `defaults`, and each key of `supported` holding one of its allowed values. Every error names
    `source` and the key."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a JSON object; got {type(raw).__name__}.")
    name = raw.get("_class_name", class_names[0])
    if name not in class_names:
        raise ValueError(
            f"{source}: _class_name {name!r} is not supported; supported: {list(class_names)}."
        )
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in defaults)
    if unknown:
        raise ValueError(f"{source}: unsupported {what} config key(s) {unknown}.")
    c = {**defaults, **{k: v for k, v in raw.items() if not k.startswith("_")}}
    for key, allowed in supported.items():
        if c[key] not in allowed:
            raise ValueError(
                f"{source}: config key {key!r} = {c[key]!r} is not supported; "
                f"supported: {list(allowed)}."
            )
    return c
