"""Shared parametrisations for the tests: every SDE, the SDE solvers that must work, the
probability-flow solvers with their orders, and two oracles (score-call and compile counting)."""

import contextlib
import logging
from collections.abc import Callable, Iterator

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoresde as ss

SDES = [ss.VPSDE(), ss.SubVPSDE(), ss.VESDE(), ss.EDMSDE()]
SDE_IDS = ["vp", "subvp", "ve", "edm"]


def slow_except(values, ids, fast):
    """`pytest.param`s of `values` with `ids`: the ones whose id is in `fast` run by default,
    the rest are marked `slow` (the default run keeps one fast check per property)."""
    return [
        pytest.param(v, id=i, marks=() if i in fast else pytest.mark.slow)
        for v, i in zip(values, ids, strict=True)
    ]


# Checked by tests/test_sde.py and the exact PF-ODE flow-map test only (they would add half again
# to every SDE-parametrised test; DDPMSDE's piecewise-constant beta also needs jump_ts there).
EXTRA_SDES = [ss.CosineVPSDE(), ss.DDPMSDE()]
EXTRA_SDE_IDS = ["cosine", "ddpm"]

SDE_SOLVERS = [dfx.Euler(), dfx.Heun(), dfx.ReversibleHeun(), dfx.SRA1(), dfx.ShARK()]
SDE_SOLVER_IDS = ["euler", "heun", "reversible_heun", "sra1", "shark"]

# The probability-flow solvers of the library: (solver, convergence order, id). UniPC's corrector
# raises the order of its predictor by one.
PF_SOLVERS = [
    (ss.DPMSolver1(), 1, "dpm1"),
    (ss.DPMSolver2(), 2, "dpm2"),
    (ss.DPMSolver3(), 3, "dpm3"),
    (ss.DPMSolverPP2M(), 2, "dpmpp2m"),
    (ss.DPMSolverPP3M(), 3, "dpmpp3m"),
    (ss.UniPC(2), 3, "unipc2"),
    (ss.UniPC(3, corrector=False), 3, "unipc3_nocorr"),
    (ss.EDMHeun(), 2, "heun"),
]
PF_SOLVER_IDS = [name for _, _, name in PF_SOLVERS]


def pf_solvers(*names: str) -> list:
    """The `(solver, order)` pairs of `PF_SOLVERS` with these ids (all of them if none given)."""
    known = {name: (solver, order) for solver, order, name in PF_SOLVERS}
    return [known[n] for n in (names or PF_SOLVER_IDS)]


def random_spd(rng: np.random.Generator, dim: int, low=0.05, high=2.0):
    """A random symmetric positive-definite matrix with eigenvalues in [low, high]."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eig = rng.uniform(low, high, size=dim)
    return (q * eig) @ q.T


def random_gaussian(seed: int, dim: int, dtype=jnp.float32) -> ss.analytic.Gaussian:
    rng = np.random.default_rng(seed)
    return ss.analytic.Gaussian(
        jnp.asarray(rng.normal(size=dim), dtype), jnp.asarray(random_spd(rng, dim), dtype)
    )


def random_mixture(seed: int, dim: int, k: int, dtype=jnp.float32) -> ss.analytic.GaussianMixture:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 2.0))
    means = 2 * rng.normal(size=(k, dim))
    covs = np.stack([random_spd(rng, dim, 0.05, 1.0) for _ in range(k)])
    return ss.analytic.GaussianMixture(
        jnp.asarray(weights, dtype), jnp.asarray(means, dtype), jnp.asarray(covs, dtype)
    )


SCORE_CALLS: list = []


class CountingScore(eqx.Module):
    """`inner(t, x)`, appending to `SCORE_CALLS` on the host every time it really runs (a
    `jax.debug.callback`, so it counts executions, not traces). Clear `SCORE_CALLS` first."""

    inner: Callable

    def __call__(self, t, x):
        jax.debug.callback(SCORE_CALLS.append, 1)
        return self.inner(t, x)


_COMPILE_MESSAGES = ("Compiling ", "Finished tracing")


class _CompileLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith(_COMPILE_MESSAGES):
            self.messages.append(message.split(" with global shapes")[0])


@contextlib.contextmanager
def assert_no_recompile() -> Iterator[None]:
    """Fail if JAX traces or compiles anything inside the block (`jax.log_compiles` records),
    naming what was compiled. Warm the cache with the same shapes and static arguments first,
    and build new arguments outside the block: a first eager op also compiles."""
    handler = _CompileLog()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield
    finally:
        logger.removeHandler(handler)
    assert not handler.messages, "recompiled inside the block:\n" + "\n".join(handler.messages)


def _tick_texts(axis) -> list[str]:
    """The non-empty labels of `axis`'s major ticks inside its view (as drawn)."""
    low, high = sorted(axis.get_view_interval())
    slack = 1e-9 * (high - low)
    locs, labels = axis.get_majorticklocs(), axis.get_majorticklabels()
    return [t.get_text() for v, t in zip(locs, labels, strict=False)
            if low - slack <= v <= high + slack and t.get_visible() and t.get_text()]  # fmt: skip


@contextlib.contextmanager
def record_figures() -> Iterator[list[dict]]:
    """What every matplotlib figure saved inside the block shows, read after it is drawn: a
    list of dicts with `path`, `size` (pixels), `suptitle` and `axes`, one dict per visible
    axes with `title`, `xlabel`, `ylabel`, `xticks` and `yticks` (the non-empty tick labels)."""
    from matplotlib.figure import Figure

    records: list[dict] = []
    original = Figure.savefig

    def savefig(fig, fname, *args, **kwargs):
        original(fig, fname, *args, **kwargs)
        dpi = kwargs.get("dpi", fig.dpi)
        axes = []
        for ax in fig.get_axes():
            if not ax.get_visible() or not ax.axison:
                continue
            axes.append(dict(title=ax.get_title(), xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel(),
                             xticks=_tick_texts(ax.xaxis), yticks=_tick_texts(ax.yaxis)))  # fmt: skip
        suptitle = fig._suptitle.get_text() if fig._suptitle is not None else ""
        size = tuple(int(round(v * dpi)) for v in fig.get_size_inches())
        records.append(dict(path=str(fname), size=size, suptitle=suptitle, axes=axes))

    Figure.savefig = savefig  # type: ignore[method-assign]
    try:
        yield records
    finally:
        Figure.savefig = original  # type: ignore[method-assign]


# What every metric card's settings name (scoresde._cli.card): the model, the data convention,
# the number of items and the seed.
CARD_KEYS = {"checkpoint", "dataset", "sde", "parametrisation", "training_steps", "ema",
             "levels", "data_convention", "num", "seed"}  # fmt: skip


def assert_card(settings: dict, **expected):
    """A command's metric-card `settings` name every `CARD_KEYS` entry and hold `expected`."""
    missing = CARD_KEYS - set(settings)
    assert not missing, f"the metric card lacks {sorted(missing)}"
    for key, value in expected.items():
        assert settings[key] == value, (key, settings[key], value)


def assert_in_interval(card: dict):
    """A card's figure lies in its 95 % interval, which has width (or is None for one item)."""
    low, high = card["interval"]
    assert low <= card["value"] <= high, card
