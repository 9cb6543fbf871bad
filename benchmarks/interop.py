"""The converted diffusers U-Net (`ss.interop.from_diffusers`) against torch's, per evaluation.

A random-weight `UNet2DModel` the size of `google/ddpm-cifar10-32` (block_out_channels
128/256/256/256, attention at 16x16, 2 layers per block, 35.7M parameters; float32, 3x32x32) is
saved with `save_pretrained` and read back by `from_diffusers`; the two then evaluate the same
random batch at batch sizes 1 and 64 on the same CPU, in interleaved rounds (torch under
`torch.inference_mode()`, with its default thread count; JAX jitted over `jax.vmap`). Reported:
seconds per evaluation of the whole batch (min / median / max over rounds), the round-by-round
ratio JAX / torch, and the outputs' largest relative difference.

    python benchmarks/interop.py              # ~3 minutes on 2 cores
    python benchmarks/interop.py --quick      # batch 1 only, 3 rounds

Needs torch and diffusers (`pip install -e '.[interop]'`). Writes
`benchmarks/results/interop.json` (`interop_quick.json` with `--quick`).
"""

import argparse
import pathlib
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common  # noqa: E402

import scoresde as ss  # noqa: E402

CIFAR10_32 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=2,
    attention_head_dim=None,
    flip_sin_to_cos=False,
    freq_shift=1,
    downsample_padding=0,
    norm_eps=1e-6,
)


def main(batches=(1, 64), rounds=(10, 3)):
    import diffusers
    import torch

    torch.manual_seed(0)
    model = diffusers.UNet2DModel(**CIFAR10_32).eval()
    params = sum(p.numel() for p in model.parameters())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        (pathlib.Path(folder) / "scheduler_config.json").write_text(
            '{"_class_name": "DDPMScheduler", "num_train_timesteps": 1000}'
        )
        trained = ss.interop.from_diffusers(folder)
    unet = trained.model.net.fn
    run = jax.jit(jax.vmap(unet))
    for batch, n_rounds in zip(batches, rounds, strict=True):
        rng = np.random.default_rng(batch)
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        t = rng.uniform(0, 999, batch).astype(np.float32)
        xj, tj = jnp.asarray(x), jnp.asarray(t)
        xt, tt = torch.from_numpy(x), torch.from_numpy(t)

        def torch_eval(xt=xt, tt=tt):
            with torch.inference_mode():
                return model(xt, tt).sample.numpy()

        outs, firsts, times = _common.interleaved(
            {"jax": lambda xj=xj, tj=tj: run(tj, xj), "torch": torch_eval}, n_rounds
        )
        ref = outs["torch"]
        rel = float(np.max(np.abs(np.asarray(outs["jax"]) - ref)) / np.max(np.abs(ref)))
        row = dict(
            batch=batch,
            rounds=n_rounds,
            jax_seconds=_common.spread(times["jax"]),
            torch_seconds=_common.spread(times["torch"]),
            ratio_jax_over_torch=_common.ratio(times["jax"], times["torch"]),
            jax_first_call_seconds=firsts["jax"],
            max_relative_difference=rel,
        )
        rows.append(row)
        print(
            f"batch {batch:3d}: jax {row['jax_seconds']['median']:.4f} s, torch "
            f"{row['torch_seconds']['median']:.4f} s, ratio jax/torch median "
            f"{row['ratio_jax_over_torch']['median']:.2f} "
            f"[{row['ratio_jax_over_torch']['min']:.2f}, {row['ratio_jax_over_torch']['max']:.2f}]"
            f", max rel diff {rel:.1e}"
        )
    meta = _common.metadata(config=CIFAR10_32, parameters_count=int(params))
    meta["versions"].update(torch=torch.__version__, diffusers=diffusers.__version__)
    meta["torch_threads"] = torch.get_num_threads()
    return dict(**meta, rows=rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        _common.write("interop_quick", main(batches=(1,), rounds=(3,)))
    else:
        _common.write("interop", main())
