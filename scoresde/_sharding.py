r"""Batch entry points over many devices (`sharding=`) and in chunks (`chunk_size=`).

A batch of `num` samples is cut into chunks of `chunk_size` rows (one chunk by default), each
padded to a multiple of the device count $N$ with copies of its LAST real row, and each split
over the devices of a `jax.sharding.NamedSharding` under `jax.shard_map`: device `d` holds rows
`start + d * local + i` for `i < local`, computed on the device from `jax.lax.axis_index` (its
GLOBAL indices, clipped to `num - 1` on padding rows). Sample `i` so keeps
`fold_in(key, i)`, and its result does not depend on $N$ nor on the chunk size, up to the
rounding of the program XLA compiles for the local rows (it can fuse or rewrite operations
differently for another width or device count; an adaptive solve can amplify one ulp to its
tolerance: see docs/how-to/devices.md). Padding rows
repeat the last real sample exactly (same input, same key, so the same steps: they never lengthen
a device's loop) and are dropped before returning. Results come back with the given sharding when
$N$ divides `num`; otherwise replicated over the same mesh (a mesh axis cannot hold an uneven
split of the rows).

Inside `shard_map` every device runs its OWN vmapped adaptive `while_loop`, until its own
slowest sample ends; nothing in the loop communicates (`tests/test_sharding.py` reads the compiled
HLO). Plain automatic partitioning of the same vmapped loop would all-reduce the loop's
predicate every step, so every device would run until the globally slowest sample ends.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from ._checks import check_int


class Rows(eqx.Module):
    """The rows a device (or a chunk) holds: global indices `start + i` for `i < num`, clipped to
    `total - 1` (padding rows repeat the last real sample)."""

    start: jax.Array
    num: int = eqx.field(static=True)
    total: int = eqx.field(static=True)

    def indices(self):
        return jnp.minimum(self.start + jnp.arange(self.num), self.total - 1)


def auto_axes(sharding):
    """`sharding` on the same devices with automatic (compiler-chosen) mesh axes, for code that
    leaves the partitioning to XLA (`fit`, `sample_smc`) and needs no sharding annotations."""
    from jax.sharding import AxisType, Mesh

    mesh = sharding.mesh
    auto = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names))
    return NamedSharding(auto, sharding.spec)


def check_sharding(sharding) -> tuple[str, int]:
    """`(axis_name, num_devices)` of a `NamedSharding` splitting axis 0 over one mesh axis (and
    nothing else): `TypeError`/`ValueError` otherwise."""
    if not isinstance(sharding, NamedSharding):
        raise TypeError(
            "sharding must be a jax.sharding.NamedSharding splitting the batch axis, e.g. "
            "NamedSharding(jax.make_mesh((jax.device_count(),), ('batch',)), "
            f"PartitionSpec('batch')); got {sharding!r}."
        )
    spec = tuple(sharding.spec)
    first = spec[0] if spec else None
    if isinstance(first, tuple) and len(first) == 1:
        first = first[0]
    if not isinstance(first, str) or any(s is not None for s in spec[1:]):
        raise ValueError(
            "sharding must split axis 0 (the batch) over ONE mesh axis and no other axis, e.g. "
            f"PartitionSpec('batch'); got spec={sharding.spec}."
        )
    return first, int(sharding.mesh.shape[first])


def _pad_rows(tree, size: int):
    """Pad every leaf's leading axis to `size` with copies of its last row (a leaf laid out over
    a mesh with explicit axes, e.g. an earlier sharded result, is first replicated over it: the
    padding rows and the leaf must share a layout to be concatenated)."""
    from jax.sharding import AxisType

    def pad(a):
        extra = size - a.shape[0]
        if extra == 0:
            return a
        layout = getattr(a, "sharding", None)
        if isinstance(layout, NamedSharding) and AxisType.Explicit in layout.mesh.axis_types:
            a = jax.device_put(a, NamedSharding(layout.mesh, PartitionSpec()))
        return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)], axis=0)

    return jax.tree.map(pad, tree)


def _place(tree, sharding):
    """Inside jit: `tree` laid out as `sharding`, on meshes with explicit or automatic axes."""
    from jax.sharding import AxisType

    if any(t == AxisType.Explicit for t in sharding.mesh.axis_types):
        return jax.sharding.reshard(tree, sharding)
    return jax.lax.with_sharding_constraint(tree, sharding)


@eqx.filter_jit
def _run_chunk(fn, sharding, size, total, keep, start, part, kwargs):
    """`fn(**part, rows=..., **kwargs)` on `size` rows from global row `start`, split over the
    devices of `sharding` (or not), the first `keep` rows of the result kept."""
    if sharding is None:
        out = fn(**part, rows=Rows(start, size, total), **kwargs)
    else:
        axis, devices = check_sharding(sharding)
        local = size // devices
        dynamic, static = eqx.partition(kwargs, eqx.is_array)

        def body(part, dynamic, start):
            offset = start + jax.lax.axis_index(axis) * local
            return fn(**part, rows=Rows(offset, local, total), **eqx.combine(dynamic, static))

        spec, replicated = PartitionSpec(axis), PartitionSpec()
        everywhere = NamedSharding(sharding.mesh, replicated)
        part = _place(part, sharding)
        dynamic, start = _place((dynamic, start), everywhere)
        out = jax.shard_map(
            body,
            mesh=sharding.mesh,
            in_specs=(spec, replicated, replicated),
            out_specs=spec,
            check_vma=False,
        )(part, dynamic, start)
        return out  # padded: `_trim` drops the padding in a separate computation (below)
    return out if keep == size else jax.tree.map(lambda a: a[:keep], out)


def _trim(out, keep: int, sharding):
    """The first `keep` rows of a sharded result, placed with `result_sharding`. Separate from
    the solve, so a device whose `eqx.error_if` fires never leaves the others waiting in a
    collective: the solve itself has none."""
    placement = result_sharding(sharding, keep)
    if out is None or all(a.shape[0] == keep for a in jax.tree.leaves(out)):
        return out
    if placement is sharding:
        return jax.tree.map(lambda a: a[:keep], out)
    return jax.tree.map(lambda a: jax.device_put(a, placement)[:keep], out)


def result_sharding(sharding, num: int):
    """`sharding` if its device count divides `num`; else replicated over its mesh (a mesh
    axis cannot hold an uneven split of the rows)."""
    if num % check_sharding(sharding)[1] == 0:
        return sharding
    return NamedSharding(sharding.mesh, PartitionSpec())


def map_batch(fn, num: int, batched: dict, *, sharding=None, chunk_size=None, **kwargs):
    """`fn(**batched, rows=Rows(...), **kwargs)` over a batch of `num` rows, in chunks of
    `chunk_size` rows and over the devices of `sharding` (see the module docstring).

    `fn` is a module-level (jitted) function of the local rows: every leaf of `batched` (arrays
    or `None`) has `num` rows; `rows` gives their global indices; every leaf of its output has one
    row per local row. Results come back with `sharding` (if given).
    """
    if sharding is None and chunk_size is None:
        return fn(**batched, rows=None, **kwargs)
    devices = 1 if sharding is None else check_sharding(sharding)[1]
    chunk = num if chunk_size is None else min(check_int("chunk_size", chunk_size), num)
    size = math.ceil(chunk / devices) * devices
    outs = []
    for start in range(0, num, chunk):
        stop = min(start + chunk, num)
        rows = slice(start, stop)
        part = batched if stop - start == num else jax.tree.map(lambda a, r=rows: a[r], batched)
        part = _pad_rows(part, size)
        if sharding is not None:  # inputs may live anywhere (another mesh, one device)
            part = jax.device_put(part, sharding)
        start_ = jnp.asarray(start, jnp.int32)
        out = _run_chunk(fn, sharding, size, num, stop - start, start_, part, kwargs)
        outs.append(out if sharding is None else _trim(out, stop - start, sharding))
    if len(outs) == 1:
        return outs[0]
    out = jax.tree.map(lambda *parts: jnp.concatenate(parts, axis=0), *outs)
    return out if sharding is None else jax.device_put(out, result_sharding(sharding, num))
