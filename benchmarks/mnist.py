"""MNIST (28x28) with the `scoresde train --dataset mnist` recipe: train it, then judge it by test
bits/dim (8 bits, a certified interval) beside the classical baselines and by sample-quality
metrics against their floors.

The recipe is `scoresde train --dataset mnist`'s own code path (`recipes.train` on the
`TrainConfig` its defaults give: the small three-resolution U-Net, likelihood weighting with
importance-sampled times, EMA 0.999, batch 64; `--steps` its default unless given). Reported:

- training wall time with XLA compile time apart, and the final loss;
- test bits/dim at 8 bits (uniform dequantisation onto [-1, 1], as `scoresde nll`) on the first
  `--num-test` of the 1000 test digits of `ss.load_mnist()` (the split the recipe holds out),
  by `ss.estimate_bits_per_dim(population=False)`: the mean over THESE images with its 95 %
  interval (cheap solves corrected by tight re-solves; planned for `--half-width`), beside the
  classical baselines' rows of `benchmarks/results/real_data_mnist.json` (on all 1000 test
  digits; `python benchmarks/real_data.py --dataset mnist`);
- `ss.digit_metrics` of `--samples` samples (DPM-Solver++(2M), 50 steps, as `scoresde train`
  draws its final ones) with `ss.DigitClassifier.mnist()`: class-histogram TV, Frechet distance
  beside its floor (that many real training digits against the test digits), confidence, each
  with its 95 % bootstrap interval;
- inpainting of the lower half of the first `--inpaint` test digits (`scoresde inpaint`'s
  code: DPS, 100 reverse-SDE steps, noise std 0.05): hidden-pixel RMSE and the classifier's
  accuracy on the completed digits, beside the mean training image pasted in and the empirical
  posterior (a training digit drawn by its fit to the visible half: a nearest-neighbour
  baseline), each with a 95 % bootstrap interval over the images.

With `--conditional` it trains the same recipe class-conditionally (label dropout 0.1,
`scoresde train --dataset mnist --conditional`) and measures classifier-free guidance instead of
the likelihood: for each scale of `--guidance-scales`, `--per-label` samples of each of the ten
labels (DPM-Solver++(2M), 50 steps) and the fraction the classifier assigns the requested label,
with a 95 % bootstrap interval over the samples; its results go to NAME `mnist_conditional`.

Writes `benchmarks/results/NAME.json`, `NAME.md` and `NAME.png` (64 samples beside 64 test
digits); NAME is `mnist`, or `mnist_quick` with `--quick`.

    python benchmarks/mnist.py                 # the CPU recipe (about an hour on 2 cores)
    python benchmarks/mnist.py --quick         # smoke run: 50 steps, 8 test images, 64 samples
    python benchmarks/mnist.py --model-size medium --batch-size 128 --steps 30000   # on a GPU
    python benchmarks/mnist.py --eval-only RUN     # judge a run kept with --out RUN again
    python benchmarks/mnist.py --eval-only RUN --inpaint-only --inpaint-methods dps pigdm
"""

import argparse
import dataclasses
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

import equinox as eqx
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402
from digits_recipe import CompileClock  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._nfe import AbstractCostedScore  # noqa: E402
from scoresde._training import recipes  # noqa: E402

BASELINES = _common.RESULTS / "real_data_mnist.json"
QUICK = dict(steps=50, num_test=8, samples=64, half_width=None, num_tight=2, inpaint=8)
TRAINING_FILE = "bench_training.json"  # in --out: the training figures, for --eval-only


def recipe_config(steps, model_size, batch_size, seed, conditional=False) -> recipes.TrainConfig:
    """`scoresde train --dataset mnist`'s config, with the flags given (None: its default)."""
    defaults = recipes.dataset_defaults("mnist")
    return recipes.TrainConfig(
        dataset="mnist",
        conditional=conditional,
        weighting=defaults["weighting"],
        levels=defaults["levels"],
        steps=defaults["steps"] if steps is None else steps,
        batch_size=defaults["batch_size"] if batch_size is None else batch_size,
        model_size=model_size,
        seed=seed,
    )


def test_bits_per_dim(model, images, *, seed, half_width, num_tight, t_eps=1e-4) -> dict:
    """The certified mean bits/dim of `images` (8-bit) under `model`: planned for `half_width`
    at 95 %, or (None) cheap solves at rtol = atol = 1e-3 corrected on `num_tight` of them."""
    import jax.random as jr

    plan = (dict(half_width=half_width) if half_width is not None
            else dict(rtol=1e-3, atol=1e-3, num_tight=num_tight))  # fmt: skip
    start = time.perf_counter()
    est = ss.estimate_bits_per_dim(model.sde, model, images, key=jr.key(seed), levels=256,
                                   population=False, t_eps=t_eps, **plan)  # fmt: skip
    return dict(
        bpd=float(est.bpd),
        low=float(est.low),
        high=float(est.high),
        stderr=float(est.stderr),
        stderr_probes=float(est.stderr_probes),
        stderr_bias=float(est.stderr_bias),
        num_test=int(images.shape[0]),
        num_tight=int(est.nats.tight_indices.shape[0]),
        cheap_tol=plan.get("rtol") if est.nats.cheap_tol is None else est.nats.cheap_tol,
        total_nfe=int(est.nats.total_nfe),
        t_eps=t_eps,
        plan={k: v for k, v in plan.items()},
        seconds=time.perf_counter() - start,
    )


def sample_metrics(model, config, num, seed, classifier):
    """`num` samples (DPM-Solver++(2M), 50 steps) and their `ss.digit_metrics`."""
    import jax.random as jr

    start = time.perf_counter()
    x = np.asarray(recipes.draw(model, config, "dpm++2m", num, 50, jr.key(seed + 1)).x)
    seconds = time.perf_counter() - start
    m = ss.digit_metrics(x, classifier=classifier)
    row = dict(num_samples=m.num_samples, tv=m.histogram_tv, frechet=m.frechet,
               frechet_floor=m.frechet_floor, confidence=m.confidence,
               frechet_interval=list(m.frechet_interval),
               frechet_floor_interval=list(m.frechet_floor_interval),
               tv_interval=list(m.histogram_tv_interval), bootstrap_seed=m.seed,
               bootstrap_resamples=m.num_resamples,
               reference_confidence=m.reference_confidence,
               classifier_test_accuracy=classifier.test_accuracy, seconds=seconds,
               value_range=[float(x.min()), float(x.max())])  # fmt: skip
    return row, x


class GuidedTowardsEach(AbstractCostedScore):
    """Classifier-free guidance towards each sample's own label (the samplers' per-sample
    `cond=`): `scale * s(t, x, label) + (1 - scale) * s(t, x, null)`, the formula of
    `ss.guidance.ClassifierFree`, whose label is a static int (a compiled sampler per label);
    here the label is traced, so one compiled sampler serves all ten. Two network
    evaluations a call."""

    model: Any
    null_label: int = eqx.field(static=True)
    scale: Any

    @property
    def nfe_per_call(self) -> int:
        return 2

    def __call__(self, t, x, label):
        cond, uncond = self.model(t, x, label), self.model(t, x, self.null_label)
        return (self.scale * cond + (1 - self.scale) * uncond).astype(x.dtype)


def guidance_accuracy(model, config, scales, per_label, seed, classifier) -> list[dict]:
    """For each classifier-free guidance scale: `per_label` samples of each label
    (DPM-Solver++(2M), 50 steps, two network evaluations a step) and the fraction classified
    as the requested label, with its 95 % bootstrap interval over the samples."""
    import jax.numpy as jnp
    import jax.random as jr

    from scoresde._cli.card import bootstrap_interval

    labels = np.repeat(np.arange(10), per_label)
    null = recipes.num_classes(config)
    rows = []
    for scale in scales:
        start = time.perf_counter()
        score = GuidedTowardsEach(model, null, jnp.asarray(scale, jnp.float32))
        result = recipes.draw(model, config, "dpm++2m", len(labels), 50, jr.key(seed + 2),
                              score=score, cond=jnp.asarray(labels, jnp.int32))  # fmt: skip
        right = classifier.predict(np.asarray(result.x)) == labels
        card = bootstrap_interval(lambda rows, hit=right: hit[rows].mean(), len(right), seed=seed)
        rows.append(dict(scale=scale, per_label=per_label, accuracy=card["value"],
                         interval=card["interval"], seconds=time.perf_counter() - start,
                         nfe_mean=float(np.mean(np.asarray(result.nfe)))))  # fmt: skip
        print(f"  guidance {scale:g}: accuracy {card['value']:.3f} "
              f"[{card['interval'][0]:.3f}, {card['interval'][1]:.3f}] "
              f"({rows[-1]['seconds']:.0f} s)", flush=True)  # fmt: skip
    return rows


def conditional_markdown(row) -> str:
    c = row["config"]
    lines = [
        "# 28x28 MNIST: classifier-free guidance of the conditional recipe",
        "",
        f"`scoresde train --dataset mnist --conditional` for {c['steps']} steps of batch "
        f"{c['batch_size']} (label dropout {c['p_uncond']:g}): {row['train_s']:.0f} s of "
        f"training ({row['compile_s']:.0f} s compiling), final loss {row['final_loss']:.4g}.",
        "",
        "Fraction of samples the classifier (`DigitClassifier.mnist()`, test accuracy "
        f"{row['classifier_test_accuracy']:.3f}) assigns the requested label, "
        f"{row['guidance'][0]['per_label']} samples per label (DPM-Solver++(2M), 50 steps), "
        "95 % bootstrap interval over the samples:",
        "",
        "| guidance scale | accuracy |",
        "|---:|---:|",
    ]
    lines += [f"| {g['scale']:g} | {g['accuracy']:.3f} {_iv(g['interval'], '.3f')} |"
              for g in row["guidance"]]  # fmt: skip
    lines += ["", f"Reproduce: `{row['command']}`"]
    return "\n".join(lines) + "\n"


def inpainting(model, config, mnist, num, seed, classifier, methods=("dps",)) -> dict:
    """Lower-half inpainting of the first `num` test digits with `scoresde inpaint`'s code
    (each of `methods`, 100 steps, noise std 0.05), hidden-pixel RMSE and classifier accuracy
    with 95 % bootstrap intervals over the images, beside the mean-image and
    empirical-posterior fills. The same key for every method: the same latents and noise."""
    import jax.random as jr

    from scoresde._cli import inpaint as cmd

    truth = 2 * (mnist.test[:num].astype(np.float64) + 0.5) / 256 - 1  # bin centres
    labels = mnist.test_labels[:num]
    train = 2 * (mnist.train.astype(np.float64) + 0.5) / 256 - 1
    mask = cmd.make_mask("lower-half", (1, 28, 28))
    fills, seconds, nfe = {}, {}, {}
    for method in methods:
        start = time.perf_counter()
        result = cmd.inpaint(model, config, truth.astype(np.float32), mask, key=jr.key(seed),
                             method=method)  # fmt: skip
        seconds[method] = time.perf_counter() - start
        nfe[method] = float(np.mean(np.asarray(result.nfe)))
        name = "model" if len(methods) == 1 else f"model, {method}"
        fills[name] = np.clip(np.asarray(result.x, np.float64), -1, 1)
        print(f"  {method}: {seconds[method]:.0f} s", flush=True)
    fills["mean_image"] = np.broadcast_to(train.mean(axis=0), truth.shape)
    fills["empirical_posterior"] = cmd.empirical_posterior(train, truth * mask, mask, 0.05,
                                                           seed=seed)  # fmt: skip
    rows = {}
    for name, x in fills.items():
        filled = np.where(mask, truth, x)
        rows[name] = dict(
            hidden_rmse=cmd.hidden_rmse(x, truth, mask, seed=seed),
            accuracy=cmd.digit_accuracy_card(filled, labels, 256, classifier, seed=seed),
        )
    return dict(num=num, mask="lower-half", method=",".join(methods), steps=100,
                noise_std=0.05, seed=seed, nfe_per_image=nfe, seconds=seconds,
                rows=rows)  # fmt: skip


def inpainting_markdown(q) -> list[str]:
    """The inpainting table's lines (methods, then the two baselines)."""
    nfe = q["nfe_per_image"]
    nfe = nfe if isinstance(nfe, dict) else {q["method"]: nfe}  # a single-method run
    named = {"dps": "DPS", "pigdm": "PiGDM"}
    counts = ", ".join(f"{named[m]} {n:.0f}" for m, n in nfe.items())
    methods = " and ".join(named[m] for m in q["method"].split(","))
    lines = [
        f"Inpainting the lower half of the first {q['num']} test digits ({methods}, "
        f"{q['steps']} reverse-SDE steps, noise std {q['noise_std']:g}; network evaluations "
        f"per image counted as `scoresde inpaint` counts them: {counts}), 95 % bootstrap "
        "intervals over the images (the same latents and noise for every method):",
        "",
        "| fill | hidden-pixel RMSE | classifier accuracy |",
        "|---|---:|---:|",
    ]
    for name, r in q["rows"].items():
        acc = r["accuracy"]
        lines.append(
            f"| {name.replace('_', ' ')} | {r['hidden_rmse']['value']:.3f} "
            f"{_iv(r['hidden_rmse']['interval'], '.3f')} | "
            + ("n/a" if acc is None else f"{acc['value']:.3f} {_iv(acc['interval'], '.3f')}")
            + " |"
        )
    return lines + [""]


def markdown(row, baselines, quick: bool) -> str:
    b, s, c = row["bpd"], row["samples"], row["config"]
    lines = [
        f"# 28x28 MNIST: the `scoresde train --dataset mnist` recipe{' (quick smoke run)' if quick else ''}",
        "",
        f"{c['steps']} steps of batch {c['batch_size']}, U-Net {c['model_size']}, "
        f"{c['weighting']} weighting, 256 levels: {row['train_s']:.0f} s of training "
        f"({row['compile_s']:.0f} s compiling), final loss {row['final_loss']:.4g}.",
        "",
        *(
            [
                "A smoke run of the script: its figures say the plumbing works, not how good the "
                "recipe is (`python benchmarks/mnist.py` trains the whole recipe).",
                "",
            ]
            if quick
            else []
        ),
        f"Test bits/dim (8 bits) on the first {b['num_test']} test digits: **{b['bpd']:.3f}**, "
        f"95 % interval [{b['low']:.3f}, {b['high']:.3f}] (the mean over these images; "
        f"cheap tol {b['cheap_tol']:g}, {b['num_tight']} tight re-solves, {b['total_nfe']} "
        f"evaluations, t_eps {b['t_eps']:g}). Classical baselines (all "
        f"{baselines['num_test']} test digits, `benchmarks/results/real_data_mnist.json`):",
        "",
        "| model | bits/dim |",
        "|---|---:|",
        f"| this recipe | {b['bpd']:.3f} [{b['low']:.3f}, {b['high']:.3f}] |",
    ]
    lines += [f"| {r['name']} | {r['bpd']:.3f} +- {r['stderr_test']:.3f} |"
              for r in baselines["rows"]]  # fmt: skip
    lines += [
        "",
        f"Samples (DPM-Solver++(2M), 50 steps), {s['num_samples']} of them, against "
        f"`DigitClassifier.mnist()` (test accuracy {s['classifier_test_accuracy']:.3f}):",
        "",
        "| metric | samples | real digits |",
        "|---|---:|---:|",
        f"| class-histogram TV | {s['tv']:.3f} {_iv(s['tv_interval'], '.3f')} | 0 |",
        f"| Frechet distance | {s['frechet']:.2f} {_iv(s['frechet_interval'], '.2f')} | "
        f"{s['frechet_floor']:.2f} {_iv(s['frechet_floor_interval'], '.2f')} (floor) |",
        f"| confidence | {s['confidence']:.3f} | {s['reference_confidence']:.3f} |",
        "",
        f"Intervals: 95 % bootstrap over the samples ({s['bootstrap_resamples']} resamples, "
        "seed {}), the floor's over its training digits; the test digits fixed.".format(
            s["bootstrap_seed"]
        ),
        "",
        f"Sample values lie in [{s['value_range'][0]:.2f}, {s['value_range'][1]:.2f}] (the "
        "data in [-1, 1]; the metrics keep values outside).",
        "",
    ]
    if row.get("inpaint") is not None:
        lines += inpainting_markdown(row["inpaint"])
    lines += [
        "Class-conditional sampling with guidance: the recipe is unconditional; "
        "`python benchmarks/mnist.py --conditional` trains the conditional one and measures it "
        "(`benchmarks/results/mnist_conditional.md`).",
        "",
        f"Reproduce: `{row['command']}`",
    ]
    return "\n".join(lines) + "\n"


def _iv(bounds, spec: str) -> str:
    return "" if bounds is None else f"[{bounds[0]:{spec}}, {bounds[1]:{spec}}]"


def plot_grid(samples, real, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 5.4))
    for ax, images, name in ((axes[0], samples, "samples"), (axes[1], real, "test digits")):
        n = min(64, len(images))
        tiles = np.full((64, 30, 30), 128, np.uint8)
        tiles[:n, 1:29, 1:29] = np.asarray(images[:n]).reshape(n, 28, 28)
        ax.imshow(tiles.reshape(8, 8, 30, 30).transpose(0, 2, 1, 3).reshape(240, 240),
                  cmap="gray", vmin=0, vmax=255)  # fmt: skip
        ax.set_title(f"{n} {name}")
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(config, out, *, quick: bool):
    """Train `config` (in `out`, or a temporary folder): the EMA model and the training figures
    (wall and compile seconds, final loss), also written to `out/TRAINING_FILE`."""
    clock = CompileClock()
    print(f"training {config.steps} steps ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = out or pathlib.Path(tmp)
        clock.active, start = True, time.perf_counter()
        result = recipes.train(config, folder, progress=not quick)
        train_s, clock.active = time.perf_counter() - start, False
        training = dict(train_s=train_s, compile_s=clock.seconds, final_loss=result["final_loss"])
        (folder / TRAINING_FILE).write_text(json.dumps(training, indent=2))
    return result["model"], training


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 50 steps, 8 test images (fixed plan), 64 samples")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--model-size", default="small", choices=tuple(recipes.UNET3_SIZES))
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--num-test", type=int, default=200, help="test digits for bits/dim")
    p.add_argument("--half-width", type=float, default=0.05,
                   help="bits/dim interval half-width to plan for (95 %%)")  # fmt: skip
    p.add_argument("--samples", type=int, default=1000, help="samples for the digit metrics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=None,
                   help="keep the training run here (default: a temporary folder)")  # fmt: skip
    p.add_argument("--name", default=None, help="results name (default: mnist or mnist_quick)")
    p.add_argument("--inpaint", type=int, default=100,
                   help="test digits to inpaint, lower half (0: skip)")  # fmt: skip
    p.add_argument("--inpaint-methods", nargs="+", default=["dps"],
                   choices=("dps", "pigdm"), help="guidance methods to inpaint with")  # fmt: skip
    p.add_argument("--inpaint-only", action="store_true",
                   help="only the inpainting (with --eval-only RUN): results named "
                   "mnist_inpaint")  # fmt: skip
    p.add_argument("--conditional", action="store_true",
                   help="train the conditional recipe and measure guidance accuracy instead")  # fmt: skip
    p.add_argument("--guidance-scales", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--per-label", type=int, default=50, help="samples per label and scale")
    p.add_argument("--eval-only", type=pathlib.Path, default=None, metavar="RUN",
                   help="judge a run kept with --out RUN again, without training: its "
                   f"checkpoint and the training figures it recorded ({TRAINING_FILE})")  # fmt: skip
    args = p.parse_args(argv)
    num_tight = None
    if args.quick:
        args.steps = QUICK["steps"] if args.steps is None else args.steps
        args.num_test, args.samples = QUICK["num_test"], QUICK["samples"]
        args.half_width, num_tight = QUICK["half_width"], QUICK["num_tight"]
        args.inpaint = min(args.inpaint, QUICK["inpaint"])
        args.per_label = min(args.per_label, 8)
    name = args.name or ("mnist_quick" if args.quick else "mnist")
    baselines = json.loads(BASELINES.read_text())
    mnist = ss.load_mnist()
    baselines["num_test"] = len(mnist.test)  # real_data.py fits them on the same default split

    if args.eval_only is not None:
        model, config = recipes.load_model(args.eval_only / "checkpoint.eqx")
        training = json.loads((args.eval_only / TRAINING_FILE).read_text())
    else:
        config = recipe_config(args.steps, args.model_size, args.batch_size, args.seed,
                               conditional=args.conditional)  # fmt: skip
        model, training = train(config, args.out, quick=args.quick)
    command = " ".join(["python benchmarks/mnist.py", *(sys.argv[1:] if argv is None else argv)])
    if args.eval_only is not None:  # say how the judged run was trained
        command = (f"python benchmarks/mnist.py {'--conditional ' if config.conditional else ''}"
                   f"--steps {config.steps} --out RUN`, then `"
                   + command.replace(str(args.eval_only), "RUN"))  # fmt: skip
    if config.conditional:
        if args.name is None:  # a conditional run (trained here or judged again) has its own
            name = name.replace("mnist", "mnist_conditional")
        classifier = ss.DigitClassifier.mnist()
        row = dict(config=dataclasses.asdict(config), **training, command=command,
                   classifier_test_accuracy=classifier.test_accuracy,
                   guidance=guidance_accuracy(model, config, args.guidance_scales,
                                              args.per_label, args.seed, classifier))  # fmt: skip
        table = conditional_markdown(row)
        print("\n" + table)
        (_common.RESULTS / f"{name}.md").write_text(table)
        _common.write(name, dict(**row, meta=_common.metadata(
            **{k: str(v) for k, v in vars(args).items()})))  # fmt: skip
        return
    if args.inpaint_only:
        if args.eval_only is None or not args.inpaint:
            p.error("--inpaint-only judges a kept run: give --eval-only RUN and --inpaint N > 0")
        name = args.name or "mnist_inpaint"
        classifier = ss.DigitClassifier.mnist()
        painted = inpainting(model, config, mnist, args.inpaint, args.seed, classifier,
                             methods=tuple(args.inpaint_methods))  # fmt: skip
        table = "\n".join([
            "# 28x28 MNIST: inpainting with the `scoresde train --dataset mnist` recipe", "",
            f"{config.steps} training steps (the checkpoint of `--eval-only`).", "",
            *inpainting_markdown(painted), f"Reproduce: `{command}`"]) + "\n"  # fmt: skip
        print("\n" + table)
        (_common.RESULTS / f"{name}.md").write_text(table)
        _common.write(name, dict(config=dataclasses.asdict(config), inpaint=painted,
                                 command=command, meta=_common.metadata(
            **{k: str(v) for k, v in vars(args).items()})))  # fmt: skip
        return
    print(f"  {training['train_s']:.0f} s ({training['compile_s']:.0f} s compiling), final loss "
          f"{training['final_loss']:.4g}; test bits/dim ...", flush=True)  # fmt: skip
    bpd = test_bits_per_dim(model, mnist.test[: args.num_test], seed=args.seed,
                            half_width=args.half_width, num_tight=num_tight)  # fmt: skip
    print(f"  {bpd['bpd']:.3f} [{bpd['low']:.3f}, {bpd['high']:.3f}] ({bpd['seconds']:.0f} s); "
          f"{args.samples} samples and their metrics ...", flush=True)  # fmt: skip
    classifier = ss.DigitClassifier.mnist()
    metrics, x = sample_metrics(model, config, args.samples, args.seed, classifier)
    painted = None
    if args.inpaint:
        print(f"  inpainting {args.inpaint} test digits ...", flush=True)
        painted = inpainting(model, config, mnist, args.inpaint, args.seed, classifier,
                             methods=tuple(args.inpaint_methods))  # fmt: skip
    row = dict(config=dataclasses.asdict(config), train_s=training["train_s"],
               compile_s=training["compile_s"], final_loss=training["final_loss"], bpd=bpd,
               samples=metrics, inpaint=painted, command=command)  # fmt: skip
    table = markdown(row, baselines, args.quick)
    print("\n" + table)
    results = _common.RESULTS
    (results / f"{name}.md").write_text(table)
    images = np.asarray(ss.quantize(x[:64], levels=256))
    plot_grid(images, mnist.test[:64], results / f"{name}.png",
              f"{config.steps} steps: bits/dim {bpd['bpd']:.3f}, Frechet {metrics['frechet']:.1f} "
              f"(floor {metrics['frechet_floor']:.1f}), TV {metrics['tv']:.2f}")  # fmt: skip
    _common.write(name, dict(**row, baselines=baselines["rows"],
                             meta=_common.metadata(**{k: str(v) for k, v in vars(args).items()})))  # fmt: skip
    print(f"wrote {name}.json, .md, .png in {results}")


if __name__ == "__main__":
    main()
