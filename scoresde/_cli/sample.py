"""`scoresde sample`: draw samples from a `scoresde train` checkpoint; write them and a plot."""

import pathlib

from .common import UsageError, data_shape, load_model

SAMPLERS = ("ode", "sde", "dpm++2m", "pc")


def add_parser(subparsers):
    """Register `sample` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "sample",
        help="draw samples from a trained checkpoint",
        description="Draw samples from a checkpoint written by `scoresde train`; writes "
        "samples.npy and samples.png to --out.",
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx")
    p.add_argument("--num", type=int, default=1024, help="number of samples")
    p.add_argument(
        "--sampler",
        choices=SAMPLERS,
        default="dpm++2m",
        help="ode: adaptive Tsit5; sde: Euler-Maruyama; dpm++2m: DPM-Solver++ 2M; "
        "pc: reverse diffusion + Langevin corrector",
    )
    p.add_argument("--steps", type=int, default=50, help="steps of fixed-step samplers")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("scoresde-out"))
    p.set_defaults(func=run)
    return p


def draw(model, config, sampler, num, steps, key):
    """`num` samples of `model` by `sampler` (one of `SAMPLERS`)."""
    import diffrax as dfx

    from .. import _pc, _sample, _solvers

    shape = (num, *data_shape(config))
    sde = model.sde
    if sampler == "ode":
        return _sample.sample_ode(sde, model, key=key, shape=shape, solver=dfx.Tsit5())
    if sampler == "sde":
        return _sample.sample_sde(sde, model, key=key, shape=shape, steps=steps, grid="log_snr")
    if sampler == "dpm++2m":
        return _sample.sample_ode(
            sde,
            model,
            key=key,
            shape=shape,
            steps=steps,
            solver=_solvers.DPMSolverPP2M(),
            grid="log_snr",
        )
    return _pc.sample_pc(sde, model, key=key, shape=shape, steps=steps)


def run(args) -> int:
    """Execute `scoresde sample` from parsed arguments; returns the exit status."""
    import jax.random as jr
    import numpy as np

    if args.num < 1 or args.steps < 1:
        raise UsageError("--num and --steps must be >= 1")
    model, config = load_model(args.checkpoint)
    result = draw(model, config, args.sampler, args.num, args.steps, jr.key(args.seed))
    args.out.mkdir(parents=True, exist_ok=True)
    x = np.asarray(result.x)
    np.save(args.out / "samples.npy", x)
    plot_samples(x, args.out / "samples.png")
    print(
        f"{args.num} samples ({args.sampler}, mean NFE {float(np.mean(result.nfe)):.0f}) -> "
        f"{args.out / 'samples.npy'}, {args.out / 'samples.png'}"
    )
    return 0


def plot_samples(x, path):
    """A scatter plot (2-D data) or a grid of the first 64 images."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    import numpy as np

    if x.ndim == 2:
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.5)
        ax.set_aspect("equal")
    else:
        n = min(64, x.shape[0])
        cols = 8
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.axis("off")
            if i < n:
                ax.imshow(np.clip(x[i, 0], -1, 1), cmap="gray", vmin=-1, vmax=1)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
