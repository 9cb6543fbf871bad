"""`scoresde demo`: sample an analytic 2-D mixture with several diffrax solvers and compare.

No training and no downloads: the data is the 8-mode ring mixture of `ss.analytic.ring_mixture`,
whose diffused score is exact, so the table isolates the samplers' own error.
"""

import dataclasses
import json
import pathlib
import platform
import time

import diffrax as dfx
import jax
import jax.random as jr

from .. import analytic as analytic
from .._metrics import sample_distances as _metrics
from .._sampling.sample import sample_ode, sample_sde
from .._sde import VPSDE
from .common import HelpFormatter, UsageError, add_out, prepare_out


def add_parser(subparsers):
    """Register `demo` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "demo",
        help="sample an analytic 2-D mixture with several solvers and compare them",
        description="Sample the 8-mode ring mixture (exact score, no training, no downloads) with "
        "several diffrax solvers; print a table and write demo.json and demo.png.",
        formatter_class=HelpFormatter,
    )
    add_out(p, "demo")
    p.add_argument("--num-samples", type=int, default=4096, help="samples per solver")
    p.add_argument("--quick", action="store_true", help="fewer steps and samples (for CI)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Execute `scoresde demo` from parsed arguments; returns the exit status."""
    if args.num_samples < 2:
        raise UsageError(f"--num-samples must be >= 2; got {args.num_samples}")
    num = min(args.num_samples, 1024) if args.quick else args.num_samples
    run_demo(
        DemoConfig(out=prepare_out(args.out), num_samples=num, quick=args.quick, seed=args.seed)
    )
    return 0


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    out: pathlib.Path
    num_samples: int = 4096
    quick: bool = False
    seed: int = 0


def _samplers(quick: bool):
    """(name, kind, kwargs): an explicit table of what the demo runs."""
    k = 4 if quick else 1
    return [
        ("Euler-Maruyama (SDE)", "sde", dict(solver=dfx.Euler(), steps=1000 // k, grid="log_snr")),
        ("ShARK (SDE)", "sde", dict(solver=dfx.ShARK(), steps=200 // k, grid="log_snr")),
        ("Heun (ODE)", "ode", dict(solver=dfx.Heun(), steps=50 // k, grid="log_snr")),
        ("Tsit5 adaptive (ODE)", "ode", dict(solver=dfx.Tsit5(), rtol=1e-4, atol=1e-4)),
    ]


def run_demo(config: DemoConfig) -> list[dict]:
    """Run every sampler of the table; print, and write `demo.json` and `demo.png` to `out`."""
    config.out.mkdir(parents=True, exist_ok=True)
    sde = VPSDE()
    dist = analytic.ring_mixture()
    score = analytic.marginal_score(dist, sde)
    n = config.num_samples
    key = jr.key(config.seed)
    exact = dist.sample(jr.fold_in(key, 1), n)
    rows, clouds = [], {"exact": exact}
    floor = sliced_w2_floor(dist, exact, key, FLOOR_DRAWS)
    print(f"scoresde demo: {n} samples of an 8-mode ring mixture, VP SDE, exact score")
    print(
        f"sliced W2 floor (exact vs {FLOOR_DRAWS} independent exact draws): mean "
        f"{floor['mean']:.4f}, range {floor['min']:.4f}-{floor['max']:.4f}; a sampler at or "
        "below the range's top is marked 'at floor' (no better one is measurable at this size)"
    )
    header = (
        f"{'sampler':<24}{'NFE':>6}{'compile s':>11}{'run s':>8}{'sliced W2':>11}"
        f"{'vs floor':>11}{'mode err':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, kind, kwargs in _samplers(config.quick):
        sampler = sample_sde if kind == "sde" else sample_ode
        call = lambda: sampler(sde, score, key=key, shape=(n, 2), **kwargs)  # noqa: B023
        start = time.perf_counter()
        jax.block_until_ready(call().x)
        first = time.perf_counter() - start
        start = time.perf_counter()
        result = call()
        jax.block_until_ready(result.x)
        run = time.perf_counter() - start
        row = dict(
            sampler=name,
            nfe=float(result.nfe.mean()),
            compile_s=max(first - run, 0.0),
            run_s=run,
            sliced_w2=_metrics.sliced_wasserstein(result.x, exact, key=jr.fold_in(key, 2)),
            mode_weight_error=_metrics.mode_weight_error(dist, result.x),
        )
        row["at_floor"] = row["sliced_w2"] <= floor["max"]
        rows.append(row)
        clouds[name] = result.x
        print(
            f"{name:<24}{row['nfe']:>6.0f}{row['compile_s']:>11.2f}{row['run_s']:>8.2f}"
            f"{row['sliced_w2']:>11.4f}{_versus(row['sliced_w2'], floor):>11}"
            f"{row['mode_weight_error']:>10.4f}"
        )
    print(f"{'exact vs exact':<24}{'':>6}{'':>11}{'':>8}{floor['mean']:>11.4f}{'(floor)':>11}")
    report = dict(
        problem="ring_mixture (8 modes, std 0.1), VPSDE, exact score",
        num_samples=n,
        noise_floor_sliced_w2=floor["mean"],
        noise_floor_sliced_w2_draws=floor["draws"],
        rows=rows,
        device=str(jax.devices()[0]),
        platform=platform.platform(),
        jax=jax.__version__,
    )
    (config.out / "demo.json").write_text(json.dumps(report, indent=2))
    _plot(clouds, config.out / "demo.png")
    print(f"wrote {config.out / 'demo.json'} and {config.out / 'demo.png'}")
    return rows


FLOOR_DRAWS = 5


def sliced_w2_floor(dist, exact, key, draws: int) -> dict:
    """The sliced W2 between `exact` and `draws` independent exact sample sets of its size (the
    metric's two-sample floor), with the projections the samplers are scored with."""
    values = [
        _metrics.sliced_wasserstein(
            dist.sample(jr.fold_in(key, 3 + i), exact.shape[0]), exact, key=jr.fold_in(key, 2)
        )
        for i in range(draws)
    ]
    return dict(mean=sum(values) / draws, min=min(values), max=max(values), draws=values)


def _versus(value, floor) -> str:
    return "at floor" if value <= floor["max"] else f"{value / floor['mean']:.1f}x"


def _plot(clouds, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping demo.png (pip install 'scoresde[plot]').")
        return
    fig, axes = plt.subplots(
        1, len(clouds), figsize=(3 * len(clouds), 3.2), sharex=True, sharey=True
    )
    for ax, (name, x) in zip(axes, clouds.items(), strict=True):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_title(name, fontsize=9)
        ax.set_aspect("equal")
        ax.set_xlim(-1.6, 1.6)
        ax.set_ylim(-1.6, 1.6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
