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
4. Hides the lower half of test digits and completes it with PiGDM and DPS guidance
   (`ss.guidance.PiGDM` / `DPS`, the unconditional score through the null label, bounded by
   the data's support): RMSE on the hidden pixels and classifier accuracy of the completed
   digits, beside the mean-image fill and the empirical posterior (a training digit drawn by its
   likelihood of the observed half: what an exact sampler of a memorising model would return).
5. Trains a noise-conditional classifier p_t(c | x) with `ss.NoisyCrossEntropy` (an MLP on the
   flattened digit, logits out) and samples every label with classifier guidance
   s(x) + w grad ln p_t(c | x) (`ss.guidance.Classifier`, unconditional score through the null
   label): accuracy of the requested label per scale, as for classifier-free guidance.
6. Colourisation: trains an unconditional U-Net on `ss.load_coloured_digits()` (3 channels),
   observes the grey image (channel mean, `ss.LinearMeasurement.grayscale`) of test digits and
   colours it with PiGDM guidance and with `ss.guidance.Replacement` (score_sde's method):
   RMSE of the colour image against the truth, beside the grey image copied to every channel.

Prints a table and writes `inverse_digits.json` and `inverse_digits.png` to `--out`.
"""

import argparse
import json
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoresde as ss

SMOKE = dict(steps=3, base_channels=4, per_label=1, scales=(1.0, 3.0), num_inpaint=4,
             sample_steps=3, classifier_steps=3, num_colour=2)  # fmt: skip
NULL = 10
# The data lie in [-1, 1]^64: PiGDM's guidance is kept within the bound the exact guidance obeys
# (`support_diameter`); unbounded, the network's Jacobian error (amplified ~ 1/alpha^2 near t = 1)
# makes every inpainting sample diverge.
DIAMETER = 2 * np.sqrt(64)


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


def train_classifier(steps, key):
    """A noise-conditional classifier: MLP logits of the flattened digit at time t, trained with
    the cross-entropy of the labels at a random diffusion time (ss.NoisyCrossEntropy)."""
    digits = ss.load_digits()
    key_init, key_fit = jr.split(key)
    net = ss.MLPScoreNet(64, width=256, depth=3, out_size=10, key=key_init)
    result = ss.fit(
        net,
        ss.NoisyCrossEntropy(ss.VPSDE(), num_classes=10),
        ss.pack_labels(digits.train.reshape(len(digits.train), 64), digits.train_labels),
        key=key_fit,
        steps=steps,
        batch_size=128,
        optimizer=ss.adam_with_warmup(
            1e-3, warmup_steps=min(100, steps), decay_steps=max(steps, 101)
        ),
        preprocess=ss.UnpackLabels(64, ss.dequantize),
        progress=False,
    )
    return result.ema_model


def train_colour_model(steps, base_channels, key):
    """An unconditional 3-channel U-Net on the coloured digits (denoising score matching)."""
    data = ss.load_coloured_digits()
    sde = ss.VPSDE()
    key_init, key_fit = jr.split(key)
    net = ss.UNet((3, 8, 8), base_channels=base_channels, channel_mults=(1, 2), num_heads=2,
                  key=key_init)  # fmt: skip
    result = ss.fit(
        ss.EpsPrediction(net, sde),
        ss.DenoisingScoreMatching(sde, time_sampler=ss.UniformTime(stratified=True)),
        jnp.asarray(data.train),
        key=key_fit,
        steps=steps,
        batch_size=64,
        optimizer=ss.adam_with_warmup(
            2e-3, warmup_steps=min(100, steps), decay_steps=max(steps, 101)
        ),
        preprocess=ss.dequantize,
        progress=False,
    )
    return result.ema_model, data


def load_model(path):
    from scoresde._training.recipes import load_model as _load

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


def inpaint(model, truth, mask, steps, key, noise_std=0.05, method=ss.guidance.PiGDM):
    uncond = lambda t, x: model(t, x, jnp.int32(NULL))

    def guided(t, x, observed):
        m = ss.LinearMeasurement.from_mask(mask, observed, noise_std)
        return method(model.sde, uncond, m, support_diameter=DIAMETER)(t, x)

    observed = jnp.asarray(truth * mask)  # nothing of the hidden pixels reaches the sampler
    res = ss.sample_sde(model.sde, guided, key=key, shape=truth.shape, steps=steps,
                        grid="log_snr", cond=observed)  # fmt: skip
    return np.clip(np.asarray(res.x), -1, 1)


def nearest_neighbour_posterior(train, truth, mask, noise_std, key):
    """A reference completion: the posterior under the EMPIRICAL prior (the training digits),
    one training digit drawn with weight N(y; A x_i, noise_std^2) and its hidden half pasted in.
    It is what an exact posterior sampler of a model that memorised the training set returns."""
    obs = np.broadcast_to(mask, truth.shape[1:]).reshape(-1)
    flat_train, flat_truth = train.reshape(len(train), -1), truth.reshape(len(truth), -1)
    d2 = ((flat_truth[:, None, obs] - flat_train[None, :, obs]) ** 2).sum(-1)
    logits = jnp.asarray(-d2 / (2 * noise_std**2))
    idx = np.asarray(jr.categorical(key, logits, axis=-1))
    return np.where(np.broadcast_to(mask, truth.shape), truth, train[idx])


def classifier_samples(model, clf_net, labels, scales, steps, key):
    """One sample per (label, scale) pair with classifier guidance, ONE compiled sampler: the
    body of ss.guidance.Classifier with the label and scale as per-sample conditioning."""
    uncond = lambda t, x: model(t, x, jnp.int32(NULL))

    def guided(t, x, cond):
        label, w = cond
        log_p = lambda x_: jax.nn.log_softmax(clf_net(t, x_.reshape(-1)))[label]
        return uncond(t, x) + w * jax.grad(log_p)(x)

    shape = (len(labels), 1, 8, 8)
    cond = (jnp.asarray(labels, jnp.int32), jnp.asarray(scales, jnp.float32))
    res = ss.sample_sde(model.sde, guided, key=key, shape=shape, steps=steps, grid="log_snr",
                        cond=cond)  # fmt: skip
    return np.clip(np.asarray(res.x), -1, 1)


def colourise(model, truth, steps, key, noise_std=0.05):
    """Grey images (channel means) of `truth` coloured by PiGDM guidance and by Replacement."""
    grey = truth.mean(axis=1)  # (num, 8, 8): all that reaches the samplers

    def guided(t, x, g):
        m = ss.LinearMeasurement.grayscale(g, noise_std)
        return ss.guidance.PiGDM(model.sde, model, m, support_diameter=2 * np.sqrt(truth[0].size))(
            t, x
        )

    res = ss.sample_sde(model.sde, guided, key=key, shape=truth.shape, steps=steps,
                        grid="log_snr", cond=jnp.asarray(grey))  # fmt: skip
    pigdm = np.clip(np.asarray(res.x), -1, 1)
    # Replacement: one measurement per image; the pseudo-inverse of A (the same for every image)
    # is formed once and the observation swapped in, so the sampler compiles once.
    hook = ss.guidance.Replacement(model.sde, ss.LinearMeasurement.grayscale(grey[0], noise_std))
    replaced = []
    for i, g in enumerate(grey):
        hook_i = eqx.tree_at(
            lambda h: h.measurement, hook, ss.LinearMeasurement.grayscale(g, noise_std)
        )
        r = ss.sample_pc(model.sde, model, predictor=ss.EulerMaruyama(), corrector=None,
                         step_hook=hook_i, key=jr.fold_in(key, i), shape=(1, *truth.shape[1:]),
                         steps=steps)  # fmt: skip
        replaced.append(np.clip(np.asarray(r.x[0]), -1, 1))
    return pigdm, np.stack(replaced), np.repeat(grey[:, None], 3, axis=1)


def main(steps=3000, base_channels=16, per_label=20, scales=(0.0, 1.0, 2.0, 4.0),
         num_inpaint=100, sample_steps=200, classifier_steps=2000, num_colour=50,
         checkpoint=None, seed=0, out="scoresde-out"):  # fmt: skip
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key_train, key_cfg, key_inp, key_clf, key_cg, key_col, key_colour = jr.split(jr.key(seed), 7)
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
    completed_dps = inpaint(model, truth, mask, sample_steps, key_inp, method=ss.guidance.DPS)
    hidden = np.broadcast_to(~mask, truth.shape)
    train_images = np.asarray(ss.dequantize(None, digits.train))
    mean_fill = np.where(mask, truth, train_images.mean(0))
    nearest = nearest_neighbour_posterior(train_images, truth, mask, 0.05, jr.fold_in(key_inp, 1))
    rmse = lambda x: float(np.sqrt(np.mean((x[hidden] - truth[hidden]) ** 2)))
    acc = lambda x: float(np.mean(clf.predict(x.reshape(len(x), -1)) == true_labels))
    fills = {"PiGDM": completed, "DPS": completed_dps, "empirical posterior": nearest,
             "mean fill": mean_fill, "truth": truth}  # fmt: skip
    inp = {"images": int(num_inpaint), "noise_std": 0.05, "steps": sample_steps,
           "hidden_rmse": {k: rmse(v) for k, v in fills.items()},
           "accuracy": {k: acc(v) for k, v in fills.items()}}  # fmt: skip

    print(f"\nclassifier-free guidance: {per_label} samples per label, {sample_steps} EM steps")
    print(f"{'guidance w':>10} | {'accuracy of the requested label':>31}")
    for r in rows:
        print(f"{r['guidance']:>10g} | {r['accuracy']:>31.3f}")
    print(f"\ninpainting the lower half of {num_inpaint} test digits ({sample_steps} EM steps):")
    print(f"{'':>19} | {'hidden RMSE':>11} | {'classifier accuracy':>19}")
    for k in fills:
        print(f"{k:>19} | {inp['hidden_rmse'][k]:>11.3f} | {inp['accuracy'][k]:>19.3f}")

    # Classifier guidance with a noise-conditional classifier trained here.
    clf_net = train_classifier(classifier_steps, key_clf)
    cg = classifier_samples(model, clf_net, all_labels, all_scales, sample_steps, key_cg)
    pred_cg = clf.predict(cg.reshape(len(cg), -1))
    cg_rows = []
    for w in scales:
        sel = all_scales == np.float32(w)
        cg_rows.append({"guidance": float(w), "accuracy": float(np.mean(pred_cg[sel] == all_labels[sel])),
                        "num": int(sel.sum())})  # fmt: skip
    print(f"\nclassifier guidance (noise-conditional MLP classifier, {classifier_steps} steps):")
    print(f"{'scale w':>10} | {'accuracy of the requested label':>31}")
    for r in cg_rows:
        print(f"{r['guidance']:>10g} | {r['accuracy']:>31.3f}")

    # Colourisation of grey test digits by a colour model.
    colour_model, coloured = train_colour_model(steps, base_channels, key_colour)
    colour_truth = np.asarray(ss.dequantize(None, coloured.test[:num_colour]))
    pigdm, replaced, grey3 = colourise(colour_model, colour_truth, sample_steps, key_col)
    crmse = lambda x: float(np.sqrt(np.mean((x - colour_truth) ** 2)))
    grey_err = lambda x: float(np.sqrt(np.mean((x.mean(1) - colour_truth.mean(1)) ** 2)))
    col = {"images": int(num_colour), "noise_std": 0.05,
           "rmse": {"PiGDM": crmse(pigdm), "Replacement": crmse(replaced), "grey copied": crmse(grey3)},
           "grey_rmse": {"PiGDM": grey_err(pigdm), "Replacement": grey_err(replaced)}}  # fmt: skip
    print(f"\ncolourisation of {num_colour} grey test digits ({steps} training steps):")
    print(f"{'':>12} | {'colour RMSE':>11} | {'grey-value RMSE':>15}")
    for name in ("PiGDM", "Replacement"):
        print(f"{name:>12} | {col['rmse'][name]:>11.3f} | {col['grey_rmse'][name]:>15.3f}")
    print(f"{'grey copied':>12} | {col['rmse']['grey copied']:>11.3f} | {0.0:>15.3f}")

    report = {"train_steps": steps if checkpoint is None else None, "checkpoint": checkpoint,
              "final_loss": final_loss, "sample_steps": sample_steps, "seed": seed,
              "classifier_test_accuracy": clf_acc, "cfg": rows, "inpainting": inp,
              "classifier_guidance": cg_rows, "classifier_train_steps": classifier_steps,
              "colourisation": col, "jax_backend": jax.default_backend()}  # fmt: skip
    (out / "inverse_digits.json").write_text(json.dumps(report, indent=2))
    plot(
        samples, all_labels, all_scales, scales, truth, mask, completed, out / "inverse_digits.png"
    )
    plot_colour(colour_truth, pigdm, replaced, out / "colourisation.png")
    print(f"\nwrote inverse_digits.json, inverse_digits.png and colourisation.png to {out}")
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


def plot_colour(truth, pigdm, replaced, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(10, len(truth))
    rows = (("grey", np.repeat(truth.mean(1, keepdims=True), 3, 1)), ("PiGDM", pigdm),
            ("Replacement", replaced), ("truth", truth))  # fmt: skip
    fig, axes = plt.subplots(len(rows), n, figsize=(n, len(rows)), squeeze=False)
    for r, (name, imgs) in enumerate(rows):
        for j in range(n):
            axes[r, j].imshow((np.transpose(imgs[j], (1, 2, 0)) + 1) / 2)
            axes[r, j].axis("off")
        axes[r, 0].set_title(name, fontsize=7, loc="left")
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
