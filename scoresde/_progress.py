"""Progress meters for long calls (`progress=True` on the samplers and the likelihood).

Solves through `diffrax.diffeqsolve` use diffrax's own `TqdmProgressMeter` (under `vmap` it
follows the slowest sample). The fixed-length loops of this package (predictor-corrector, EDM)
advance a `tqdm` bar from inside the compiled loop with a host callback, once per step of the
whole batch.
"""

import functools

import diffrax as dfx
import jax

_BARS: dict = {}


def progress_meter(progress: bool) -> dfx.AbstractProgressMeter:
    """diffrax's tqdm meter, or none."""
    return dfx.TqdmProgressMeter() if progress else dfx.NoProgressMeter()


def _tick(desc: str, total: int, step) -> None:
    from tqdm.auto import tqdm

    del step  # ticks may arrive in any order: count them
    if desc not in _BARS:
        _BARS[desc] = tqdm(total=total, desc=desc, unit="step")
    bar = _BARS[desc]
    bar.update(1)
    if bar.n >= total:
        _BARS.pop(desc).close()


def tick(progress: bool, desc: str, step, total: int) -> None:
    """Inside a compiled loop over `total` steps: advance the bar `desc` after step `step`.
    Call it outside any `vmap`, or it ticks once per sample."""
    if progress:
        jax.debug.callback(functools.partial(_tick, desc, int(total)), step)


def scan_steps(step, x, noise_keys, cond, steps: int, *, progress: bool, desc: str):
    """`x_i <- step(x_i, key_i, cond_i, i)` for `i < steps`: one `lax.scan` over the steps whose
    body is vmapped over the samples, so the progress bar ticks once per step of the batch."""

    def body(x, i):
        x = jax.vmap(step, in_axes=(0, 0, 0, None))(x, noise_keys, cond, i)
        tick(progress, desc, i, steps)
        return x, None

    x, _ = jax.lax.scan(body, x, jax.numpy.arange(steps))
    return x
