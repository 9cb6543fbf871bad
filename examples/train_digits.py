"""Train a small U-Net on scikit-learn's 8x8 digits (built in, no download) and sample it.

    python examples/train_digits.py             # a few minutes on CPU with the defaults
    python examples/train_digits.py --smoke     # seconds: a tiny U-Net, a few steps

Uses 8-bit images scaled to [-1, 1] with uniform dequantisation, eps-prediction on the VP SDE,
and writes `digits_samples.png` and `digits_checkpoint.eqx` (+ its JSON sidecar) to `--out`
(default `scoresde-out`).
"""

import argparse
import pathlib

import diffrax as dfx
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import scoresde as ss

# --smoke: the same code path at toy sizes (checks that the script runs, not that it trains).
SMOKE = dict(steps=5, batch_size=8, base_channels=4, num_samples=4, sample_steps=4)


def main(steps=1000, batch_size=64, base_channels=16, learning_rate=1e-3, num_samples=64,
         sample_steps=100, seed=0, out="scoresde-out"):  # fmt: skip
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key_init, key_train, key_sample = jr.split(jr.key(seed), 3)
    digits = ss.load_digits()
    sde = ss.VPSDE()
    net = ss.UNet((1, 8, 8), base_channels=base_channels, channel_mults=(1, 2), num_heads=2,
                  key=key_init)  # fmt: skip
    model = ss.EpsPrediction(net, sde)
    print(f"{ss.num_params(model)} parameters")
    result = ss.fit(
        model, ss.DenoisingScoreMatching(sde, time_sampler=ss.UniformTime(stratified=True)),
        jnp.asarray(digits.train), key=key_train, steps=steps, batch_size=batch_size,
        optimizer=ss.adam_with_warmup(learning_rate, decay_steps=max(steps, 101)),
        preprocess=ss.dequantize,
    )  # fmt: skip
    hyper = {"base_channels": base_channels, "channel_mults": [1, 2], "steps": steps}
    ss.save(out / "digits_checkpoint.eqx", result.ema_model, hyperparameters=hyper, ema=True)
    samples = ss.sample_ode(
        sde, result.ema_model, key=key_sample, shape=(num_samples, 1, 8, 8), solver=dfx.Heun(),
        steps=sample_steps, denoise=True,
    ).x  # fmt: skip
    images = np.asarray(ss.quantize(samples))
    print(f"final training loss {result.losses[-50:].mean():.4f}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        side = int(np.ceil(np.sqrt(num_samples)))
        fig, axes = plt.subplots(side, side, figsize=(side, side), squeeze=False)
        for ax, img in zip(
            axes.ravel(), list(images) + [None] * (side * side - num_samples), strict=True
        ):
            ax.axis("off")
            if img is not None:
                ax.imshow(img[0], cmap="gray_r", vmin=0, vmax=255)
        fig.savefig(out / "digits_samples.png", dpi=80)
        plt.close(fig)
        print(f"wrote {out / 'digits_samples.png'}")
    except ImportError:
        pass
    return result, images


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a fast end-to-end check")
    parser.add_argument("--out", default="scoresde-out", help="folder for the PNG and checkpoint")
    args = parser.parse_args()
    main(out=args.out, **(SMOKE if args.smoke else dict(steps=args.steps)))
