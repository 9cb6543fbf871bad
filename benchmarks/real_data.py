"""Classical bits/dim baselines on the library's 8x8 digits split, 17-level convention.

Data: `ss.load_digits()` (1500 train / 297 test), grey levels v in {0..16} recovered from the
8-bit images (k = round(255 v / 16) is one-to-one). Convention: 17 levels; a continuous density is
fitted to and evaluated on the dequantised w = v + u, u ~ U[0, 1)^64, in level units, which is
`ss.bits_per_dim(..., levels=17)` on [-1, 1] (the affine map's Jacobian cancels). Its figure
E_u[-log2 p_w(v + u)] / 64 is an upper bound on the code length of the discrete data; it is
estimated by Monte Carlo over u (`--repeats` draws of the whole test set), with the standard error
over those draws (`stderr_mc`) and, separately, over the test images (`stderr_test`).

Rows (all on the same test set; hyperparameters chosen on a validation split of `--num-val`
images carved from train, then refitted on all 1500):

- `uniform`: log2 17 = 4.09 bits/dim, exact (the baseline the ratios are against).
- `categorical`: independent per-pixel categorical over the 17 levels, add-alpha smoothed; exact
  discrete bits/dim (no dequantisation).
- `gaussian`: one full-covariance Gaussian (maximum likelihood) on dequantised data.
- `gmm`: scikit-learn's `GaussianMixture` (full covariance), components chosen on validation.
- `model (levels=17)` / `model (8-bit)`: only with `--checkpoint PATH` (a `scoresde train`
  digits checkpoint); see MODEL ROW below.

Run: `python benchmarks/real_data.py [--checkpoint PATH] [--name NAME]`. Writes
`benchmarks/results/NAME.json` (default `real_data`). Takes about a minute on 2 CPU cores
without a checkpoint. The 17-level model of docs/concepts/likelihood.md:

    scoresde train --dataset digits --levels 17 --weighting sigma2 --steps 1800 --samples 0 \
        --out runs/digits17
    python benchmarks/real_data.py --checkpoint runs/digits17/checkpoint.eqx \
        --name real_data_model17

and the 8-bit model beside it: the same with `--levels 256`, `--name real_data_model8`.
"""

import argparse
import math
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402

import scoresde as ss  # noqa: E402

LEVELS = 17
LOG2 = math.log(2)
ALPHAS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
COMPONENTS = (1, 2, 5, 10, 15, 20)


def digit_levels(images) -> np.ndarray:
    """8-bit digits `(n, 1, 8, 8)` back to their grey levels 0..16 (`ss.digit_levels`), `(n, 64)`."""
    return ss.digit_levels(images).reshape(len(images), -1).astype(np.int64)


def split_validation(v, num_val: int, seed: int):
    perm = np.random.default_rng(seed).permutation(len(v))
    return v[perm[num_val:]], v[perm[:num_val]]


def dequantised(v, rng, copies: int = 1) -> np.ndarray:
    """`copies` draws of w = v + u stacked along the batch axis."""
    return np.concatenate([v + rng.random(v.shape) for _ in range(copies)])


# --- discrete: independent per-pixel categorical ---------------------------------------------


def categorical_fit(v, alpha: float) -> np.ndarray:
    counts = np.stack([np.bincount(col, minlength=LEVELS) for col in v.T])  # (64, 17)
    return (counts + alpha) / (len(v) + LEVELS * alpha)


def categorical_bpd(probs, v) -> np.ndarray:
    """Exact discrete bits/dim per image."""
    logp = np.log2(probs[np.arange(v.shape[1]), v])  # (n, 64)
    return -logp.mean(axis=1)


# --- continuous: Gaussian and Gaussian mixture on dequantised data ---------------------------


def gaussian_log_density(w_train):
    mean = w_train.mean(axis=0)
    cov = np.cov(w_train, rowvar=False)
    chol = np.linalg.cholesky(cov)
    half_logdet = np.sum(np.log(np.diag(chol)))
    d = w_train.shape[1]

    def log_density(w):
        z = np.linalg.solve(chol, (w - mean).T)
        return -0.5 * np.sum(z**2, axis=0) - half_logdet - 0.5 * d * math.log(2 * math.pi)

    return log_density


def gmm_log_density(w_train, n_components: int, seed: int):
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed, n_init=1)
    gmm.fit(w_train)
    return gmm.score_samples


def dequantised_bpd(log_density, v, rng, repeats: int):
    """(per-image bits/dim averaged over repeats, per-repeat test means)."""
    d = v.shape[1]
    per_draw = np.stack(
        [-log_density(v + rng.random(v.shape)) / (d * LOG2) for _ in range(repeats)]
    )
    return per_draw.mean(axis=0), per_draw.mean(axis=1)


def row(name, per_image, draw_means=None, **extra):
    n = len(per_image)
    out = dict(
        name=name,
        bpd=float(np.mean(per_image)),
        stderr_test=float(np.std(per_image, ddof=1) / math.sqrt(n)),
        stderr_mc=None
        if draw_means is None
        else float(np.std(draw_means, ddof=1) / math.sqrt(len(draw_means))),
    )
    out.update(extra)
    return out


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


def baseline_rows(*, num_val=300, repeats=16, train_copies=4, alphas=ALPHAS,
                  components=COMPONENTS, seed=0):  # fmt: skip
    """The classical rows (uniform, categorical, gaussian, gmm) on the test split, each
    hyperparameter chosen on a validation split carved from train; returns (rows, selection)."""
    data = ss.load_digits()
    train, test = digit_levels(data.train), digit_levels(data.test)
    fit_part, val_part = split_validation(train, num_val, seed)
    rng = np.random.default_rng(seed)
    rows, selection = [], {}

    rows.append(row("uniform", np.full(len(test), math.log2(LEVELS))))

    val_scores = {a: float(categorical_bpd(categorical_fit(fit_part, a), val_part).mean())
                  for a in alphas}  # fmt: skip
    alpha = min(val_scores, key=val_scores.get)
    selection["categorical_alpha"] = dict(chosen=alpha, validation_bpd=val_scores)
    rows.append(row("categorical", categorical_bpd(categorical_fit(train, alpha), test), None,
                    alpha=alpha))  # fmt: skip

    w_train = dequantised(train, rng, train_copies)
    per_image, draws = dequantised_bpd(gaussian_log_density(w_train), test, rng, repeats)
    rows.append(row("gaussian", per_image, draws))

    w_fit = dequantised(fit_part, rng, train_copies)
    val_scores = {}
    for c in components:
        log_density = gmm_log_density(w_fit, c, seed)
        val_scores[c] = float(dequantised_bpd(log_density, val_part, rng, 2)[0].mean())
        print(f"  gmm validation: {c:3d} components {val_scores[c]:.3f} bits/dim", flush=True)
    components = min(val_scores, key=val_scores.get)
    selection["gmm_components"] = dict(chosen=components, validation_bpd=val_scores)
    log_density = gmm_log_density(w_train, components, seed)
    per_image, draws = dequantised_bpd(log_density, test, rng, repeats)
    rows.append(row("gmm", per_image, draws, components=components))

    return rows, selection


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-val", type=int, default=300, help="validation images carved from train")
    p.add_argument("--repeats", type=int, default=16, help="draws of u for dequantised figures")
    p.add_argument("--train-copies", type=int, default=4, help="dequantised copies to fit on")
    p.add_argument("--alphas", type=float, nargs="+", default=list(ALPHAS))
    p.add_argument("--components", type=int, nargs="+", default=list(COMPONENTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=pathlib.Path, help="a `scoresde train` digits checkpoint")
    p.add_argument("--checkpoint-num", type=int, default=297, help="test images for the model")
    p.add_argument("--t-eps", type=float, default=1e-4, help="likelihood ODE start (model row)")
    p.add_argument("--name", default="real_data", help="results file benchmarks/results/NAME.json")
    args = p.parse_args(argv)

    rows, selection = baseline_rows(num_val=args.num_val, repeats=args.repeats,
                                    train_copies=args.train_copies, alphas=args.alphas,
                                    components=args.components, seed=args.seed)  # fmt: skip
    data = ss.load_digits()
    alpha = selection["categorical_alpha"]["chosen"]
    components = selection["gmm_components"]["chosen"]

    if args.checkpoint is not None:  # MODEL ROW: the trained score model's bits/dim
        rows += model_rows(args.checkpoint, data.test, num=args.checkpoint_num, seed=args.seed,
                           t_eps=args.t_eps)  # fmt: skip

    base = rows[0]["bpd"]
    for r in rows:
        r["ratio_to_uniform"] = r["bpd"] / base
    print(f"\n8x8 digits, {len(data.test)} test images, 17 levels (bits/dim; lower is better)")
    print(f"{'row':20s} {'bits/dim':>9s} {'se(test)':>9s} {'se(MC u)':>9s} {'/ uniform':>9s}")
    for r in rows:
        mc = "-" if r["stderr_mc"] is None else f"{r['stderr_mc']:.4f}"
        print(
            f"{r['name']:20s} {r['bpd']:9.3f} {r['stderr_test']:9.4f} {mc:>9s} "
            f"{r['ratio_to_uniform']:9.3f}"
        )
    print(f"selection: alpha={alpha}, components={components}")
    _common.write(
        args.name,
        dict(
            rows=rows,
            selection=selection,
            convention="17 levels; continuous densities on w = v + u (uniform dequantisation)",
            meta=_common.metadata(**{k: str(v) for k, v in vars(args).items()}),
        ),
    )


if __name__ == "__main__":
    main()
