"""Training-step throughput: `scoresde.fit` against a minimal hand-written eqx + optax loop.

Both run the same model, loss (`DenoisingScoreMatching`, sigma^2 weighting), optimiser (Adam with
warm-up and clipping) and batch size; the hand-written loop does one `eqx.filter_jit` step per
Python iteration on a batch already on the device, while `fit` draws its batches inside the
compiled step, keeps an EMA of the weights and fuses `steps_per_call` steps per call. Compile
and run are timed apart (a first call each, then `--repeats` interleaved rounds of both, best of
each kept; `ratio_rounds` gives the round-by-round ratio's min / median / max). The figure is
the RATIO of steps/s (library / hand-written), measured in the same run; the goal is >= 1/1.1.

Optionally (`--bpd-budget SECONDS`) trains the digits U-Net for a fixed wall-clock budget and
reports its test bits/dim (`scoresde.bits_per_dim`: PF-ODE, Hutchinson, uniform dequantisation).

    python benchmarks/training.py            # full
    python benchmarks/training.py --quick    # < 1 minute
"""

import argparse
import json
import math
import sys
import time

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import RESULTS, interleaved, metadata, ratio

import scoresde as ss


def _case(name, quick):
    sde = ss.VPSDE()
    if name == "mlp-2d":
        model = ss.EpsPrediction(ss.MLPScoreNet(2, width=128, depth=3, key=jr.key(0)), sde)
        data = ss.gaussian_mixture(jr.key(1), 20_000)
        batch_size, steps = 256, (500 if quick else 5000)
        preprocess = None
    elif name == "unet-digits":
        base = 8 if quick else 16
        net = ss.UNet(
            (1, 8, 8), base_channels=base, channel_mults=(1, 2), num_heads=2, key=jr.key(0)
        )
        model = ss.EpsPrediction(net, sde)
        data = jnp.asarray(ss.load_digits().train)
        batch_size, steps = 64, (20 if quick else 200)
        preprocess = ss.dequantize
    else:
        raise ValueError(name)
    return sde, model, data, batch_size, steps, preprocess


def _library_run(model, loss, data, batch_size, steps, preprocess, optimizer):
    kwargs = dict(
        key=jr.key(2), steps=steps, batch_size=batch_size, optimizer=optimizer,
        preprocess=preprocess, progress=False,
    )  # fmt: skip
    return lambda: ss.fit(model, loss, data, **kwargs)


def _handwritten_run(model, loss, data, batch_size, steps, preprocess, optimizer):
    batch = data[:batch_size]
    if preprocess is not None:
        batch = preprocess(jr.key(3), batch)

    @eqx.filter_jit
    def step(model, opt_state, batch, key):
        value, grads = eqx.filter_value_and_grad(loss)(model, batch, key)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, value

    def run():
        m, opt_state = model, optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        key = jr.key(2)
        for i in range(steps):
            m, opt_state, value = step(m, opt_state, batch, jr.fold_in(key, i))
        return m

    return run


def _digits_bpd(budget_s, steps_per_chunk=50):
    """Train the digits U-Net for `budget_s` seconds of wall clock; return test bits/dim."""
    sde, model, data, batch_size, _, _ = _case("unet-digits", False)
    loss = ss.DenoisingScoreMatching(sde, ss.LikelihoodWeighting(), ss.ImportanceTime(True), 1e-5)
    optimizer = ss.adam_with_warmup(1e-3)
    digits = ss.load_digits()
    state, done, t0 = None, 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s:
        res = ss.fit(model, loss, data, key=jr.key(7), steps=steps_per_chunk,
                     batch_size=batch_size, optimizer=optimizer, preprocess=ss.dequantize,
                     state=state, progress=False)  # fmt: skip
        state, done = res.state, done + steps_per_chunk
    train_s = time.perf_counter() - t0
    result = ss.bits_per_dim(
        sde, state.ema_model, jnp.asarray(digits.test), key=jr.key(8), rtol=1e-4, atol=1e-4
    )
    bpd = np.asarray(result.bpd)
    return {
        "budget_s": budget_s,
        "train_s": train_s,
        "steps": done,
        "test_bpd": float(np.mean(bpd)),
        "test_bpd_se": float(np.std(bpd) / math.sqrt(bpd.size)),
        "num_test": int(bpd.size),
        "loss": "DSM, likelihood weighting, importance-sampled t, t_eps=1e-5",
        "likelihood": "ss.bits_per_dim: uniform dequantisation, PF-ODE (its default solver), "
        "rtol=atol=1e-4, Hutchinson divergence (1 probe), t_eps=1e-5",
    }


def main(quick=False, repeats=3, bpd_budget=None):
    rows = []
    for name in ("mlp-2d", "unet-digits"):
        sde, model, data, batch_size, steps, preprocess = _case(name, quick)
        loss = ss.DenoisingScoreMatching(sde)
        optimizer = ss.adam_with_warmup(1e-3)
        case = (model, loss, data, batch_size, steps, preprocess, optimizer)
        outs, firsts, times = interleaved(
            {"library": _library_run(*case), "handwritten": _handwritten_run(*case)}, repeats
        )
        lib_first, hand_first = firsts["library"], firsts["handwritten"]
        lib_time, hand_time = min(times["library"]), min(times["handwritten"])
        lib_loss = float(np.mean(outs["library"].losses[-max(1, steps // 10) :]))
        row = {
            "case": name,
            "steps": steps,
            "batch_size": batch_size,
            "params": ss.num_params(model),
            "library_steps_per_s": steps / lib_time,
            "handwritten_steps_per_s": steps / hand_time,
            "ratio_library_over_handwritten": hand_time / lib_time,
            "ratio_rounds": ratio(times["handwritten"], times["library"]),
            "library_first_call_s": lib_first,
            "handwritten_first_call_s": hand_first,
            "library_final_loss": lib_loss,
        }
        rows.append(row)
        print(
            f"{name:12s} params={row['params']:7d} library {row['library_steps_per_s']:8.1f} "
            f"steps/s  hand-written {row['handwritten_steps_per_s']:8.1f} steps/s  "
            f"ratio {row['ratio_library_over_handwritten']:.3f}  "
            f"(first call {lib_first:.1f}s vs {hand_first:.1f}s)",
            flush=True,
        )
    out = {
        "benchmark": "training",
        **metadata(quick=quick, repeats=repeats, optax=optax.__version__),
        "rows": rows,
    }
    if bpd_budget:
        out["digits_bpd"] = _digits_bpd(bpd_budget)
        d = out["digits_bpd"]
        print(f"digits U-Net after {d['train_s']:.0f}s ({d['steps']} steps): test bits/dim "
              f"{d['test_bpd']:.3f} +- {d['test_bpd_se']:.3f}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("training_quick.json" if quick else "training.json")
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small step counts (< 1 minute)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bpd-budget", type=float, default=None,
                        help="also train the digits U-Net for this many seconds and report bpd")  # fmt: skip
    args = parser.parse_args()
    main(quick=args.quick, repeats=args.repeats, bpd_budget=args.bpd_budget)
    sys.exit(0)
