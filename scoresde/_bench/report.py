"""Outputs of a benchmark run: JSON (with its schema), a Markdown table, work-precision PNGs."""

import json
import os
import pathlib
import platform
import subprocess
from importlib import metadata

import jax
import numpy as np

SCHEMA_PATH = pathlib.Path(__file__).parent / "schema.json"
SCHEMA_VERSION = 1


def schema() -> dict:
    """The JSON schema every `bench.json` validates against."""
    return json.loads(SCHEMA_PATH.read_text())


def environment() -> dict:
    """Package versions, device and commit of this run."""
    versions: dict[str, str | None] = {}
    for name in ("scoresde", "jax", "jaxlib", "equinox", "diffrax", "optax", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                cwd=pathlib.Path(__file__).parent,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "versions": versions,
        "device": {
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
        },
        "commit": commit,
    }


def _fmt(value, spec=".3g"):
    if value is None:
        return "–"
    return format(value, spec)


def floor_band(floor: dict) -> tuple[float, float]:
    """The sliced-W2 floor's range over its reference draws (and the main pair)."""
    values = [floor["sliced_w2"], *floor.get("sliced_w2_draws", [])]
    return min(values), max(values)


def _sw2(value, floor) -> str:
    """A sliced-W2 cell, marked when it lies within the floor's range (not measurably better)."""
    return _fmt(value) + (" (at floor)" if value <= floor_band(floor)[1] else "")


def markdown(payload: dict) -> str:
    """One table per problem, sampler rows in the order they ran."""
    lines = [
        "# scoresde bench",
        "",
        f"{'Quick run' if payload['parameters']['quick'] else 'Full run'}, commit "
        f"`{payload['commit'] or 'unknown'}`, {payload['device']['backend']} "
        f"({payload['device']['cpu_count']} CPU cores), jax {payload['versions']['jax']}.",
        "Errors: `err ref` is the mean L2 distance to the reference ODE solution from the same "
        "noise (deterministic samplers); `SW2` sliced Wasserstein and `MMD²` to reference "
        "samples; `mode err` the largest mode-weight error. Times in seconds, compile apart.",
    ]
    for prob in payload["problems"]:
        floor = prob["floors"]
        low, high = floor_band(floor)
        spread = (
            f" (range {_fmt(low)} to {_fmt(high)} over {len(floor['sliced_w2_draws']) + 1} "
            f"reference sets, {floor.get('sliced_w2_spread', 'independent draws')})"
            if floor.get("sliced_w2_draws")
            else ""
        )
        nll = prob["nll"]
        lines += [
            "",
            f"## {prob['name']}",
            "",
            f"{prob['description']}; {prob['num_samples']} samples, dimension {prob['dim']}. "
            f"Reference: {prob['reference']['method']} ({prob['reference']['nfe_mean']:.0f} NFE).",
            f"Floors (two independent reference sets): SW2 {_fmt(floor['sliced_w2'])}{spread}, "
            f"MMD² {_fmt(floor['mmd2'])}, mode err {_fmt(floor['mode_weight_error'])}.",
        ]
        if nll is not None:
            exact = f" (exact {nll['exact']:.4g})" if nll.get("exact") is not None else ""
            lines.append(
                f"Test NLL: {nll['model']:.4g} {nll['unit']}{exact}, {nll['num_points']} points, "
                f"{nll['nfe_mean']:.0f} NFE."
            )
        lines += [
            "",
            "| sampler | family | setting | NFE | err ref | SW2 | MMD² | mode err | wall s "
            "| compile s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in prob["rows"]:
            if r["status"] != "ok":
                lines.append(
                    f"| {r['sampler']} | {r['family']} | {r['setting']} | – | {r['status']} "
                    "| | | | | |"
                )
                continue
            lines.append(
                f"| {r['sampler']} | {r['family']} | {r['setting']} | {r['nfe_mean']:.0f} "
                f"| {_fmt(r['err_ref'])} | {_sw2(r['sliced_w2'], floor)} | {_fmt(r['mmd2'])} "
                f"| {_fmt(r['mode_weight_error'])} | {r['wall_s']:.3f} | {r['compile_s']:.2f} |"
            )
        digit_rows = [r for r in prob["rows"] if r["status"] == "ok" and "digits" in r]
        if digit_rows:
            lines += [
                "",
                "Sample quality against the test digits (`scoresde.digit_metrics`; 95 % "
                "bootstrap intervals over the samples, and over the floor's training digits):",
                "",
                "| sampler | setting | Frechet | floor | class TV | confidence (real digits) |",
                "|---|---|---:|---:|---:|---:|",
            ]
            for r in digit_rows:
                q = r["digits"]
                lines.append(
                    f"| {r['sampler']} | {r['setting']} | {q['frechet']:.2f} "
                    f"{_interval(q['frechet_interval'], '.2f')} | {q['frechet_floor']:.2f} "
                    f"{_interval(q['frechet_floor_interval'], '.2f')} | {q['class_tv']:.3f} "
                    f"{_interval(q['class_tv_interval'], '.3f')} | {q['confidence']:.3f} "
                    f"({q['reference_confidence']:.3f}) |"
                )
    return "\n".join(lines) + "\n"


def _interval(bounds, spec: str) -> str:
    """`[low, high]` formatted with `spec`."""
    return f"[{bounds[0]:{spec}}, {bounds[1]:{spec}}]"


def _log_ticks(axis):
    """Labelled ticks on a log `axis` whatever its range: decades when the view spans two or
    more of them (minor labels would overlap), else 1-2-5 or 1..9 times a power of ten, else
    evenly spaced values, so a panel whose values lie within one decade still has at least two
    labelled ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    low, high = sorted(axis.get_view_interval())
    decades = np.floor(np.log10(high)) - np.ceil(np.log10(low)) + 1
    axis.set_minor_formatter(NullFormatter())
    if decades >= 2:
        axis.set_major_locator(LogLocator(base=10, numticks=6))
        return
    locator = MaxNLocator(4)
    for subs in ((1.0, 2.0, 5.0), np.arange(1.0, 10.0)):
        candidate = LogLocator(base=10, subs=subs, numticks=12)
        if sum(low <= t <= high for t in candidate.tick_values(low, high)) >= 2:
            locator = candidate
            break
    axis.set_major_locator(locator)
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


def plot(prob: dict, path) -> bool:
    """Work-precision figure of one problem: error vs NFE, error vs wall time, SW2 vs NFE (with
    the floor's band); one legend for the figure, below the panels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.5))
    by_sampler: dict[str, list] = {}
    for r in prob["rows"]:
        if r["status"] == "ok":
            by_sampler.setdefault(r["sampler"], []).append(r)
    for i, (name, rows) in enumerate(by_sampler.items()):
        rows = sorted(rows, key=lambda r: r["nfe_mean"])
        style = dict(marker="o", ms=3, color=f"C{i % 10}", ls="-" if i < 10 else "--", label=name)
        nfe = [r["nfe_mean"] for r in rows]
        if rows[0]["err_ref"] is not None:
            axes[0].plot(nfe, [r["err_ref"] for r in rows], **style)
            axes[1].plot([r["wall_s"] for r in rows], [r["err_ref"] for r in rows], **style)
        axes[2].plot(nfe, [r["sliced_w2"] for r in rows], **style)
    floor = prob["floors"]
    low, high = floor_band(floor)
    axes[2].axhspan(low, high, color="k", alpha=0.12, lw=0, label="floor range (reference sets)")
    axes[2].axhline(floor["sliced_w2"], color="k", lw=0.8, ls=":", label="floor")
    labels = [
        ("NFE", "error vs reference ODE solution"),
        ("wall time (s)", "error vs reference ODE solution"),
        ("NFE", "sliced W2 to reference samples"),
    ]
    titles = ("accuracy vs cost", "accuracy vs time", "sample quality vs cost")
    for ax, (xl, yl), title in zip(axes, labels, titles, strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.autoscale_view()
        for axis in (ax.xaxis, ax.yaxis):
            _log_ticks(axis)
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncol=min(5, len(handles)), fontsize=8
    )
    fig.suptitle(f"{prob['name']}: {prob['description']}", fontsize=10)
    rows_of_legend = -(-len(handles) // 5)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * rows_of_legend, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
