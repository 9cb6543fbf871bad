"""Classical bits/dim baselines on the library's real image splits: 8x8 digits and 28x28 MNIST.

`--dataset digits` (default): `ss.load_digits()` (1500 train / 297 test), grey levels v in
{0..16} recovered from the 8-bit images (k = round(255 v / 16) is one-to-one); 17 levels.
`--dataset mnist`: `ss.load_mnist()` (4000 train / 1000 test), the 8-bit values v in {0..255}
themselves; 256 levels (8 bits/dim for the uniform row).

Convention: L levels; a continuous density is fitted to and evaluated on the dequantised
w = v + u, u ~ U[0, 1)^D, in level units, which is `ss.bits_per_dim(..., levels=L)` on [-1, 1]
(the affine map's Jacobian cancels). Its figure E_u[-log2 p_w(v + u)] / D is an upper bound on
the code length of the discrete data; it is estimated by Monte Carlo over u (`--repeats` draws of
the whole test set), with the standard error over those draws (`stderr_mc`) and, separately, over
the test images (`stderr_test`). The estimators live in `scoresde/_bench/baselines.py`.

Rows (all on the same test set; hyperparameters chosen on a validation split of `--num-val`
images carved from train, then refitted on all of train):

- `uniform`: log2 L bits/dim, exact (the baseline the ratios are against).
- `categorical`: independent per-pixel categorical over the L levels, add-alpha smoothed; exact
  discrete bits/dim (no dequantisation).
- `gaussian`: one full-covariance Gaussian (maximum likelihood) on dequantised data.
- `gmm`: scikit-learn's `GaussianMixture` (full covariance), the number of components (and, for
  MNIST, the `reg_covar` added to each covariance's diagonal: with 784 dimensions and a few
  thousand images the unregularised covariances overfit) chosen on validation.
- `pca-gaussian`: probabilistic PCA, a Gaussian on the top k principal directions with an
  isotropic remainder, k chosen on validation.
- `model (levels=17)` / `model (8-bit)`: only with `--checkpoint PATH` (a `scoresde train`
  digits checkpoint); see MODEL ROW below.

Run: `python benchmarks/real_data.py [--dataset mnist] [--checkpoint PATH] [--name NAME]`. Writes
`benchmarks/results/NAME.json` (default `real_data`, or `real_data_mnist` with a Markdown table
beside it). Takes about a minute on 2 CPU cores for the digits without a checkpoint, about 13
minutes for MNIST (the GMM sweep; 2 cores shared with other jobs, load average 6). The 17-level
model of docs/concepts/likelihood.md:

    scoresde train --dataset digits --levels 17 --weighting sigma2 --steps 1800 --samples 0 \
        --out runs/digits17
    python benchmarks/real_data.py --checkpoint runs/digits17/checkpoint.eqx \
        --name real_data_model17

and the 8-bit model beside it: the same with `--levels 256`, `--name real_data_model8`.
"""

import argparse
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._bench.baselines import (  # noqa: E402
    categorical_bpd,
    categorical_fit,
    dequantised,
    dequantised_bpd,
    gaussian_log_density,
    gmm_log_density,
    row,
    split_validation,
    uniform_bpd,
)

ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
COMPONENTS = (1, 2, 5, 10, 15, 20)


class Dataset:
    """What differs between the two data sets: the split, the levels, the defaults."""

    def __init__(self, name, load, levels, to_levels, *, num_val, train_copies, components,
                 reg_covars, ranks):  # fmt: skip
        self.name, self.load, self.levels, self.to_levels = name, load, levels, to_levels
        self.defaults = dict(num_val=num_val, train_copies=train_copies, components=components,
                             reg_covars=reg_covars, ranks=ranks)  # fmt: skip


def digit_levels(images) -> np.ndarray:
    """8-bit digits `(n, 1, 8, 8)` back to their grey levels 0..16 (`ss.digit_levels`), `(n, 64)`."""
    return ss.digit_levels(images).reshape(len(images), -1).astype(np.int64)


def mnist_levels(images) -> np.ndarray:
    """8-bit MNIST `(n, 1, 28, 28)` as levels 0..255, `(n, 784)`."""
    return np.asarray(images).reshape(len(images), -1).astype(np.int64)


DATASETS = {
    "digits": Dataset("8x8 digits", ss.load_digits, 17, digit_levels, num_val=300,
                      train_copies=4, components=COMPONENTS, reg_covars=(1e-6,),
                      ranks=(10, 20, 30, 40, 50, 55, 60, 63)),
    "mnist": Dataset("28x28 MNIST", ss.load_mnist, 256, mnist_levels, num_val=500,
                     train_copies=1, components=(1, 2, 5, 10, 20),
                     reg_covars=(1.0, 10.0, 30.0, 100.0, 300.0),
                     ranks=(50, 100, 200, 300, 400, 500, 600, 700)),
}  # fmt: skip


# --- MODEL ROW: a trained score model, when --checkpoint is given -----------------------------


def model_rows(path, test_images, *, num, seed, t_eps):
    """Bits/dim of a `scoresde train` digits checkpoint on the first `num` test images.

    Two conventions (see docs/concepts/likelihood.md, "Digits: 17 levels or 8 bits"):
    `ss.bits_per_dim(levels=17)` on the grey levels, comparable with the rows above; and
    `bits=8` on the 8-bit images, whose figure is also a code length for the same data but
    charges a smooth density about log2(256/17) = 3.91 bits/dim for the unused bins. A checkpoint
    is evaluated in the convention it was trained on (`levels` in its config, as `scoresde nll`
    does): an 8-bit model (`--levels 256`, `ss.dequantize` of the 8-bit values) gets
    both rows, a `--levels 17` model the 17-level row only (its density lives on
    y = 2(v + u)/17 - 1, so the 8-bit bins, which sit elsewhere in [-1, 1], would not measure it).
    One Rademacher probe, Dopri5 at rtol = atol = 1e-5 (as `scoresde nll`).
    """
    import jax.numpy as jnp
    import jax.random as jr

    from scoresde._training.recipes import load_model

    model, config = load_model(pathlib.Path(path))
    if config.dataset != "digits":
        raise SystemExit(f"--checkpoint {path}: trained on {config.dataset!r}, not digits")
    images = jnp.asarray(test_images[:num])
    levels = jnp.asarray(digit_levels(test_images[:num]).reshape(images.shape))
    conventions = [("model (levels=17)", levels, dict(levels=17))]
    if config.levels == 256:
        conventions.append(("model (8-bit)", images, dict(bits=8)))
    rows = []
    for label, data, conv in conventions:
        start = time.perf_counter()
        r = ss.bits_per_dim(
            model.sde,
            model,
            data,
            key=jr.key(seed),
            divergence=ss.Hutchinson(),
            t_eps=t_eps,
            **conv,
        )
        per_image = np.asarray(r.bpd)
        rows.append(
            row(
                label if len(per_image) == len(test_images) else f"{label}, n={len(per_image)}",
                per_image,
                None,
                convention=conv,
                trained_levels=config.levels,
                steps=config.steps,
                num_test=int(len(per_image)),
                mean_nfe=float(np.mean(r.nfe)),
                seconds=time.perf_counter() - start,
                checkpoint=str(path),
            )
        )
    return rows


def baseline_rows(dataset="digits", *, num_val=None, repeats=16, train_copies=None,
                  alphas=ALPHAS, components=None, reg_covars=None, ranks=None, seed=0):  # fmt: skip
    """The classical rows (uniform, categorical, gaussian, gmm, pca-gaussian) on the test split of
    `dataset` (a key of DATASETS), each hyperparameter chosen on a validation split carved from
    train (`None`: the data set's default); returns (rows, selection)."""
    ds = DATASETS[dataset]
    opts = dict(num_val=num_val, train_copies=train_copies, components=components,
                reg_covars=reg_covars, ranks=ranks)  # fmt: skip
    opts = {k: ds.defaults[k] if v is None else v for k, v in opts.items()}
    data = ds.load()
    train, test = ds.to_levels(data.train), ds.to_levels(data.test)
    fit_part, val_part = split_validation(train, opts["num_val"], seed)
    rng = np.random.default_rng(seed)
    copies = opts["train_copies"]
    rows, selection = [], {}

    rows.append(row("uniform", np.full(len(test), uniform_bpd(ds.levels))))

    val_scores = {
        a: float(categorical_bpd(categorical_fit(fit_part, a, ds.levels), val_part).mean())
        for a in alphas
    }
    alpha = min(val_scores, key=val_scores.get)
    selection["categorical_alpha"] = dict(chosen=alpha, validation_bpd=val_scores)
    probs = categorical_fit(train, alpha, ds.levels)
    rows.append(row("categorical", categorical_bpd(probs, test), None, alpha=alpha))

    w_train = dequantised(train, rng, copies)
    per_image, draws = dequantised_bpd(gaussian_log_density(w_train), test, rng, repeats)
    rows.append(row("gaussian", per_image, draws))

    w_fit = dequantised(fit_part, rng, copies)
    val_scores = {}
    for reg in opts["reg_covars"]:
        for c in opts["components"]:
            start = time.perf_counter()
            log_density = gmm_log_density(w_fit, c, seed, reg)
            score = float(dequantised_bpd(log_density, val_part, rng, 2)[0].mean())
            val_scores[(c, reg)] = score
            print(f"  gmm validation: {c:3d} components, reg_covar {reg:g}: {score:.3f} bits/dim "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
    components, reg = min(val_scores, key=val_scores.get)
    if len(opts["reg_covars"]) == 1:  # the digits' record: components alone
        selection["gmm_components"] = dict(
            chosen=components, validation_bpd={c: v for (c, _), v in val_scores.items()}
        )
    else:
        selection["gmm"] = dict(
            chosen=dict(components=components, reg_covar=reg),
            validation_bpd=[dict(components=c, reg_covar=r, bpd=v)
                            for (c, r), v in val_scores.items()],
        )  # fmt: skip
    extra = dict(components=components)
    if len(opts["reg_covars"]) > 1:
        extra["reg_covar"] = reg
    per_image, draws = dequantised_bpd(gmm_log_density(w_train, components, seed, reg), test,
                                       rng, repeats)  # fmt: skip
    rows.append(row("gmm", per_image, draws, **extra))

    # Last, so that the rows above draw the same u as before this row existed.
    w_fit = dequantised(fit_part, rng, copies)
    val_scores = {k: float(dequantised_bpd(gaussian_log_density(w_fit, k), val_part, rng, 2)[0]
                           .mean()) for k in opts["ranks"]}  # fmt: skip
    rank = min(val_scores, key=val_scores.get)
    selection["pca_rank"] = dict(chosen=rank, validation_bpd=val_scores)
    per_image, draws = dequantised_bpd(gaussian_log_density(w_train, rank), test, rng, repeats)
    rows.append(row("pca-gaussian", per_image, draws, rank=rank))

    return rows, selection, opts


def markdown(rows, selection, *, title, num_test, levels, command) -> str:
    """The results as a Markdown table with the settings chosen on validation."""
    lines = [
        f"# {title}: classical bits/dim baselines",
        "",
        f"{num_test} test images, {levels} levels (8 bits: uniform dequantisation "
        "w = v + u, bits/dim; lower is better). Standard errors over the test images and over "
        "the Monte Carlo draws of u. Hyperparameters chosen on a validation split carved from "
        "train, then refitted on all of train.",
        "",
        "| row | bits/dim | se (test images) | se (MC over u) | / uniform | chosen |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        mc = "-" if r["stderr_mc"] is None else f"{r['stderr_mc']:.2g}"
        chosen = ", ".join(
            f"{k}={r[k]}" for k in ("alpha", "components", "reg_covar", "rank") if k in r
        )
        lines.append(
            f"| {r['name']} | {r['bpd']:.3f} | {r['stderr_test']:.2g} | {mc} | "
            f"{r['ratio_to_uniform']:.3f} | {chosen or '-'} |"
        )
    lines += ["", "Validation bits/dim behind each choice:", ""]
    for key, sel in selection.items():
        scores = sel["validation_bpd"]
        if isinstance(scores, dict):
            text = ", ".join(f"{k}: {v:.3f}" for k, v in scores.items())
        else:
            text = ", ".join(
                f"({s['components']}, {s['reg_covar']:g}): {s['bpd']:.3f}" for s in scores
            )
            key = f"{key} (components, reg_covar)"
        lines.append(f"- {key}: {text}; chosen {sel['chosen']}")
    lines += ["", f"Reproduce: `{command}`", ""]
    return "\n".join(lines)


def _jsonable(selection):
    """Dict keys as strings, as `json` writes them."""
    out = {}
    for key, sel in selection.items():
        scores = sel["validation_bpd"]
        if isinstance(scores, dict):
            scores = {str(k): v for k, v in scores.items()}
        out[key] = dict(sel, validation_bpd=scores)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    p.add_argument("--num-val", type=int, help="validation images carved from train "
                   "(default 300 digits, 500 MNIST)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=16, help="draws of u for dequantised figures")
    p.add_argument("--train-copies", type=int, help="dequantised copies to fit on "
                   "(default 4 digits, 1 MNIST)")  # fmt: skip
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    p.add_argument("--components", type=int, nargs="+", help="GMM components to try")
    p.add_argument("--reg-covars", type=float, nargs="+", help="GMM reg_covar values to try")
    p.add_argument("--ranks", type=int, nargs="+", help="PCA-Gaussian ranks to try")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=pathlib.Path, help="a `scoresde train` digits checkpoint")
    p.add_argument("--checkpoint-num", type=int, default=297, help="test images for the model")
    p.add_argument("--t-eps", type=float, default=1e-4, help="likelihood ODE start (model row)")
    p.add_argument("--name", help="results file benchmarks/results/NAME.json (default real_data, "
                   "real_data_mnist)")  # fmt: skip
    args = p.parse_args(argv)
    if args.checkpoint is not None and args.dataset != "digits":
        p.error("--checkpoint takes a digits checkpoint (--dataset digits)")
    name = args.name or ("real_data" if args.dataset == "digits" else f"real_data_{args.dataset}")
    ds = DATASETS[args.dataset]

    rows, selection, opts = baseline_rows(
        args.dataset, num_val=args.num_val, repeats=args.repeats,
        train_copies=args.train_copies, alphas=args.alphas, components=args.components,
        reg_covars=args.reg_covars, ranks=args.ranks, seed=args.seed,
    )  # fmt: skip
    data = ds.load()

    if args.checkpoint is not None:  # MODEL ROW: the trained score model's bits/dim
        rows += model_rows(args.checkpoint, data.test, num=args.checkpoint_num, seed=args.seed,
                           t_eps=args.t_eps)  # fmt: skip

    base = rows[0]["bpd"]
    for r in rows:
        r["ratio_to_uniform"] = r["bpd"] / base
    print(f"\n{ds.name}, {len(data.test)} test images, {ds.levels} levels "
          "(bits/dim; lower is better)")  # fmt: skip
    print(f"{'row':20s} {'bits/dim':>9s} {'se(test)':>9s} {'se(MC u)':>9s} {'/ uniform':>9s}")
    for r in rows:
        mc = "-" if r["stderr_mc"] is None else f"{r['stderr_mc']:.4f}"
        print(
            f"{r['name']:20s} {r['bpd']:9.3f} {r['stderr_test']:9.4f} {mc:>9s} "
            f"{r['ratio_to_uniform']:9.3f}"
        )
    print("selection:", {k: v["chosen"] for k, v in selection.items()})
    if args.dataset != "digits":
        command = "python benchmarks/real_data.py " + " ".join(argv or sys.argv[1:])
        md = markdown(rows, selection, title=ds.name, num_test=len(data.test),
                      levels=ds.levels, command=command.strip())  # fmt: skip
        path = _common.RESULTS / f"{name}.md"
        path.write_text(md)
        print(f"wrote {path}")
    _common.write(
        name,
        dict(
            rows=rows,
            selection=_jsonable(selection),
            convention=f"{ds.levels} levels; continuous densities on w = v + u "
            "(uniform dequantisation)",
            meta=_common.metadata(
                **{k: str(v) for k, v in vars(args).items()},
                **{f"used_{k}": str(v) for k, v in opts.items()},
            ),
        ),
    )


if __name__ == "__main__":
    main()
