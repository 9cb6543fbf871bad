"""`scoresde nll`: held-out negative log-likelihood (continuous data: 2-D toy sets, points and
float images of a `--data` file) or bits/dim (quantised images: digits, mnist, uint8 files).

The divergence of the PF-ODE drift defaults to one that fits the data's size: the exact trace
for 2-D data (2 Jacobian-vector products per evaluation), one Rademacher probe of Hutchinson's
estimator for images (1 instead of 64). The ODE starts at `--t-eps` (default 1e-4, the start of
the documented figures; at least 1e-5, the library's default and the smallest start validated in
float32, the CLI's precision, against float64). A digits checkpoint is evaluated
in the convention it was trained on (its config's `levels`): bits/dim at 17 levels on the grey
levels for `--levels 17` (the digits default of `scoresde train`), at 8 bits on the 8-bit
images for `--levels 256`; mnist and uint8 files at 8 bits. A file's checkpoint is evaluated
on the file's test split (recorded in the checkpoint), with a note when the file changed since;
float images in nats per image in the file's own units (the affine map onto [-1, 1] accounted).
"""

import json
import math
import pathlib

import jax.random as jr

from .._likelihood import (
    certified as _mean_likelihood,
    divergence as _divergence,
    flow as _likelihood,
)
from .._likelihood.log_likelihood import T_EPS
from .._training import recipe_data
from .._training.data_file import DataFileError
from .._training.recipes import data_shape, load_model
from .card import model_card, nfe_card, normal_interval
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
DEFAULT_NUM = 256
# `--divergence auto` takes the exact trace up to this many dimensions per sample.
EXACT_MAX_DIM = 8


def add_parser(subparsers):
    """Register `nll` on an argparse `subparsers` object."""
    p = subparsers.add_parser(
        "nll",
        help="negative log-likelihood (continuous data) or bits/dim (images) under a checkpoint",
        description="Evaluate a checkpoint's likelihood on held-out data by the PF-ODE (float32): "
        "nats per sample for continuous data (2-D toy sets; points and float images of a "
        "--data file, on its recorded test split); bits/dim for quantised images (uniform "
        "dequantisation onto [-1, 1]) in the checkpoint's own convention: for the digits (297 "
        "test images) the 17 grey levels (the digits default, `train --levels 17`) or 8 bits "
        "(`train --levels 256`); 8 bits for mnist (1000 test images) and uint8 files. Writes "
        "nll.json to --out.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", type=pathlib.Path, help="path to checkpoint.eqx")
    p.add_argument(
        "--num",
        type=int,
        default=None,
        help=f"held-out samples (default: {DEFAULT_NUM}, or the whole test split if smaller; at "
        "most the test split: 297 digits, 1000 mnist images, a tenth of a file)",
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


def held_out(config, num: int | None, key):
    """`num` held-out points of the checkpoint's data set (`recipe_data.held_out`: test images
    as the integers its convention dequantises, a file's test rows, fresh draws of a 2-D set;
    `None`: `DEFAULT_NUM` or the whole test split if smaller); `--num` beyond the test split,
    or a data file that is gone or no longer valid, is a usage error. A changed file is a
    note."""
    size = recipe_data.test_size(config)
    if num is None:
        num = DEFAULT_NUM if size is None else min(DEFAULT_NUM, size)
    try:
        with library_warnings_as_notes("nll"):
            return recipe_data.held_out(config, num, key)
    except DataFileError as err:
        raise UsageError(str(err)) from None
    except ValueError as err:
        raise UsageError(f"--{err}") from None  # "--num=N exceeds the digits test split ..."


def describe(config) -> tuple[str, str]:
    """`(what, convention)`: the data set's name (a file's path) and its convention's words
    (" at 17 levels", " at 8 bits" or "")."""
    what = config.data.path if config.data is not None else config.dataset
    levels = config.data_levels
    return what, {None: "", 17: " at 17 levels", 256: " at 8 bits"}[levels]


def run(args) -> int:
    """Execute `scoresde nll` from parsed arguments; returns the exit status."""
    if args.num is not None and args.num < 1:
        raise UsageError(f"--num must be >= 1; got {args.num}")
    if args.probes < 1:
        raise UsageError(f"--probes must be >= 1; got {args.probes}")
    if args.draws < 1:
        raise UsageError(f"--draws must be >= 1; got {args.draws}")
    if args.half_width is not None and not args.half_width > 0:
        raise UsageError(f"--half-width must be > 0; got {args.half_width:g}")
    if args.half_width is not None and args.num is not None and args.num < 2:
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
    if args.half_width is not None and num < 2:
        raise UsageError(f"--half-width needs 2 or more held-out samples; the test split has {num}")
    out = prepare_out(args.out)
    what, convention = describe(config)
    note(
        "nll",
        f"{num} samples of {what}{convention} ({dim} dimensions each); "
        f"divergence: {name}, "
        f"each ODE evaluation costs one score evaluation and {cost}; Dopri5 at "
        + ("rtol = atol = 1e-5" if args.half_width is None else "a planned tolerance")
        + f" from t_eps = {args.t_eps:g}",
    )
    if args.half_width is not None:
        return _certified(args, model, config, data, divergence, name, out, key)
    if not args.no_progress:
        note("nll", "compiling the likelihood ODE (first call) ...")
    show = not args.no_progress
    sharding = local_sharding("nll", args.no_shard)
    common = dict(key=key, divergence=divergence, t_eps=args.t_eps, sharding=sharding)
    levels = config.data_levels
    with library_warnings_as_notes("nll"):
        if levels is not None:
            bpd_fn = _likelihood.bits_per_dim
            r_bpd = bpd_fn(model.sde, model, data, levels=levels, num_repeats=args.draws,
                           progress=show, **common)  # fmt: skip
            values, metric, nfe = r_bpd.bpd, "bits_per_dim", r_bpd.nfe
        else:
            ll_fn = _likelihood.log_likelihood
            r_ll = ll_fn(model.sde, model, data, progress=show, **common)
            values, metric, nfe = -r_ll.log_prob - _log_scale(config), "nll_nats", r_ll.nfe
    report = dict(
        metric=metric,
        **normal_interval(values),
        level=0.95,
        checkpoint=str(args.checkpoint),
        dataset=config.dataset,
        **_data_fields(config, args.draws),
        num=num,
        divergence=name,
        t_eps=args.t_eps,
        **nfe_card(nfe),
        settings=_settings(args, config, num, name, solver="Dopri5, rtol = atol = 1e-5"),
    )
    (out / "nll.json").write_text(json.dumps(report, indent=2))
    spread = ("no interval from one sample" if report["interval"] is None else
              f"+- {report['stderr']:.4f}, 95 % interval [{report['interval'][0]:.4f}, "
              f"{report['interval'][1]:.4f}] over the samples")  # fmt: skip
    print(
        f"{report['metric']} = {report['value']:.4f} ({spread}; {num} held-out samples of "
        f"{what}{convention}, {name} divergence, mean NFE {report['nfe_mean']:.0f}) -> "
        f"{out / 'nll.json'}"
    )
    return 0


def _settings(args, config, num: int, divergence: str, *, solver: str) -> dict:
    """The metric card's settings of an `nll` figure (`scoresde._cli.card`)."""
    return dict(
        **model_card(args.checkpoint, config),
        num=num,
        seed=args.seed,
        solver=solver,
        t_eps=args.t_eps,
        divergence=divergence,
        probes=args.probes,
        dequantisation=(
            None if config.data_levels is None else f"uniform, {args.draws} draw(s) per item"
        ),  # fmt: skip
    )


def _log_scale(config) -> float:
    """Nats per sample between the model's space and the data's units (float images of a file:
    the affine map onto [-1, 1]); 0 for other data."""
    return 0.0 if config.data is None else config.data.log_scale()


def _data_fields(config, draws: int) -> dict:
    """The report's fields that say which data and convention were evaluated."""
    fields: dict = {}
    if config.data is not None:
        fields.update(data_file=config.data.path, data_sha256=config.data.sha256,
                      num_test=config.data.num_test, split_seed=config.seed)  # fmt: skip
        if config.data.data_range is not None:
            fields.update(data_range=list(config.data.data_range),
                          nats_in="the file's units (the map onto [-1, 1] accounted)")  # fmt: skip
    if config.data_levels is not None:
        fields.update(levels=config.data_levels, draws=draws)
    return fields


def _certified(args, model, config, data, divergence, name, out, key) -> int:
    """`scoresde nll --half-width H`: the planned two-level estimate of the held-out set's mean
    (bits/dim for quantised images, nats otherwise)."""
    digits = config.data_levels is not None
    what, convention = describe(config)
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
                    model.sde,
                    model,
                    data,
                    levels=config.data_levels,
                    num_repeats=args.draws,
                    **common,
                )
                nats, value, low, high = est.nats, est.bpd, est.low, est.high
                errors = (est.stderr, est.stderr_probes, est.stderr_bias)
            else:
                nats = _mean_likelihood.estimate_mean_log_likelihood(
                    model.sde, model, data, **common
                )
                shift = _log_scale(config)
                value, low, high = -nats.mean - shift, -nats.high - shift, -nats.low - shift
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
        **_data_fields(config, args.draws),
        num=int(data.shape[0]),
        divergence=name,
        probes=args.probes,
        t_eps=args.t_eps,
        interval_kind="certified: the held-out mean's 95 % interval, probe noise and solver "
        "bias included (cheap solves corrected by tight re-solves)",
        settings=_settings(
            args,
            config,
            int(data.shape[0]),
            name,
            solver=f"Dopri5, planned: cheap tol {nats.cheap_tol:g} and tight re-solves",
        ),  # fmt: skip
    )
    (out / "nll.json").write_text(json.dumps(report, indent=2))
    print(
        f"{report['metric']} = {report['value']:.4f}, 95 % interval [{low:.4f}, {high:.4f}] "
        f"(the mean of {report['num']} held-out samples of {what}{convention}; noise "
        f"+-{1.96 * report['stderr_noise']:.4f}, solver bias +-{1.96 * report['stderr_bias']:.4f}; "
        f"cheap tol {report['cheap_tol']:g}, {report['num_tight']} tight re-solves, "
        f"{report['total_nfe']} evaluations) -> {out / 'nll.json'}"
    )
    return 0
