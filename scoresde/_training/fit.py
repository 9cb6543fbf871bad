r"""Training: a functional `fit` around ONE module-level `eqx.filter_jit` step.

`fit(model, loss, data, key=...)` runs `steps` optimiser steps of `loss(model, batch, key)`,
`steps_per_call` of them fused into one compiled call (`jax.lax.scan`), keeps an exponential
moving average (EMA) of the weights, prints a progress line with the loss (the mean of the last
50 steps), calls an evaluation hook every `eval_every` steps, and is reproducible from its one
`key`: step `k` draws its batch and its loss randomness from `jax.random.fold_in(key, k)`.
"""

import functools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec
from jaxtyping import Array, ArrayLike, PyTree

from .._custom_types import Key
from .._data import gaussian_mixture
from .._networks import MLPScoreNet
from .._parametrisation import EpsPrediction
from .._sde import VPSDE
from .._sharding import auto_axes, check_sharding
from .losses import DenoisingScoreMatching


@functools.lru_cache(maxsize=32)
def adam_with_warmup(
    learning_rate: float = 1e-3,
    *,
    warmup_steps: int = 100,
    clip_norm: float | None = 1.0,
    decay_steps: int | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
) -> optax.GradientTransformation:
    r"""The default optimiser: global-norm gradient clipping, then Adam with a linear warm-up.

    The learning rate rises linearly from 0 to `learning_rate` over `warmup_steps`, then stays
    constant, or, with `decay_steps` (the total number of steps), follows a cosine down to
    `learning_rate / 20` at `decay_steps`. Cached on its arguments, so equal settings give the
    same object and no recompilation.
    """
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0; got learning_rate={learning_rate!r}.")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0; got warmup_steps={warmup_steps!r}.")
    if decay_steps is not None:
        if decay_steps <= warmup_steps:
            raise ValueError(
                f"decay_steps must exceed warmup_steps; got decay_steps={decay_steps}, "
                f"warmup_steps={warmup_steps}."
            )
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps, decay_steps, learning_rate / 20
        )
    elif warmup_steps > 0:
        schedule = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    else:
        schedule = learning_rate
    parts = [optax.adam(schedule, b1=b1, b2=b2)]
    if clip_norm is not None:
        if not clip_norm > 0:
            raise ValueError(f"clip_norm must be > 0 or None; got clip_norm={clip_norm!r}.")
        parts.insert(0, optax.clip_by_global_norm(clip_norm))
    return optax.chain(*parts)


class TrainState(eqx.Module):
    """Everything the next training step needs.

    - `model`: the current model (a score `model(t, x)`, usually a parametrisation wrapper).
    - `ema_model`: the exponential moving average of `model`'s weights (what to sample from).
    - `opt_state`: the optax state.
    - `step`: the number of steps taken, an int32 array.
    """

    model: PyTree
    ema_model: PyTree
    opt_state: PyTree
    step: Array

    @classmethod
    def init(cls, model: PyTree, optimizer: optax.GradientTransformation) -> "TrainState":
        """A fresh state: EMA equal to the model, step 0."""
        params = eqx.filter(model, eqx.is_inexact_array)
        return cls(model, model, optimizer.init(params), jnp.asarray(0, jnp.int32))


class FitResult(eqx.Module):
    """The outcome of [`scoresde.fit`][]: the final `state`, the per-step `losses` (a NumPy
    array), and `evals`, a list of `(step, value)` from the evaluation hook."""

    state: TrainState
    losses: np.ndarray
    evals: list

    @property
    def model(self):
        return self.state.model

    @property
    def ema_model(self):
        return self.state.ema_model


def _ema(ema_params, params, decay, step):
    # Warm-up: the average forgets the initial weights quickly early in training.
    step = jnp.asarray(step).astype(decay.dtype)
    decay = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(
        lambda e, p: decay * e + (1 - decay) * p.astype(e.dtype), ema_params, params
    )


def _one_step(params, static, opt_state, ema_params, batch, key, loss, optimizer, ema_decay, step):
    def loss_of(p):
        return loss(eqx.combine(p, static), batch, key)

    value, grads = jax.value_and_grad(loss_of)(params)
    # optax mixes its int32 step count with Python floats (Adam's bias correction, schedules):
    # trace it under standard promotion so training works with strict promotion switched on.
    with jax.numpy_dtype_promotion("standard"):
        updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    ema_params = _ema(ema_params, params, ema_decay, step)
    return params, opt_state, ema_params, value


@eqx.filter_jit
def _train_chunk(
    *,
    state,
    data,
    key,
    active,
    loss,
    optimizer,
    ema_decay,
    preprocess,
    batch_size,
    num,
    unroll,
    sharding=None,
):
    """`num` fused steps; steps with index >= `active` leave the state unchanged.

    `data` is either the whole dataset (batches drawn inside, `batch_size` rows with
    replacement) or, when `batch_size` is None, the stacked batches `(num, batch, ...)`.
    """
    params, static = eqx.partition(state.model, eqx.is_inexact_array)
    ema_params = eqx.filter(state.ema_model, eqx.is_inexact_array)

    def body(carry, i):
        params, opt_state, ema_params, step = carry
        k = jr.fold_in(key, step)
        key_batch, key_pre, key_loss = jr.split(k, 3)
        if batch_size is None:
            batch = data[i]
        else:
            idx = jr.randint(key_batch, (batch_size,), 0, data.shape[0])
            batch = data[idx]
        if preprocess is not None:
            batch = preprocess(key_pre, batch)
        if sharding is not None:  # data parallel: XLA splits the loss and all-reduces the grads
            batch = jax.lax.with_sharding_constraint(batch, sharding)
        new = _one_step(
            params, static, opt_state, ema_params, batch, key_loss, loss, optimizer, ema_decay, step
        )
        if num == 1:  # `active` is 1: nothing to mask
            return (*new[:3], step + 1), new[3]
        keep = i < active
        new_carry = jax.tree.map(
            lambda a, b: jnp.where(keep, a, b), (*new[:3], step + 1), (*carry[:3], step)
        )
        return new_carry, jnp.where(keep, new[3], jnp.nan)

    init = (params, state.opt_state, ema_params, state.step)
    if unroll:  # straight-line code: XLA:CPU runs convolutions inside loops far slower
        carry, losses = init, []
        for i in range(num):
            carry, value = body(carry, jnp.asarray(i))
            losses.append(value)
        (params, opt_state, ema_params, step), losses = carry, jnp.stack(losses)
    else:
        (params, opt_state, ema_params, step), losses = jax.lax.scan(body, init, jnp.arange(num))
    new_state = TrainState(
        eqx.combine(params, static), eqx.combine(ema_params, static), opt_state, step
    )
    return new_state, losses


def _has_conv(model) -> bool:
    is_conv = lambda m: isinstance(m, eqx.nn.Conv)
    return any(is_conv(m) for m in jax.tree.leaves(model, is_leaf=is_conv))


def _check_finite_array(data):
    arr = np.asarray(data)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(
                f"data contains NaN or inf in {rows.size} row(s), first at row {rows[0]}; "
                "clean the training data before calling fit."
            )


def _check_finite_batch(batch, index):
    arr = np.asarray(batch)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"training batch {index} contains NaN or inf values.")


LOSS_WINDOW = 50  # the progress bar's and the final loss: the mean of the last 50 steps


def recent_loss(losses, window: int = LOSS_WINDOW) -> float:
    """The mean of the last `window` finite `losses` (NaN if none): the training loss as it is
    now, steadier than one batch's and, unlike an average from the start, not held up by the
    large losses of the first steps."""
    losses = np.asarray(losses, np.float64)
    finite = losses[np.isfinite(losses)][-window:]
    return float(np.mean(finite)) if finite.size else float("nan")


class _Progress:
    """A `tqdm` bar on stderr: steps done, steps/s, ETA and the loss as the mean of the last
    `LOSS_WINDOW` steps (`recent_loss`), labelled so on the bar."""

    def __init__(self, total, enabled, stream=None):
        from tqdm.auto import tqdm

        self.recent = np.zeros(0)
        self.bar = tqdm(total=total, unit="step", file=sys.stderr if stream is None else stream,
                        disable=not enabled, dynamic_ncols=True, mininterval=0.5)  # fmt: skip

    def update(self, step, losses):
        finite = np.asarray(losses, np.float64)
        self.recent = np.concatenate([self.recent, finite[np.isfinite(finite)]])[-LOSS_WINDOW:]
        if self.recent.size:
            self.bar.set_postfix_str(
                f"loss {np.mean(self.recent):.4g} (mean of last {self.recent.size})", refresh=False
            )
        self.bar.update(step - self.bar.n)

    def close(self):
        self.bar.close()


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {name}={value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {name}={value}.")
    return int(value)


def fit(
    model: PyTree,
    loss: Callable[[PyTree, Array, Key], Array],
    data: ArrayLike | Iterable,
    *,
    key: Key,
    steps: int,
    batch_size: int = 256,
    optimizer: optax.GradientTransformation | None = None,
    ema_decay: float = 0.999,
    steps_per_call: int | None = None,
    preprocess: Callable[[Key, Array], Array] | None = None,
    eval_fn: Callable[[TrainState], object] | None = None,
    eval_every: int | None = None,
    progress: bool = True,
    state: TrainState | None = None,
    sharding=None,
    checkpoint_fn: Callable[[TrainState, np.ndarray], object] | None = None,
    checkpoint_every: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> FitResult:
    r"""Train `model` by minimising `loss(model, batch, key)` with optax.

    **Arguments:**

    - `model`: an Equinox model; its inexact-array leaves are trained.
    - `loss`: e.g. [`scoresde.DenoisingScoreMatching`][]`(sde)`; pass the SAME object across
      calls to reuse the compiled step.
    - `data`: an array `(num, *data_shape)` (batches of `batch_size` rows are drawn with
      replacement inside the compiled step) or an iterable of batches `(batch, *data_shape)`.
      Floating data with NaN or inf is rejected, naming the row or the batch.
    - `key`: step `k` uses `fold_in(key, k)` for its batch, `preprocess` and `loss`.
    - `steps`: optimiser steps to take (beyond `state.step` if resuming).
    - `sharding`: data-parallel training over a `jax.sharding.NamedSharding` splitting the
      batch axis: parameters, optimiser state and `data` are replicated on its mesh, each step's
      batch is split over the mesh axis, and XLA all-reduces the gradients. The losses equal the
      one-device losses up to float rounding (a sum split over devices); `batch_size` must be a
      multiple of the device count.
    - `optimizer`: defaults to [`scoresde.adam_with_warmup`][]`()` (Adam 1e-3, 100 warm-up
      steps, clipping at global norm 1).
    - `ema_decay`: EMA of the weights, `ema <- d * ema + (1 - d) * params` with the warm-up
      `d = min(ema_decay, (1 + step) / (10 + step))`.
    - `steps_per_call`: steps fused into one compiled call (`jax.lax.scan`); default 50, or 1
      for models with convolutions on CPU, where XLA runs convolutions inside loops about
      20x slower (such models get their fused steps unrolled instead).
    - `preprocess`: `preprocess(key, batch)` applied to every batch inside the step, e.g.
      [`scoresde.dequantize`][] for 8-bit images.
    - `eval_fn`, `eval_every`: `eval_fn(state)` is called after every `eval_every` steps
      (rounded up to a whole call) and at the end; results go to `FitResult.evals`.
    - `progress`: print a progress bar to stderr with the loss as the mean of the last 50 steps.
    - `state`: resume from a [`scoresde.TrainState`][] (then `model` is ignored).
    - `checkpoint_fn`, `checkpoint_every`: `checkpoint_fn(state, losses)` (the losses of this
      call so far) whenever `state.step` reaches a multiple of `checkpoint_every` (compiled
      calls are cut short to land on them), at the end, and when `stop` ends training early.
    - `stop`: checked before every compiled call; when it returns True, training ends there
      (after the pending losses are read and `checkpoint_fn` is called) and the result's
      `state.step` says how far it got. E.g. a flag set by a SIGINT handler.

    **Returns:** a [`scoresde.FitResult`][] (`.state`, `.model`, `.ema_model`, `.losses`,
    `.evals`).
    """
    steps = _check_int("steps", steps, 1)
    conv_on_cpu = jax.default_backend() == "cpu" and _has_conv(
        model if state is None else state.model
    )
    if steps_per_call is None:
        steps_per_call = 1 if conv_on_cpu else 50
    steps_per_call = _check_int("steps_per_call", steps_per_call, 1)
    steps_per_call = min(steps_per_call, steps)
    if not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must lie in [0, 1); got ema_decay={ema_decay!r}.")
    if eval_every is not None:
        eval_every = _check_int("eval_every", eval_every, 1)
        if eval_fn is None:
            raise ValueError("eval_every is set but eval_fn is None.")
    if checkpoint_every is not None:
        checkpoint_every = _check_int("checkpoint_every", checkpoint_every, 1)
        if checkpoint_fn is None:
            raise ValueError("checkpoint_every is set but checkpoint_fn is None.")
    if not callable(loss):
        raise TypeError(f"loss must be callable as loss(model, batch, key); got {loss!r}.")
    optimizer = adam_with_warmup() if optimizer is None else optimizer
    if state is None:
        state = TrainState.init(model, optimizer)
    elif not isinstance(state, TrainState):
        raise TypeError(f"state must be a TrainState or None; got {type(state).__name__}.")
    decay = jnp.asarray(ema_decay, jnp.float32)
    if sharding is not None:  # data parallel: parameters and optimiser state on every device
        devices = check_sharding(sharding)[1]
        if hasattr(data, "shape") and batch_size % devices:
            raise ValueError(
                f"batch_size={batch_size} must be a multiple of the {devices} devices of sharding."
            )
        sharding = auto_axes(sharding)
        everywhere = NamedSharding(sharding.mesh, PartitionSpec())
        place = lambda a: jax.device_put(a, everywhere) if eqx.is_array(a) else a
        state = jax.tree.map(place, state)

    from_array = hasattr(data, "shape") and hasattr(data, "dtype")
    if from_array:
        batch_size = _check_int("batch_size", batch_size, 1)
        data = jnp.asarray(data)
        if data.ndim < 2:
            raise ValueError(f"data must have shape (num, *data_shape); got {data.shape}.")
        if data.shape[0] == 0 or math.prod(data.shape[1:]) == 0:
            raise ValueError(
                f"data must hold at least one non-empty sample; got data with shape {data.shape}."
            )
        _check_finite_array(data)
        if sharding is not None:
            data = jax.device_put(data, NamedSharding(sharding.mesh, PartitionSpec()))
        batches: Iterator | None = None
    else:
        batches = iter(data)  # type: ignore[arg-type]  # the non-array branch: an iterable

    progress_bar = _Progress(steps, progress)
    losses: list[np.ndarray] = []
    evals: list[tuple[int, object]] = []
    pending: list[tuple[int, int, Array]] = []

    def flush():
        # Reading losses back synchronises; doing it only now and then keeps dispatch async.
        for start, count, device_losses in pending:
            values = np.asarray(device_losses)[:count]
            losses.append(values)
            progress_bar.update(start + count, values)
            if not np.all(np.isfinite(values)):
                progress_bar.close()
                first = start + int(np.flatnonzero(~np.isfinite(values))[0])
                raise FloatingPointError(
                    f"the loss became NaN or inf at step {first}; lower the learning rate or "
                    "check the model and data."
                )
        pending.clear()

    def all_losses():
        return np.concatenate(losses) if losses else np.zeros(0, np.float32)

    done, next_eval, last_flush = 0, eval_every, time.perf_counter()
    next_checkpoint = None  # steps into this call; checkpoints land on multiples of the step
    if checkpoint_every is not None:
        next_checkpoint = checkpoint_every - int(state.step) % checkpoint_every
    while done < steps:
        if stop is not None and stop():
            break
        active = min(steps_per_call, steps - done)
        if next_checkpoint is not None:
            active = min(active, next_checkpoint - done)
        if batches is None:
            state, chunk_losses = _train_chunk(
                state=state, data=data, key=key, active=jnp.asarray(active), loss=loss,
                optimizer=optimizer, ema_decay=decay, preprocess=preprocess,
                batch_size=batch_size, num=steps_per_call, unroll=conv_on_cpu, sharding=sharding,
            )  # fmt: skip
        else:
            stacked = []
            for i in range(active):
                try:
                    batch = next(batches)
                except StopIteration:
                    raise ValueError(
                        f"data ran out after {done + i} batches; {steps} steps were asked for."
                    ) from None
                _check_finite_batch(batch, done + i)
                stacked.append(np.asarray(batch))
            stacked += [stacked[-1]] * (steps_per_call - active)
            state, chunk_losses = _train_chunk(
                state=state, data=jnp.asarray(np.stack(stacked)), key=key,
                active=jnp.asarray(active), loss=loss, optimizer=optimizer, ema_decay=decay,
                preprocess=preprocess, batch_size=None, num=steps_per_call, unroll=conv_on_cpu,
                sharding=sharding,
            )  # fmt: skip
        pending.append((done, active, chunk_losses))
        done += active
        eval_due = eval_every is not None and next_eval is not None and done >= next_eval
        if eval_due or time.perf_counter() - last_flush > 1.0:
            flush()
            last_flush = time.perf_counter()
        if eval_due and eval_fn is not None and eval_every is not None:
            evals.append((done, eval_fn(state)))
            next_eval = (done // eval_every + 1) * eval_every
        if next_checkpoint is not None and done >= next_checkpoint and done < steps:
            flush()
            if checkpoint_fn is not None:
                checkpoint_fn(state, all_losses())
            next_checkpoint = done + checkpoint_every  # type: ignore[operator]
    flush()
    progress_bar.close()
    if checkpoint_fn is not None:
        checkpoint_fn(state, all_losses())
    if eval_fn is not None and (not evals or evals[-1][0] != done):
        evals.append((done, eval_fn(state)))
    return FitResult(state, all_losses(), evals)


def num_params(model: PyTree) -> int:
    """The number of trainable (inexact-array) parameters of `model`."""
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(math.prod(leaf.shape) for leaf in leaves))


def train_toy2d(
    *,
    key: Key,
    sde=None,
    data: Array | None = None,
    steps: int = 3000,
    batch_size: int = 512,
    width: int = 128,
    depth: int = 3,
    learning_rate: float = 2e-3,
    progress: bool = False,
) -> FitResult:
    r"""A short training run on 2-D data: an [`scoresde.EpsPrediction`][] MLP, DSM with
    $\lambda = \sigma^2$, Adam with warm-up and a cosine decay over `steps`, EMA 0.999.

    `data` defaults to 20 000 samples of [`scoresde.toy_mixture`][]; `sde` to `VPSDE()`.
    The trained score is `result.ema_model` (its SDE is `result.ema_model.sde`). About a
    minute on a laptop CPU with the defaults.
    """
    sde = VPSDE() if sde is None else sde
    key_data, key_init, key_fit = jr.split(key, 3)
    if data is None:
        data = gaussian_mixture(key_data, 20_000)
    dim = jnp.shape(data)[1:]
    model = EpsPrediction(MLPScoreNet(dim, width=width, depth=depth, key=key_init), sde)
    return fit(
        model,
        DenoisingScoreMatching(sde),
        data,
        key=key_fit,
        steps=steps,
        batch_size=batch_size,
        optimizer=adam_with_warmup(learning_rate, decay_steps=max(steps, 101)),
        progress=progress,
    )
