"""Train a score model on a 2-D toy set, then sample it with the probability-flow ODE.

    python examples/train_toy2d.py                      # 8-Gaussian ring, ~1-2 minutes on CPU
    python examples/train_toy2d.py --dataset moons --steps 4000
    python examples/train_toy2d.py --smoke              # seconds: a few training steps

Writes `toy2d_samples.png` (data vs model samples) and `toy2d_checkpoint.eqx` (+ its JSON
sidecar) to `--out` (default `scoresde-out`).
"""

import argparse
import pathlib

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr

import scoresde as ss

DATASETS = {
    "mixture": ss.gaussian_mixture,
    "moons": ss.two_moons,
    "rings": ss.rings,
    "swissroll": ss.swiss_roll,
    "checkerboard": ss.checkerboard,
}
# --smoke: the same code path at toy sizes (checks that the script runs, not that it trains).
SMOKE = dict(steps=50, num_train=1000, num_samples=256)


def main(dataset="mixture", steps=3000, num_train=20_000, num_samples=2000, seed=0,
         out="scoresde-out"):  # fmt: skip
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key_data, key_train, key_sample = jr.split(jr.key(seed), 3)
    data = DATASETS[dataset](key_data, num_train)
    result = ss.train_toy2d(key=key_train, data=data, steps=steps, progress=True)
    model = result.ema_model
    ss.save(out / "toy2d_checkpoint.eqx", model,
            hyperparameters={"dataset": dataset, "steps": steps}, ema=True)  # fmt: skip
    samples = ss.sample_ode(
        model.sde, model, key=key_sample, shape=(num_samples, 2), solver=dfx.Tsit5(),
        stepsize_controller=dfx.PIDController(rtol=1e-4, atol=1e-4),
    ).x  # fmt: skip
    print(f"final training loss {result.losses[-100:].mean():.4f}")
    print(f"data mean {jnp.mean(data, 0)}, std {jnp.std(data, 0)}")
    print(f"samples mean {jnp.mean(samples, 0)}, std {jnp.std(samples, 0)}")
    if dataset == "mixture":
        dist = ss.toy_mixture()
        print(f"mean log p(samples) under the true mixture: "
              f"{float(jnp.mean(jax.vmap(dist.log_prob)(samples))):.3f} "
              f"(data: {float(jnp.mean(jax.vmap(dist.log_prob)(data[:num_samples]))):.3f})")  # fmt: skip
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
        axes[0].scatter(*data[:num_samples].T, s=2)
        axes[0].set_title(f"data ({dataset})")
        axes[1].scatter(*samples.T, s=2, color="C1")
        axes[1].set_title("PF-ODE samples")
        fig.tight_layout()
        fig.savefig(out / "toy2d_samples.png", dpi=100)
        plt.close(fig)
        print(f"wrote {out / 'toy2d_samples.png'}")
    except ImportError:
        pass
    return result, samples


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mixture")
    parser.add_argument("--steps", type=int, default=3000, help="training steps")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a fast end-to-end check")
    parser.add_argument("--out", default="scoresde-out", help="folder for the PNG and checkpoint")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else dict(steps=args.steps)
    main(dataset=args.dataset, out=args.out, **sizes)
