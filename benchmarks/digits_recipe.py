"""A training recipe for the 8x8 digits on 2 CPU cores, measured: each candidate trained by
`scoresde train`'s own code path, then judged by test bits/dim (17 levels) against the classical
baselines and by sample-quality metrics against their references.

For each recipe (a `TrainConfig`, `--levels 17` unless it says otherwise): training wall time with
XLA compile time apart (summed from jax's compile-duration events), final loss, test bits/dim on
the first `--num-test` test digits (`ss.bits_per_dim(levels=17)`, one Rademacher probe, as
`scoresde nll`), and `ss.digit_metrics` of `--samples` samples drawn as `scoresde train` draws
its final ones (DPM-Solver++(2M), 50 steps; samples quantised to the 17 levels). The baselines
are `benchmarks/real_data.py`'s (uniform, per-pixel categorical, Gaussian, GaussianMixture),
fitted in the same run on the same split. Goals (issue 14, budget 15 minutes including compile):
bits/dim below every baseline, class-histogram TV <= 0.05, Frechet distance <= 2x its
train-vs-test floor, sample confidence within 0.05 of that on real test digits.

Writes `benchmarks/results/NAME.json`, `NAME.md` (one table: each figure beside its baseline)
and `NAME.png` (64 samples of the best recipe beside 64 real test digits).

    python benchmarks/digits_recipe.py                      # the sweep below, about an hour
    python benchmarks/digits_recipe.py --recipes "steps=300" --num-test 50 --samples 256
"""

import argparse
import dataclasses
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
import real_data  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._training import recipes as cli_train  # noqa: E402

# Each recipe changes the defaults below; the first is the reference the others are judged beside.
BASE = dict(dataset="digits", levels=17, steps=1800)
SWEEP = (
    "",  # the small U-Net, sigma^2 weighting, lr 2e-3, 1800 steps, batch 256
    "steps=900",
    "weighting=likelihood",
    "learning_rate=0.005",
    "model_size=medium,steps=900",
)
GOALS = dict(tv=0.05, frechet_ratio=2.0, confidence_gap=0.05)


def parse_recipe(text: str) -> dict:
    """`"steps=900,weighting=likelihood"` -> the `TrainConfig` fields it sets (typed)."""
    fields = {f.name: f.type for f in dataclasses.fields(cli_train.TrainConfig)}
    out = dict(BASE)
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name not in fields:
            raise SystemExit(f"unknown recipe field {name!r}; one of {sorted(fields)}")
        kind = fields[name]
        out[name] = (
            value == "True" if kind is bool else kind(value) if kind in (int, float) else value
        )
    return out


class CompileClock:
    """Seconds XLA spent compiling while active (jax's backend-compile duration events)."""

    def __init__(self):
        import jax

        self.seconds = 0.0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **_):
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.seconds += duration


def evaluate(recipe: str, out_dir, clock, *, num_test, num_samples, seed, classifier):
    import jax
    import jax.random as jr

    from scoresde._training.recipes import draw

    config = cli_train.TrainConfig(**parse_recipe(recipe))
    jax.clear_caches()  # each recipe pays its own compile, as a fresh `scoresde train` does
    clock.seconds, clock.active = 0.0, True
    start = time.perf_counter()
    result = cli_train.train(config, out_dir, progress=False)
    train_s = time.perf_counter() - start
    clock.active = False
    row = dict(recipe=recipe or "(reference)", config=dataclasses.asdict(config),
               train_s=train_s, compile_s=clock.seconds, final_loss=result["final_loss"])  # fmt: skip
    test = ss.load_digits().test
    bpd = real_data.model_rows(result["checkpoint"], test, num=num_test, seed=seed, t_eps=1e-4)[0]
    row.update(bpd=bpd["bpd"], bpd_se=bpd["stderr_test"], bpd_nfe=bpd["mean_nfe"])
    x = np.asarray(draw(result["model"], config, "dpm++2m", num_samples, 50, jr.key(seed)).x)
    if config.levels != 256:
        x = ss.digit_images(ss.quantize(x, levels=config.levels))
    m = ss.digit_metrics(x, classifier=classifier)
    row.update(tv=m.histogram_tv, frechet=m.frechet, frechet_floor=m.frechet_floor,
               confidence=m.confidence, reference_confidence=m.reference_confidence,
               num_samples=m.num_samples)  # fmt: skip
    return row, x


def goals_met(row, best_baseline) -> dict:
    return dict(
        bpd=row["bpd"] < best_baseline,
        tv=row["tv"] <= GOALS["tv"],
        frechet=row["frechet"] <= GOALS["frechet_ratio"] * row["frechet_floor"],
        confidence=abs(row["confidence"] - row["reference_confidence"]) <= GOALS["confidence_gap"],
    )


def markdown(rows, baselines, num_test) -> str:
    best = min(baselines, key=lambda r: r["bpd"])
    lines = [
        f"Test bits/dim (17 levels, first {num_test} test digits; baselines on all "
        f"{baselines[0]['num_test']}): best classical baseline {best['name']} "
        f"{best['bpd']:.3f}. Samples: DPM-Solver++(2M), 50 steps.",
        "",
        "| recipe | train s (compile) | bits/dim | TV (goal 0.05) | Frechet / floor (goal 2) "
        "| confidence / real (goal gap 0.05) | goals met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = goals_met(r, best["bpd"])
        lines.append(
            f"| {r['recipe']} | {r['train_s']:.0f} ({r['compile_s']:.0f}) | "
            f"{r['bpd']:.3f} +- {r['bpd_se']:.3f} | {r['tv']:.3f} | "
            f"{r['frechet']:.2f} / {r['frechet_floor']:.2f} | "
            f"{r['confidence']:.3f} / {r['reference_confidence']:.3f} | "
            f"{sum(met.values())}/4 |"
        )
    lines += ["", "| baseline | bits/dim |", "|---|---|"]
    lines += [f"| {b['name']} | {b['bpd']:.3f} +- {b['stderr_test']:.3f} |" for b in baselines]
    return "\n".join(lines) + "\n"


def plot_grid(samples, real, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, images, title in ((axes[0], samples, "samples"), (axes[1], real, "test digits")):
        padded = np.pad(np.asarray(images[:64]), ((0, 0), (1, 1), (1, 1)), constant_values=128)
        tiles = padded.reshape(8, 8, 10, 10).transpose(0, 2, 1, 3).reshape(80, 80)
        ax.imshow(tiles, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=list(SWEEP),
                   help='changes to the reference recipe, e.g. "steps=900,weighting=likelihood"')  # fmt: skip
    p.add_argument("--num-test", type=int, default=297, help="test digits for bits/dim")
    p.add_argument("--samples", type=int, default=1024, help="samples for the digit metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="digits_recipe")
    args = p.parse_args(argv)
    for recipe in args.recipes:
        parse_recipe(recipe)  # fail on a typo before an hour of training

    baselines, _ = real_data.baseline_rows(seed=args.seed)
    for b in baselines:
        b["num_test"] = len(ss.load_digits().test)
    best_baseline = min(b["bpd"] for b in baselines)
    clock = CompileClock()
    classifier = ss.DigitClassifier()
    rows, draws = [], []
    for recipe in args.recipes:
        print(f"recipe {recipe or '(reference)'} ...", flush=True)
        with tempfile.TemporaryDirectory() as out_dir:
            row, x = evaluate(recipe, out_dir, clock, num_test=args.num_test,
                              num_samples=args.samples, seed=args.seed, classifier=classifier)  # fmt: skip
        row["goals"] = goals_met(row, best_baseline)
        rows.append(row)
        draws.append(x)
        print(f"  {row['train_s']:.0f} s ({row['compile_s']:.0f} s compile), bits/dim "
              f"{row['bpd']:.3f}, TV {row['tv']:.3f}, Frechet {row['frechet']:.2f} "
              f"(floor {row['frechet_floor']:.2f}), confidence {row['confidence']:.3f} "
              f"(real {row['reference_confidence']:.3f})", flush=True)  # fmt: skip
    table = markdown(rows, baselines, args.num_test)
    print("\n" + table)
    best = min(range(len(rows)), key=lambda i: (-sum(rows[i]["goals"].values()), rows[i]["bpd"]))
    results = _common.RESULTS
    (results / f"{args.name}.md").write_text(table)
    real = ss.load_digits().test[:64, 0]
    plot_grid(draws[best][:, 0] if draws[best].ndim == 4 else draws[best], real,
              results / f"{args.name}.png")  # fmt: skip
    _common.write(args.name, dict(rows=rows, baselines=baselines, best=rows[best]["recipe"],
                                  goals=GOALS, meta=_common.metadata(**vars(args))))  # fmt: skip
    print(f"best: {rows[best]['recipe']}; wrote {args.name}.json, .md, .png in {results}")


if __name__ == "__main__":
    main()
