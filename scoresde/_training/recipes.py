"""Training recipes: a `TrainConfig` names a data set, an SDE, a network and a loss; from it this
module builds the model, trains it, rebuilds it from a checkpoint and draws from it.

What `scoresde train`, `sample`, `nll` and `inpaint` share, and what the benchmark harness
(`scoresde._bench`) trains its networks with. A config is stored verbatim as a checkpoint's
hyper-parameters, so its choices are the names of the tables below (`SDES`, `PARAMETRISATIONS`,
...), turned into objects here.

- `model_from_config(config, key=...)`: a fresh model; `skeleton_from_config(config)`: its
  abstract skeleton, what `scoresde.load` fills;
- `train(config, out_dir)`: fit with periodic and on-signal checkpoints of the whole state
  (`resume=True` continues one), then write the checkpoint (EMA weights), its sidecar and the
  loss curve; `load_model(path)`: `(model, config)` from such a checkpoint;
- `draw(model, config, sampler, num, steps, key)`: samples by a named sampler (or, with
  `grid=`, on a tuned `TimeGrid` with the solver it was tuned for);
  `recipe_score(model, config, label, guidance)`: the (class-guided) score to draw from;
- `digit_data`, `held_out`, `data_shape`: the data a config trains and is evaluated on
  (`recipe_data`: the toy sets, the digits, mnist and a user's file, a `DataFile`).
"""

import dataclasses
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import diffrax as dfx
import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .. import _networks, _parametrisation, _sde
from .._inverse.guidance import ClassifierFree
from .._sampling.predictor_corrector import sample_pc
from .._sampling.sample import sample_ode, sample_sde
from .._score_calls import Conditioned
from .._solver import DPMSolverPP2M
from .._tuning.solver_names import solver_from_name
from .._tuning.time_grid import TimeGrid
from . import conditional as _conditional, losses as _losses
from .checkpoint import CheckpointError, check_checkpoint_path, load, read_sidecar, save
from .data_file import DataFile
from .fit import LOSS_WINDOW, TrainState, adam_with_warmup, fit, num_params, recent_loss
from .model_config import AbstractModelConfig
from .recipe_data import (
    DATASETS as DATASETS,
    FILE,
    NUM_CLASSES as NUM_CLASSES,
    TOY_DATASETS as TOY_DATASETS,
    data_levels,
    data_shape as data_shape,
    digit_data as digit_data,
    held_out as held_out,
    is_image,
    num_classes,
    training_set,
)
from .runs import (
    CHECKPOINT_FILE,
    DEFAULT_CHECKPOINT_EVERY,
    LOSSES_FILE,
    STATE_FILE,
    read_losses,
    write_losses,
)

SDES: dict[str, Callable[[], _sde.AbstractSDE]] = {
    "vp": _sde.VPSDE,
    "subvp": _sde.SubVPSDE,
    "ve": _sde.VESDE,
    "edm": _sde.EDMSDE,
}
PARAMETRISATIONS: dict[str, Callable[..., _parametrisation.AbstractParametrisation]] = {
    "score": _parametrisation.DirectScore,
    "eps": _parametrisation.EpsPrediction,
    "x0": _parametrisation.X0Prediction,
    "v": _parametrisation.VPrediction,
    "edm": _parametrisation.EDMPreconditioning,
}
WEIGHTINGS = ("sigma2", "likelihood", "edm")
# (width, depth) of the MLP for points; (base_channels, channel_mults) of the U-Net: for the
# 8x8 digits two resolutions; for mnist and image files three (28x28 -> 14x14 -> 7x7, attention
# at 7x7), so their height and width must be divisible by 4.
MLP_SIZES = {"tiny": (64, 2), "small": (128, 3), "medium": (256, 4)}
UNET_SIZES = {"tiny": (8, (1, 2)), "small": (16, (1, 2)), "medium": (32, (1, 2))}
UNET3_SIZES = {"tiny": (8, (1, 2, 2)), "small": (16, (1, 2, 2)), "medium": (32, (1, 2, 2))}
# digits: the data convention trained on, y = 2(k + u)/L - 1; 256 (8 bits, k the 8-bit value) or
# 17 (k the grey level 0..16). Evaluated in the same convention (`scoresde nll`).
LEVELS = (256, 17)
# The samplers `draw` knows: ode (adaptive Tsit5), sde (Euler-Maruyama), dpm++2m
# (DPM-Solver++(2M)), pc (reverse diffusion + Langevin corrector).
SAMPLERS = ("ode", "sde", "dpm++2m", "pc")


@dataclasses.dataclass(frozen=True)
class TrainConfig(AbstractModelConfig):
    """Everything a training run needs; stored as the checkpoint's hyper-parameters."""

    dataset: str = "mixture"
    sde: str = "vp"
    parametrisation: str = "eps"
    weighting: str = "sigma2"
    model_size: str = "small"
    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 2e-3
    num_train: int = 20_000
    seed: int = 0
    conditional: bool = False
    p_uncond: float = 0.1
    levels: int = 256
    data: DataFile | None = None  # dataset "file": the file, its hash, shape and split

    @classmethod
    def from_hyperparameters(cls, hyper: dict) -> "TrainConfig":
        """The config stored as a checkpoint's hyper-parameters (`dataclasses.asdict`, through
        JSON): its `data` dict back to a `DataFile`."""
        data = hyper.get("data")
        return cls(**{**hyper, "data": None if data is None else DataFile.from_json(data)})

    def __post_init__(self):
        if (self.dataset == FILE) != (self.data is not None):
            raise ValueError(
                f"dataset {FILE!r} and data (a DataFile) go together; got dataset="
                f"{self.dataset!r}, data={self.data!r}."
            )
        if self.data is not None and not isinstance(self.data, DataFile):
            raise TypeError(f"data must be a DataFile; got {type(self.data).__name__}.")
        for name, value, allowed in (
            ("dataset", self.dataset, DATASETS),
            ("sde", self.sde, tuple(SDES)),
            ("parametrisation", self.parametrisation, tuple(PARAMETRISATIONS)),
            ("weighting", self.weighting, WEIGHTINGS),
            ("model_size", self.model_size, tuple(MLP_SIZES)),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}; got {value!r}.")
        for name, count in (
            ("steps", self.steps),
            ("batch_size", self.batch_size),
            ("num_train", self.num_train),
        ):
            if count < 1:
                raise ValueError(f"{name} must be >= 1; got {count}.")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0; got {self.learning_rate}.")
        if self.conditional and num_classes(self) is None:
            raise ValueError(
                "conditional training needs a labelled dataset (digits, mnist, or a file with "
                f"labels y); got {self.dataset!r}" + (" without labels." if self.data else ".")
            )
        if not 0 <= self.p_uncond <= 1:
            raise ValueError(f"p_uncond must lie in [0, 1]; got {self.p_uncond}.")
        if isinstance(self.levels, bool) or self.levels not in LEVELS:
            raise ValueError(
                f"levels must be 256 (8-bit dequantisation) or 17 (the digits' grey levels); "
                f"got {self.levels!r}."
            )
        if self.levels != 256 and self.dataset != "digits":
            raise ValueError(
                f"levels={self.levels} is a digits convention; {self.dataset!r} has its own "
                "(mnist and 8-bit images: 256; continuous data: none; leave levels at 256)."
            )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return data_shape(self)

    @property
    def data_levels(self) -> int | None:
        return data_levels(self)

    def score(self, model, label: int | None = None, guidance: float = 1.0):
        return recipe_score(model, self, label, guidance)


# `scoresde train`'s defaults that depend on the data set (flags left unset): for the digits,
# the recipe measured by benchmarks/digits_recipe.py (docs/how-to/train.md); a `TrainConfig`
# itself keeps the generic ones (levels 256: checkpoints written before `levels` existed were
# 8-bit models).
#
# mnist (28x28, 4000 training digits): the digits recipe's loss (likelihood weighting with its
# importance-sampled times; EMA 0.999 as every recipe) at the data's own 256 levels, on the
# small three-resolution U-Net (16-32-32 channels, attention at 7x7; 268k parameters), sized for
# a CPU budget of about an hour on 2 cores: measured (benchmarks/mnist.py, session 14, the
# 2-core machine nearly quiet), 12000 steps of batch 64 took 3331 s with the first call's 14 s
# of compilation, 0.28 s a step (an earlier estimate under load, 0.47 s, had set 7000 steps);
# the final 64 samples (DPM-Solver++(2M), 50 steps) take about half a minute more. That run:
# 1.338 bits/dim [1.332, 1.344] on 200 test digits, below the best classical baseline (1.734). On a GPU: `MNIST_GPU_FLAGS` (docs/how-to/train.md).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"levels": 17, "weighting": "likelihood", "steps": 3600},
    "mnist": {"weighting": "likelihood", "steps": 12000, "batch_size": 64},
}
MNIST_GPU_FLAGS = "--model-size medium --batch-size 128 --steps 30000"


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """The `levels`, `weighting`, `steps` and `batch_size` that `scoresde train --dataset
    DATASET` uses when their flags are not given."""
    generic = TrainConfig()
    base = {"levels": generic.levels, "weighting": generic.weighting, "steps": generic.steps,
            "batch_size": generic.batch_size}  # fmt: skip
    return {**base, **DATASET_DEFAULTS.get(dataset, {})}


def model_from_config(config: TrainConfig, *, key):
    """The parametrised network that `config` trains (fresh weights from `key`)."""
    sde = SDES[config.sde]()
    wrapper = PARAMETRISATIONS[config.parametrisation]
    shape = data_shape(config)
    if is_image(config):
        sizes = UNET_SIZES if config.dataset == "digits" else UNET3_SIZES
        base, mults = sizes[config.model_size]
        net: _networks.UNet | _networks.MLPScoreNet = _networks.UNet(
            shape,
            base_channels=base,
            channel_mults=mults,
            num_heads=2,
            num_classes=num_classes(config) if config.conditional else None,
            key=key,
        )
    else:
        width, depth = MLP_SIZES[config.model_size]
        net = _networks.MLPScoreNet(shape[0], width=width, depth=depth, key=key)
    return wrapper(net, sde)


def skeleton_from_config(config: TrainConfig):
    """`model_from_config`'s structure with abstract leaves (`jax.ShapeDtypeStruct`): what
    `scoresde.load` fills from a checkpoint, built without initialising (or compiling) any
    weights."""
    return eqx.filter_eval_shape(model_from_config, config, key=jr.key(0))


def recipe_loss(config: TrainConfig, sde: _sde.AbstractSDE) -> _losses.DenoisingScoreMatching:
    """The denoising score-matching loss of `config.weighting` (with its time sampler)."""
    if config.weighting == "likelihood":
        return _losses.DenoisingScoreMatching(
            sde, _losses.LikelihoodWeighting(), _losses.ImportanceTime(stratified=True)
        )
    if config.weighting == "edm":
        return _losses.DenoisingScoreMatching(sde, _losses.EDMWeighting(), _losses.EDMTime())
    return _losses.DenoisingScoreMatching(sde, time_sampler=_losses.UniformTime(stratified=True))


def recipe_optimizer(config: TrainConfig):
    """Adam at `config.learning_rate` with a warm-up over a tenth of the steps (at most 100) and
    a cosine decay over `config.steps` ([`scoresde.adam_with_warmup`][])."""
    return adam_with_warmup(
        config.learning_rate,
        warmup_steps=min(100, config.steps // 10),
        decay_steps=config.steps if config.steps > 1 else None,
    )


def state_skeleton_from_config(config: TrainConfig):
    """The abstract skeleton of the `TrainState` that `train` saves to `state.eqx`."""
    return eqx.filter_eval_shape(
        lambda c: TrainState.init(model_from_config(c, key=jr.key(0)), recipe_optimizer(c)), config
    )


def _plot_losses(losses, path, title=""):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no loss curve written.", file=sys.stderr)
        return None

    fig, ax = plt.subplots(figsize=(6, 4))
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.5, alpha=0.4, label="loss")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.5, label=f"running mean ({window})")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log" if np.all(losses > 0) else "linear")
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(
    config: TrainConfig,
    out_dir,
    *,
    progress: bool = True,
    sharding=None,
    checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
    resume: bool = False,
    stop: Callable[[], bool] | None = None,
) -> dict:
    """Run the training `config` describes in `out_dir`.

    Every `checkpoint_every` steps (None: only at the end) and when `stop()` turns True (see
    `runs.StopOnSignal`), the whole [`scoresde.TrainState`][] (model, EMA, optimiser state,
    step) goes to `state.eqx` and the losses so far to `losses.json`, each written to a
    temporary file and renamed. At the end: `checkpoint.eqx` (EMA weights) and its sidecar,
    `losses.json`, `losses.png`. Step `k` draws its batch and randomness from
    `fold_in(key, k)` with a key and data fixed by `config.seed`, so `resume=True` (continue
    from `out_dir/state.eqx`, which must hold this `config`) equals an uninterrupted run to
    rounding. `sharding`: data-parallel training (see `scoresde.fit`).

    **Returns:** a dict with `step` (the steps taken in all), `interrupted` (True if `stop`
    ended the run before `config.steps`), `state` (the path of `state.eqx`, or None), and, for
    a finished run, the trained EMA `model`, the paths `checkpoint`, `sidecar` and
    `loss_curve` (`None` without matplotlib), the `final_loss` (the mean of the last 50
    steps' losses, as the progress bar shows it: `fit.recent_loss`) and `num_train` (the
    training rows).

    **Raises:** `FileNotFoundError` if `resume` finds no `state.eqx`; `CheckpointError` if it
    holds another config."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = jr.key(config.seed)
    key_data, key_init, key_fit = jr.split(key, 3)
    model = model_from_config(config, key=key_init)
    preprocess: Callable | None = None
    loss: _losses.DenoisingScoreMatching | _conditional.LabelDropoutDSM
    loss = recipe_loss(config, model.sde)
    rows = training_set(config, key_data)
    if config.conditional:
        data = _conditional.pack_labels(rows.x, rows.labels)
        preprocess = _conditional.UnpackLabels(data_shape(config), rows.dequantize)
        classes = num_classes(config)
        assert classes is not None  # TrainConfig checks a conditional config has labels
        loss = _conditional.LabelDropoutDSM(
            loss.sde, classes, config.p_uncond, loss.weighting, loss.time_sampler, loss.t_eps
        )
    else:
        data, preprocess = jnp.asarray(rows.x), rows.dequantize
    optimizer = recipe_optimizer(config)
    hyper = dataclasses.asdict(config)
    state_path, losses_path = out_dir / STATE_FILE, out_dir / LOSSES_FILE
    state, start, before = None, 0, np.zeros(0)
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"nothing to resume: no {STATE_FILE} in {out_dir}.")
        state = load(state_path, TrainState.init(model, optimizer), hyperparameters=hyper)
        start = int(state.step)
        before = read_losses(losses_path, start)

    def checkpoint(current, losses):
        # the losses first: a kill between the two leaves them longer than the state, never
        # shorter (a resume keeps the first `step` of them)
        write_losses(losses_path, np.concatenate([before, losses]))
        save(state_path, current, hyperparameters=hyper)

    if progress:
        print(
            f"training {num_params(model)} parameters on {config.dataset}"
            + (f" from step {start}" if start else "")
            + "; compiling the training step (first call) ...",
            file=sys.stderr,
            flush=True,
        )
    if start < config.steps:
        result = fit(
            model,
            loss,
            data,
            key=key_fit,
            steps=config.steps - start,
            batch_size=config.batch_size,
            optimizer=optimizer,
            preprocess=preprocess,
            progress=progress,
            sharding=sharding,
            state=state,
            checkpoint_fn=checkpoint,
            checkpoint_every=checkpoint_every,
            stop=stop,
        )
        ema_model = result.ema_model
        losses = np.concatenate([before, np.asarray(result.losses)])
    else:
        assert state is not None  # a finished run resumed: only the outputs are written again
        ema_model, losses = state.ema_model, before
    step = len(losses)
    saved_state = state_path if state_path.exists() else None
    if step < config.steps:
        return {"step": step, "interrupted": True, "state": saved_state}
    ckpt = out_dir / CHECKPOINT_FILE
    sidecar = save(ckpt, ema_model, hyperparameters=hyper, ema=True)
    write_losses(losses_path, losses)
    final = recent_loss(losses)
    png = _plot_losses(losses, out_dir / "losses.png", f"{config.dataset}, {config.sde} SDE: "
                       f"final loss {final:.4g} (mean of the last {min(LOSS_WINDOW, step)} steps)")  # fmt: skip
    return {
        "step": step,
        "interrupted": False,
        "state": saved_state,
        "model": ema_model,
        "checkpoint": ckpt,
        "sidecar": sidecar,
        "loss_curve": png,
        "final_loss": final,
        "num_train": int(rows.x.shape[0]),
    }


def rebuild(path) -> tuple[Any, TrainConfig]:
    """`(model, config)` from a checkpoint `train` wrote, the network rebuilt from the sidecar's
    config: the final `checkpoint.eqx` or a run's `state.eqx` (its EMA weights).

    **Raises:** `FileNotFoundError` naming `path` if nothing is there (`IsADirectoryError` for
    a folder); `CheckpointError` if its hyper-parameters are not a `TrainConfig`'s."""
    path = check_checkpoint_path(path)
    meta = read_sidecar(path)
    try:
        config = TrainConfig.from_hyperparameters(meta["hyperparameters"])
    except TypeError as e:
        raise CheckpointError(
            f"checkpoint {path} was not written by scoresde train (its hyper-parameters are "
            f"not a TrainConfig's: {e}); load it with scoresde.load(path, skeleton)."
        ) from None
    if meta.get("train_state"):
        return load(path, state_skeleton_from_config(config)).ema_model, config
    return load(path, skeleton_from_config(config)), config


def load_model(path) -> tuple[Any, TrainConfig]:
    """`(model, config)`: the trained model of a checkpoint written by `train` (or `scoresde
    train`), rebuilt from its sidecar's config (see `rebuild`).

    **Raises:** `ValueError` if `path` is a folder; `FileNotFoundError` if nothing is there."""
    path = pathlib.Path(path)
    if path.is_dir():
        hint = path / "checkpoint.eqx"
        raise ValueError(
            f"checkpoint {path} is a folder; pass the checkpoint file"
            + (f", e.g. {hint}" if hint.exists() else " (checkpoint.eqx, written by train)")
        )
    return rebuild(path)


def recipe_score(model, config: TrainConfig, label: int | None = None, guidance: float = 1.0):
    """The score to sample: `model` itself for an unconditional model; for a conditional one,
    classifier-free guidance towards `label` with scale `guidance`
    ([`scoresde.guidance.ClassifierFree`][]), or the null label's (unconditional) score when
    `label` is None.

    **Raises:** `ValueError` for a `guidance` other than 1 without a `label`, a `label` on an
    unconditional model or out of range, a negative `guidance`."""
    if label is None:
        if guidance != 1.0:
            raise ValueError(f"guidance={guidance} needs a label (the class to guide towards).")
        if not config.conditional:
            return model
        return Conditioned(model, jnp.int32(num_classes(config)))
    if not config.conditional:
        raise ValueError(
            f"label={label} needs a class-conditional model (TrainConfig(conditional=True)); "
            "this one is unconditional."
        )
    null = num_classes(config)
    assert null is not None  # a conditional config has labels
    if not 0 <= label < null:
        raise ValueError(f"label must lie in [0, {null - 1}] for {config.dataset}; got {label}.")
    if not guidance >= 0:
        raise ValueError(f"guidance must be >= 0; got {guidance}.")
    return ClassifierFree(model, label, null, guidance, num_classes=null + 1)


def draw(
    model,
    config: TrainConfig,
    sampler: str | None,
    num: int,
    steps: int | None,
    key,
    *,
    grid: TimeGrid | None = None,
    progress: bool = False,
    score=None,
    cond=None,
    sharding=None,
):
    """`num` samples of `model` (or of `score`, e.g. a guided score, on `model.sde`) by
    `sampler`, one of `SAMPLERS`: `"ode"` adaptive Tsit5, `"sde"` Euler-Maruyama on the log-SNR
    grid, `"dpm++2m"` DPM-Solver++(2M) on the log-SNR grid, `"pc"` reverse diffusion with a
    Langevin corrector; `steps` for the fixed-step ones. Or `grid`, a tuned
    [`scoresde.TimeGrid`][] (`scoresde tune`): the probability-flow ODE with the solver it was
    tuned for (its `solver` name, `scoresde._tuning.solver_names`) on its times, `sampler` and
    `steps` then `None`. `cond` is per-sample conditioning for `score`. Returns the sampler's
    result (`.x`, `.nfe`).

    **Raises:** `ValueError` for an unknown `sampler`, a `grid` with a `sampler` or `steps`,
    or a grid whose solver name is unknown; `TypeError` for a `grid` that is no `TimeGrid`."""
    shape = (num, *data_shape(config))
    score = model if score is None else score
    common: dict[str, Any] = dict(key=key, shape=shape, progress=progress, sharding=sharding)
    if cond is not None:
        common["cond"] = cond
    if grid is not None:
        if not isinstance(grid, TimeGrid):
            raise TypeError(f"grid must be a scoresde.TimeGrid; got {type(grid).__name__}.")
        if sampler is not None or steps is not None:
            raise ValueError(
                f"a grid sets the sampler ({grid.solver} on the probability-flow ODE) and the "
                f"steps ({grid.steps}); got sampler={sampler!r}, steps={steps!r} (pass None)."
            )
        solver = solver_from_name(grid.solver)
        return sample_ode(model.sde, score, solver=solver, grid=grid, **common)
    if sampler == "ode":
        return sample_ode(model.sde, score, solver=dfx.Tsit5(), **common)
    if sampler == "sde":
        return sample_sde(model.sde, score, steps=steps, grid="log_snr", **common)
    if sampler == "dpm++2m":
        return sample_ode(
            model.sde, score, steps=steps, solver=DPMSolverPP2M(), grid="log_snr", **common
        )
    if sampler == "pc":
        return sample_pc(model.sde, score, steps=steps, **common)
    raise ValueError(f"sampler must be one of {SAMPLERS}; got sampler={sampler!r}.")
