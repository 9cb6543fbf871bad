"""Variants of the adaptive reverse-SDE controller ("Gotta Go Fast", `ss.sample_sde_adaptive`),
prototyped here (not in the library): evaluations per sample to bring sliced W2 within the
two-sample floor band, against uniform-grid Euler-Maruyama, on the problems and metric of
`benchmarks/adaptive_sde.py` (aniso64 and the rotated kappa = 625 Gaussian, VP SDE, exact scores,
t_eps = 1e-3, Tweedie step, n = 4096, key 0, atol = 0.156 rtol).

A variant is `variable:p`:

- `variable`: the variable the step h is taken in: `t` (the library's) or `log_snr` (the half
  log-SNR lambda, increasing toward t_eps; t = `sde.log_snr_inverse(lambda)`); the EM /
  improved-Euler pair, the Brownian tree (in t) and the error norm are unchanged;
- `p`: the tolerance divided by alpha(t)^p (alpha the VP signal scale at the step's end): p > 0
  loosens it where the state is nearly noise (alpha(1) = 0.0067), p = 0 is the library's.

    python benchmarks/adaptive_sde_variants.py --problems aniso64 rot625 \
        --variants t:0 log_snr:0 t:0.5

Writes benchmarks/results/adaptive_sde_variants.json.
"""

import argparse
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import load_problem, metadata, write
from adaptive_sde import ATOL_PER_RTOL, nfe_to_band, rotated_gaussian
from jax import lax

import scoresde as ss
from scoresde._keys import latents_and_noise_keys
from scoresde._score_calls import tweedie_batch
from scoresde._terms import ReverseDrift

DIM = 64


def solve_one(sde, score, x0, key, *, variable, power, rtol, atol, t_eps, h_init, max_steps=4000):
    """One sample's adaptive solve with steps in `variable` and tolerance / alpha(t)^power."""
    dtype = x0.dtype
    drift = ReverseDrift(sde, score, origin=0.0)
    T = sde.T
    path = dfx.VirtualBrownianTree(-T, -t_eps, 1e-6, x0.shape, key)
    if variable == "t":
        u_of_t, t_of_u = (lambda t: -t), (lambda u: -u)
    else:
        u_of_t, t_of_u = sde.log_snr, sde.log_snr_inverse
    u0, u_end = u_of_t(jnp.asarray(T, dtype)), u_of_t(jnp.asarray(t_eps, dtype))
    if variable != "t":
        h_init = h_init * (u_end - u0) / (T - t_eps)

    def body(c):
        u, x, x_prev, h, att, acc, _ = c
        last = h >= u_end - u
        u_next = jnp.where(last, u_end, u + h)
        t0 = jnp.where(u == u0, T, t_of_u(u))
        t1 = jnp.where(last, t_eps, t_of_u(u_next))
        s, s_next = -t0, -t1
        dw = path.evaluate(s, s_next)
        g0, g1 = sde.diffusion(t0).astype(dtype), sde.diffusion(t1).astype(dtype)
        x_em = x + (s_next - s) * drift(s, x, None) + g0 * dw
        x_heun = 0.5 * (x_em + x + (s_next - s) * drift(s_next, x_em, None) + g1 * dw)
        delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x_em), jnp.abs(x_prev)))
        delta = delta * sde.marginal(t1)[0] ** (-power)
        err = jnp.sqrt(jnp.mean(((x_em - x_heun) / delta) ** 2))
        ok = err <= 1
        att, acc = att + 1, acc + ok.astype(acc.dtype)
        u_new = jnp.where(ok, u_next, u)
        h_new = jnp.minimum(0.9 * h * err ** (-0.9), u_end - u_new)
        status = jnp.where(ok & last, 1, 0)
        status = jnp.where((status == 0) & (att >= max_steps), 2, status)
        status = jnp.where(jnp.isfinite(err), status, 3).astype(jnp.int32)
        x_new, x_prev = jnp.where(ok, x_heun, x), jnp.where(ok, x_em, x_prev)
        return u_new, x_new, x_prev, h_new, att, acc, status

    z = jnp.asarray(0, jnp.int32)
    init = (u0, x0, x0, jnp.minimum(h_init, u_end - u0), z, z, z)
    _, x, _, _, att, acc, status = lax.while_loop(lambda c: c[-1] == 0, body, init)
    return x, att, acc, status


def sample(sde, score, key, n, variable, power, rtol, t_eps=1e-3):
    dtype = jnp.result_type(float)
    x_T, keys = latents_and_noise_keys(sde, key, (n, DIM), None, dtype)

    @eqx.filter_jit
    def run(x_T, keys, rtol, atol):
        def one(x0, k):
            return solve_one(
                sde,
                score,
                x0,
                k,
                variable=variable,
                power=power,
                rtol=rtol,
                atol=atol,
                t_eps=t_eps,
                h_init=0.01,
            )

        return jax.vmap(one)(x_T, keys)

    f = lambda v: jnp.asarray(v, dtype)
    x, att, acc, status = run(x_T, keys, f(rtol), f(ATOL_PER_RTOL * rtol))
    x = tweedie_batch(sde, score, t_eps, x, None)
    rejected = float(1 - acc.sum() / att.sum())
    return np.asarray(x), float(np.mean(2 * att + 1)), rejected, int(np.sum(status != 1))


def run_problem(name, n, variants, rtols):
    sde = ss.VPSDE()
    dist = load_problem("aniso64") if name == "aniso64" else rotated_gaussian()
    score = ss.analytic.marginal_score(dist, sde)
    exact = np.asarray(dist.sample(jr.key(101), n))
    sw_key = jr.key(7)
    floors = [
        ss.sliced_wasserstein(dist.sample(jr.key(102 + i), n), exact, key=sw_key) for i in range(4)
    ]
    band = float(np.mean(floors) + 2 * np.std(floors, ddof=1))
    print(f"== {name}: n = {n}, sw floor {np.mean(floors):.4f}, band {band:.4f}", flush=True)
    rows = []
    for steps in (25, 35, 50, 70, 100, 140, 200, 400):
        r = ss.sample_sde(sde, score, key=jr.key(0), shape=(n, DIM), steps=steps)
        sw = ss.sliced_wasserstein(r.x, exact, key=sw_key)
        rows.append(dict(method="EM uniform", nfe=float(np.mean(r.nfe)), sw=sw))
        print(f"  EM uniform steps={steps:<4d} nfe {rows[-1]['nfe']:7.1f} sw {sw:.4f}", flush=True)
    for variable, power in variants:
        method = f"GGF {variable} alpha^-{power:g}"
        for rtol in rtols:
            start = time.perf_counter()
            x, nfe, rejected, failed = sample(sde, score, jr.key(0), n, variable, power, rtol)
            sw = ss.sliced_wasserstein(x, exact, key=sw_key)
            row = dict(method=method, rtol=rtol, nfe=nfe, sw=sw, rejected=rejected, failed=failed)
            if name == "aniso64":
                row["mode_err"] = ss.mode_weight_error(dist, jnp.asarray(x))
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            print(
                f"  {method:22s} rtol={rtol:<5g} nfe {nfe:7.1f} sw {sw:.4f} "
                f"rejected {rejected:.2f} failed {failed} {row['seconds']:.1f}s",
                flush=True,
            )
    families = list(dict.fromkeys(r["method"] for r in rows))
    to_band = {
        m: nfe_to_band([r for r in rows if r["method"] == m], band, m.startswith("EM"))
        for m in families
    }
    em = to_band["EM uniform"]
    summary = {
        m: dict(nfe_to_band=v, gain_vs_em=em / v if v and em else None) for m, v in to_band.items()
    }
    for m, v in summary.items():
        print(f"  to band: {m:22s} {v['nfe_to_band']}  EM / this {v['gain_vs_em']}", flush=True)
    return dict(n=n, floor=float(np.mean(floors)), band=band, rows=rows, summary=summary)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--problems", nargs="+", default=["aniso64", "rot625"])
    parser.add_argument("--variants", nargs="+", default=["t:0", "log_snr:0", "t:0.5"])
    args = parser.parse_args(argv)
    variants = [(v.split(":")[0], float(v.split(":")[1])) for v in args.variants]
    rtols = (1.0, 0.5, 0.2, 0.1)
    out = metadata(n=args.n, variants=args.variants, rtols=rtols)
    out["problems"] = {name: run_problem(name, args.n, variants, rtols) for name in args.problems}
    write("adaptive_sde_variants", out)


if __name__ == "__main__":
    main()
