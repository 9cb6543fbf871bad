"""`scoresde nll`: held-out negative log-likelihood (2-D data) or bits/dim (digits)."""

import pathlib

from . import train
from .common import UsageError, load_model


def add_parser(subparsers):
    """Register `nll` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "nll",
        help="negative log-likelihood (2-D data) or bits/dim (digits) under a checkpoint",
        description="Evaluate a checkpoint's likelihood on held-out data by the PF-ODE: nats per "
        "sample for 2-D toy sets; bits/dim for the 8-bit digits (8 bits mapped to [-1, 1], uniform "
        "dequantisation). Writes nll.json to --out.",
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx")
    p.add_argument("--num", type=int, default=256, help="number of held-out samples")
    p.add_argument("--divergence", choices=("exact", "hutchinson"), default="exact")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=pathlib.Path, default=pathlib.Path("scoresde-out"))
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """Execute `scoresde nll` from parsed arguments; returns the exit status."""
    import json

    import jax.numpy as jnp
    import jax.random as jr

    from .. import _data, _divergence, _likelihood

    if args.num < 1:
        raise UsageError(f"--num must be >= 1; got {args.num}")
    model, config = load_model(args.checkpoint)
    key = jr.key(args.seed)
    divergence = (
        _divergence.ExactDivergence() if args.divergence == "exact" else _divergence.Hutchinson()
    )
    if config.dataset == "digits":
        k = jnp.asarray(_data.load_digits().test[: args.num])
        r = _likelihood.bits_per_dim(model.sde, model, k, key=key, divergence=divergence)
        report = dict(
            metric="bits_per_dim",
            value=float(jnp.mean(r.bpd)),
            stderr=float(jnp.std(r.bpd) / jnp.sqrt(r.bpd.shape[0])),
        )
    else:
        x = train.TOY_DATASETS[config.dataset](jr.fold_in(key, 7), args.num)
        r = _likelihood.log_likelihood(model.sde, model, x, key=key, divergence=divergence)
        nll = -r.log_prob
        report = dict(
            metric="nll_nats",
            value=float(jnp.mean(nll)),
            stderr=float(jnp.std(nll) / jnp.sqrt(nll.shape[0])),
        )
    report.update(
        checkpoint=str(args.checkpoint),
        dataset=config.dataset,
        num=args.num,
        divergence=args.divergence,
        mean_nfe=float(jnp.mean(r.nfe)),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nll.json").write_text(json.dumps(report, indent=2))
    print(
        f"{report['metric']} = {report['value']:.4f} +- {report['stderr']:.4f} "
        f"({args.num} held-out samples of {config.dataset}) -> {args.out / 'nll.json'}"
    )
    return 0
