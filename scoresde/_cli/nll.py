"""`scoresde nll`: held-out negative log-likelihood (2-D data) or bits/dim (digits).

The divergence of the PF-ODE drift defaults to one that fits the data's size: the exact trace
for 2-D data (2 Jacobian-vector products per evaluation), one Rademacher probe of Hutchinson's
estimator for images (1 instead of 64). The ODE starts at `--t-eps` (default 1e-4, the start of
the documented figures; at least 1e-5, the library's default and the smallest start validated in
float32, the CLI's precision, against float64). A digits checkpoint is evaluated
in the convention it was trained on (its config's `levels`): bits/dim at 17 levels on the grey
levels for `--levels 17` (the digits default of `scoresde train`), at 8 bits on the 8-bit
images for `--levels 256`.
"""

import json
import math
import pathlib

import jax.numpy as jnp
import jax.random as jr

from .._likelihood import (
    certified as _mean_likelihood,
    divergence as _divergence,
    flow as _likelihood,
)
from .._likelihood.log_likelihood import T_EPS
from .._training import recipes
from .._training.recipes import data_shape, load_model
from .common import (
    HelpFormatter,
    UsageError,
    add_no_progress,
    add_no_shard,
    add_out,
    library_warnings_as_notes,
    local_sharding,
    note,
    prepare_out,
)

DIVERGENCES = ("auto", "exact", "hutchinson")
# `--t-eps`: the default start of the likelihood ODE (the docs' figures are measured there), and
# the smallest one accepted: the library's default, below which float32 (the CLI's precision) is
# not validated against float64 and `log_likelihood` warns.
DEFAULT_T_EPS = 1e-4
MIN_T_EPS = T_EPS
# `--divergence auto` takes the exact trace up to this many dimensions per sample.
EXACT_MAX_DIM = 8


def add_parser(subparsers):
    """Register `nll` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "nll",
        help="negative log-likelihood (2-D data) or bits/dim (digits) under a checkpoint",
        description="Evaluate a checkpoint's likelihood on held-out data by the PF-ODE (float32): "
        "nats per sample for 2-D toy sets; bits/dim for the digits (297 test images, uniform "
        "dequantisation onto [-1, 1]) in the checkpoint's own convention: the 17 grey levels "
        "(the digits default, `train --levels 17`) or 8 bits (`train --levels 256`). Writes "
        "nll.json to --out.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx")
    p.add_argument(
        "--num", type=int, default=256, help="held-out samples (digits: at most 297 test images)"
    )
    p.add_argument(
        "--divergence",
        choices=DIVERGENCES,
        default="auto",
        help=f"auto: exact up to {EXACT_MAX_DIM} dimensions (2-D data), else hutchinson; "
        "exact: the full Jacobian's trace (one product per dimension); hutchinson: one "
        "Rademacher probe (unbiased, one product)",
    )
    p.add_argument(
        "--t-eps",
        type=float,
        default=DEFAULT_T_EPS,
        help=f"start time of the likelihood ODE (report it with the figure); at least "
        f"{MIN_T_EPS:g}, the smallest start at which float32, the CLI's precision, is "
        "validated against float64",
    )
    p.add_argument(
        "--probes",
        type=int,
        default=1,
        help="Rademacher probes per evaluation of the hutchinson divergence",
    )
    p.add_argument(
        "--draws",
        type=int,
        default=1,
        help="digits: dequantisation draws per image (each one more solve; their mean is the "
        "image's figure)",
    )
    p.add_argument(
        "--half-width",
        type=float,
        default=None,
        help="certify the mean of the held-out set to +- this (bits/dim for the digits, nats "
        "otherwise) at 95 %%: cheap solves planned from a pilot, a bias correction from tight "
        "re-solves of a random subset, and the probe and dequantisation noise measured; "
        "without it, one solve per sample at 1e-5 with the data's spread as the error bar",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (data, probes)")
    add_out(p, "nll")
    add_no_progress(p)
    add_no_shard(p)
    p.set_defaults(func=run)
    return p


def choose_divergence(name: str, dim: int, probes: int = 1) -> tuple[str, object, str]:
    """`(name, estimator, cost)` for `--divergence name` on data of `dim` dimensions per sample
    (`probes` Rademacher probes for hutchinson); `cost` says how many Jacobian-vector products
    each ODE evaluation takes."""
    if name == "auto":
        name = "exact" if dim <= EXACT_MAX_DIM else "hutchinson"
    if name == "exact":
        if dim > 1024:
            raise UsageError(f"--divergence exact: {dim} dimensions is too many (at most 1024)")
        return name, _divergence.ExactDivergence(), f"{dim} Jacobian-vector products"
    if probes == 1:
        return name, _divergence.Hutchinson(), "1 Jacobian-vector product (1 Rademacher probe)"
    return (
        name,
        _divergence.Hutchinson(probes),
        f"{probes} Jacobian-vector products ({probes} Rademacher probes)",
    )


def held_out(config, num: int, key):
    """`num` held-out points of the checkpoint's data set (`recipes.held_out`: digits test
    images as the integers its convention dequantises, fresh draws of a 2-D set); `--num`
    beyond the digits' test split is a usage error."""
    try:
        return recipes.held_out(config, num, key)
    except ValueError as err:
        raise UsageError(f"--{err}") from None  # "--num=N exceeds the digits test split ..."


def run(args) -> int:
    """Execute `scoresde nll` from parsed arguments; returns the exit status."""
    if args.num < 1:
        raise UsageError(f"--num must be >= 1; got {args.num}")
    if args.probes < 1:
        raise UsageError(f"--probes must be >= 1; got {args.probes}")
    if args.draws < 1:
        raise UsageError(f"--draws must be >= 1; got {args.draws}")
    if args.half_width is not None and not args.half_width > 0:
        raise UsageError(f"--half-width must be > 0; got {args.half_width:g}")
    if args.half_width is not None and args.num < 2:
        raise UsageError("--half-width needs --num 2 or more")
    if not MIN_T_EPS <= args.t_eps < 1:
        raise UsageError(
            f"--t-eps must lie in [{MIN_T_EPS:g}, 1) (float32, the CLI's precision, is not "
            f"validated below {MIN_T_EPS:g}); got {args.t_eps:g}"
        )
    model, config = load_model(args.checkpoint)
    key = jr.key(args.seed)
    data = held_out(config, args.num, key)
    num = int(data.shape[0])
    dim = math.prod(data_shape(config))
    name, divergence, cost = choose_divergence(args.divergence, dim, args.probes)
    out = prepare_out(args.out)
    convention = ""
    if config.dataset == "digits":
        convention = " at 17 levels" if config.levels == 17 else " at 8 bits"
    note(
        "nll",
        f"{num} samples of {config.dataset}{convention} ({dim} dimensions each); "
        f"divergence: {name}, "
        f"each ODE evaluation costs one score evaluation and {cost}; Dopri5 at "
        + ("rtol = atol = 1e-5" if args.half_width is None else "a planned tolerance")
        + f" from t_eps = {args.t_eps:g}",
    )
    if args.half_width is not None:
        return _certified(args, model, config, data, divergence, name, out, convention, key)
    if not args.no_progress:
        note("nll", "compiling the likelihood ODE (first call) ...")
    show = not args.no_progress
    sharding = local_sharding("nll", args.no_shard)
    common = dict(key=key, divergence=divergence, t_eps=args.t_eps, sharding=sharding)
    with library_warnings_as_notes("nll"):
        if config.dataset == "digits":
            bpd_fn = _likelihood.bits_per_dim
            r_bpd = bpd_fn(model.sde, model, data, levels=config.levels, num_repeats=args.draws,
                           progress=show, **common)  # fmt: skip
            values, metric, nfe = r_bpd.bpd, "bits_per_dim", r_bpd.nfe
        else:
            ll_fn = _likelihood.log_likelihood
            r_ll = ll_fn(model.sde, model, data, progress=show, **common)
            values, metric, nfe = -r_ll.log_prob, "nll_nats", r_ll.nfe
    report = dict(
        metric=metric,
        value=float(jnp.mean(values)),
        stderr=float(jnp.std(values) / jnp.sqrt(values.shape[0])),
        checkpoint=str(args.checkpoint),
        dataset=config.dataset,
        **({"levels": config.levels, "draws": args.draws} if config.dataset == "digits" else {}),
        num=num,
        divergence=name,
        t_eps=args.t_eps,
        mean_nfe=float(jnp.mean(nfe)),
    )
    (out / "nll.json").write_text(json.dumps(report, indent=2))
    print(
        f"{report['metric']} = {report['value']:.4f} +- {report['stderr']:.4f} "
        f"({num} held-out samples of {config.dataset}{convention}, {name} divergence, mean NFE "
        f"{report['mean_nfe']:.0f}) -> {out / 'nll.json'}"
    )
    return 0


def _certified(args, model, config, data, divergence, name, out, convention, key) -> int:
    """`scoresde nll --half-width H`: the planned two-level estimate of the held-out set's mean
    (bits/dim for the digits, nats otherwise)."""
    digits = config.dataset == "digits"
    common = dict(
        key=key,
        divergence=divergence,
        t_eps=args.t_eps,
        half_width=args.half_width,
        population=False,
        sharding=local_sharding("nll", args.no_shard),
    )
    note("nll", f"planning for +-{args.half_width:g} at 95 % (pilot, then cheap and tight solves)")
    with library_warnings_as_notes("nll"):
        try:
            if digits:
                est = _mean_likelihood.estimate_bits_per_dim(
                    model.sde, model, data, levels=config.levels, num_repeats=args.draws, **common
                )
                nats, value, low, high = est.nats, est.bpd, est.low, est.high
                errors = (est.stderr, est.stderr_probes, est.stderr_bias)
            else:
                nats = _mean_likelihood.estimate_mean_log_likelihood(
                    model.sde, model, data, **common
                )
                value, low, high = -nats.mean, -nats.high, -nats.low
                errors = (nats.stderr, nats.stderr_probes, nats.stderr_bias)
        except ValueError as err:
            raise UsageError(str(err)) from None
    report = dict(
        metric="bits_per_dim" if digits else "nll_nats",
        value=float(value),
        stderr=float(errors[0]),
        interval=[float(low), float(high)],
        level=0.95,
        stderr_noise=float(errors[1]),
        stderr_bias=float(errors[2]),
        cheap_tol=nats.cheap_tol,
        num_tight=int(nats.tight_indices.shape[0]),
        total_nfe=int(nats.total_nfe),
        checkpoint=str(args.checkpoint),
        dataset=config.dataset,
        **({"levels": config.levels, "draws": args.draws} if digits else {}),
        num=int(data.shape[0]),
        divergence=name,
        probes=args.probes,
        t_eps=args.t_eps,
    )
    (out / "nll.json").write_text(json.dumps(report, indent=2))
    print(
        f"{report['metric']} = {report['value']:.4f}, 95 % interval [{low:.4f}, {high:.4f}] "
        f"(the mean of {report['num']} held-out samples of {config.dataset}{convention}; noise "
        f"+-{1.96 * report['stderr_noise']:.4f}, solver bias +-{1.96 * report['stderr_bias']:.4f}; "
        f"cheap tol {report['cheap_tol']:g}, {report['num_tight']} tight re-solves, "
        f"{report['total_nfe']} evaluations) -> {out / 'nll.json'}"
    )
    return 0
