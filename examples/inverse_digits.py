"""Class-conditional digits: classifier-free guidance and inpainting, judged by an independent
classifier.

    python examples/inverse_digits.py            # several minutes on CPU
    python examples/inverse_digits.py --smoke    # the same code path at toy sizes

1. Trains a class-conditional U-Net (label embedding + null label, label dropout 0.1) on the
   8x8 digits with `ss.LabelDropoutDSM` (or loads one: `--checkpoint`, from
   `scoresde train --dataset digits --conditional`).
2. Trains a scikit-learn logistic regression on the CLEAN training digits (independent of the
   score model) and reports its test accuracy.
3. For each guidance scale w, samples digits of every label with classifier-free guidance
   w s(x|c) + (1 - w) s(x) and reports how often the classifier sees the requested label.
4. Hides the lower half of test digits and completes it with PiGDM guidance
   (`ss.guidance.PiGDM`, the unconditional score through the null label): RMSE on the hidden
   pixels and classifier accuracy of the completed digits, beside the mean-image fill.

Prints a table and writes `inverse_digits.json` and `inverse_digits.png` to `--out`.
"""

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoresde as ss

SMOKE = dict(steps=3, base_channels=4, per_label=1, scales=(1.0, 3.0), num_inpaint=4,
             sample_steps=3)  # fmt: skip
NULL = 10


def train_model(steps, base_channels, key):
    digits = ss.load_digits()
    sde = ss.VPSDE()
    key_init, key_fit = jr.split(key)
    net = ss.UNet((1, 8, 8), base_channels=base_channels, channel_mults=(1, 2), num_heads=2,
                  num_classes=10, key=key_init)  # fmt: skip
    result = ss.fit(
        ss.EpsPrediction(net, sde),
        ss.LabelDropoutDSM(
            sde, num_classes=10, p_uncond=0.1, time_sampler=ss.UniformTime(stratified=True)
        ),  # fmt: skip
        ss.pack_labels(digits.train, digits.train_labels),
        key=key_fit,
        steps=steps,
        batch_size=64,
        optimizer=ss.adam_with_warmup(
            2e-3, warmup_steps=min(100, steps), decay_steps=max(steps, 101)
        ),
        preprocess=ss.UnpackLabels((1, 8, 8), ss.dequantize),
        progress=False,
    )
    return result.ema_model, float(np.mean(result.losses[-50:]))


def load_model(path):
    from scoresde._cli.common import load_model as _load

    model, config = _load(path)
    if not config.conditional:
        raise SystemExit(f"{path} is not a class-conditional checkpoint (train with --conditional)")
    return model


def classifier(digits):
    from sklearn.linear_model import LogisticRegression

    flat = lambda imgs: np.asarray(ss.dequantize(None, imgs)).reshape(len(imgs), -1)
    clf = LogisticRegression(max_iter=2000).fit(flat(digits.train), digits.train_labels)
    return clf, float(clf.score(flat(digits.test), digits.test_labels))


def cfg_samples(model, labels, scales, steps, key):
    """One sample per (label, scale) pair, ONE compiled sampler: label and scale are per-sample
    conditioning; the guided score is w s(x|c) + (1 - w) s(x) (ss.guidance.ClassifierFree)."""

    def guided(t, x, cond):
        label, w = cond
        return w * model(t, x, label) + (1 - w) * model(t, x, jnp.int32(NULL))

    shape = (len(labels), 1, 8, 8)
    cond = (jnp.asarray(labels, jnp.int32), jnp.asarray(scales, jnp.float32))
    res = ss.sample_sde(model.sde, guided, key=key, shape=shape, steps=steps, grid="log_snr",
                        cond=cond)  # fmt: skip
    return np.clip(np.asarray(res.x), -1, 1)


def inpaint(model, truth, mask, steps, key, noise_std=0.05):
    uncond = lambda t, x: model(t, x, jnp.int32(NULL))

    def guided(t, x, observed):
        m = ss.LinearMeasurement.from_mask(mask, observed, noise_std)
        return ss.guidance.PiGDM(model.sde, uncond, m)(t, x)

    observed = jnp.asarray(truth * mask)  # nothing of the hidden pixels reaches the sampler
    res = ss.sample_sde(model.sde, guided, key=key, shape=truth.shape, steps=steps,
                        grid="log_snr", cond=observed)  # fmt: skip
    return np.clip(np.asarray(res.x), -1, 1)


def main(steps=3000, base_channels=16, per_label=20, scales=(0.0, 1.0, 2.0, 4.0),
         num_inpaint=100, sample_steps=200, checkpoint=None, seed=0, out="scoresde-out"):  # fmt: skip
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key_train, key_cfg, key_inp = jr.split(jr.key(seed), 3)
    digits = ss.load_digits()
    if checkpoint is None:
        model, final_loss = train_model(steps, base_channels, key_train)
        print(
            f"trained {ss.num_params(model)} parameters, {steps} steps, final loss {final_loss:.3f}"
        )
    else:
        model, final_loss = load_model(checkpoint), None
    clf, clf_acc = classifier(digits)
    print(
        f"independent classifier (logistic regression, clean digits): test accuracy {clf_acc:.3f}"
    )

    labels = np.repeat(np.arange(10), per_label)
    all_labels = np.tile(labels, len(scales))
    all_scales = np.repeat(np.asarray(scales, np.float32), len(labels))
    samples = cfg_samples(model, all_labels, all_scales, sample_steps, key_cfg)
    pred = clf.predict(samples.reshape(len(samples), -1))
    rows = []
    for w in scales:
        sel = all_scales == np.float32(w)
        rows.append({"guidance": float(w), "accuracy": float(np.mean(pred[sel] == all_labels[sel])),
                     "num": int(sel.sum())})  # fmt: skip

    mask = np.ones((1, 8, 8), bool)
    mask[:, 4:] = False
    truth = np.asarray(ss.dequantize(None, digits.test[:num_inpaint]))
    true_labels = digits.test_labels[:num_inpaint]
    completed = inpaint(model, truth, mask, sample_steps, key_inp)
    hidden = np.broadcast_to(~mask, truth.shape)
    mean_fill = np.where(mask, truth, np.asarray(ss.dequantize(None, digits.train)).mean(0))
    rmse = lambda x: float(np.sqrt(np.mean((x[hidden] - truth[hidden]) ** 2)))
    acc = lambda x: float(np.mean(clf.predict(x.reshape(len(x), -1)) == true_labels))
    inp = {"images": int(num_inpaint), "method": "PiGDM, noise_std 0.05",
           "hidden_rmse": rmse(completed), "mean_fill_hidden_rmse": rmse(mean_fill),
           "accuracy_completed": acc(completed), "accuracy_mean_fill": acc(mean_fill),
           "accuracy_truth": acc(truth)}  # fmt: skip

    print(f"\nclassifier-free guidance: {per_label} samples per label, {sample_steps} EM steps")
    print(f"{'guidance w':>10} | {'accuracy of the requested label':>31}")
    for r in rows:
        print(f"{r['guidance']:>10g} | {r['accuracy']:>31.3f}")
    print(f"\ninpainting the lower half of {num_inpaint} test digits (PiGDM):")
    print(f"{'':>12} | {'hidden RMSE':>11} | {'classifier accuracy':>19}")
    print(f"{'completed':>12} | {inp['hidden_rmse']:>11.3f} | {inp['accuracy_completed']:>19.3f}")
    print(f"{'mean fill':>12} | {inp['mean_fill_hidden_rmse']:>11.3f} | "
          f"{inp['accuracy_mean_fill']:>19.3f}")  # fmt: skip
    print(f"{'truth':>12} | {0.0:>11.3f} | {inp['accuracy_truth']:>19.3f}")

    report = {"train_steps": steps if checkpoint is None else None, "checkpoint": checkpoint,
              "final_loss": final_loss, "sample_steps": sample_steps, "seed": seed,
              "classifier_test_accuracy": clf_acc, "cfg": rows, "inpainting": inp,
              "jax_backend": jax.default_backend()}  # fmt: skip
    (out / "inverse_digits.json").write_text(json.dumps(report, indent=2))
    plot(
        samples, all_labels, all_scales, scales, truth, mask, completed, out / "inverse_digits.png"
    )
    print(f"\nwrote {out / 'inverse_digits.json'} and {out / 'inverse_digits.png'}")
    return report


def plot(samples, labels, sample_scales, scales, truth, mask, completed, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_inp = min(10, len(truth))
    fig, axes = plt.subplots(len(scales) + 3, 10, figsize=(10, len(scales) + 3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, w in enumerate(scales):
        for c in range(10):
            idx = np.flatnonzero((sample_scales == np.float32(w)) & (labels == c))[0]
            axes[i, c].imshow(samples[idx, 0], cmap="gray", vmin=-1, vmax=1)
        axes[i, 0].set_title(f"w={w:g}", fontsize=7, loc="left")
    for j in range(n_inp):
        for r, img in enumerate((np.where(mask, truth[j], 0.0), completed[j], truth[j])):
            axes[len(scales) + r, j].imshow(img[0], cmap="gray", vmin=-1, vmax=1)
    for r, name in enumerate(("observed", "completed", "truth")):
        axes[len(scales) + r, 0].set_title(name, fontsize=7, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the code path")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--checkpoint", default=None,
                        help="a conditional digits checkpoint to load instead of training")  # fmt: skip
    parser.add_argument("--out", default="scoresde-out", help="output folder")
    args = parser.parse_args()
    kwargs = dict(SMOKE) if args.smoke else dict(steps=args.steps)
    main(**kwargs, checkpoint=args.checkpoint, out=args.out)
