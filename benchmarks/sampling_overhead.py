"""Per-step overhead of `sample_sde` against a hand-written `lax.scan` Euler-Maruyama loop.

    python benchmarks/sampling_overhead.py [--quick]

For each problem (ring2d, 2-D; aniso64, 64-D; exact mixture score) and a batch of 4096, runs
1000 Euler-Maruyama steps of the reverse VP SDE three ways, in the same process:

- `library`: `ss.sample_sde(..., solver=diffrax.Euler(), steps=1000, denoise=False)`;
- `scan`: a jitted `lax.scan` loop, the same update and the same kind of per-sample noise;
- `floor`: NFE x one batched score evaluation (the cost of the vector field alone).

Prints run times as ratios to `scan` and `floor`, compile times, and writes
`benchmarks/results/sampling_overhead.json` (`sampling_overhead_quick.json` with `--quick`).
"""

import argparse

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
from _common import load_problem, metadata, timed, write

import scoresde as ss


def scan_em(sde, score, x_T, key, steps, t_eps):
    """Reverse-SDE Euler-Maruyama on a uniform grid, by hand."""
    ts = jnp.linspace(sde.T, t_eps, steps + 1)
    keys = jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(x_T.shape[0]))
    batched = jax.vmap(score, in_axes=(None, 0))

    def step(x, i):
        t, t_next = ts[i], ts[i + 1]
        h = t - t_next
        g = sde.diffusion(t)
        drift = -sde.drift(t, x) + g**2 * batched(t, x)
        noise = jax.vmap(lambda k: jr.normal(jr.fold_in(k, i), x.shape[1:], x.dtype))(keys)
        return x + h * drift + g * jnp.sqrt(h) * noise, None

    x, _ = jax.lax.scan(step, x_T, jnp.arange(steps))
    return x


def main(quick: bool = False):
    steps = 100 if quick else 1000
    batch = 512 if quick else 4096
    t_eps = 1e-3
    sde = ss.VPSDE()
    rows = []
    for name in ["ring2d", "aniso64"]:
        dist = load_problem(name)
        score = ss.analytic.marginal_score(dist, sde)
        x_T = sde.prior_sample(jr.key(0), (batch, dist.dim))

        def library(x_T, key, score=score):
            return ss.sample_sde(
                sde,
                score,
                key=key,
                shape=x_T.shape,
                x_T=x_T,
                steps=steps,
                solver=dfx.Euler(),
                t_eps=t_eps,
                denoise=False,
            ).x

        scan = jax.jit(lambda x_T, key, score=score: scan_em(sde, score, x_T, key, steps, t_eps))
        one_eval = jax.jit(jax.vmap(score, in_axes=(None, 0)))
        lib_first, lib_run, lib_x = timed(library, x_T, jr.key(1), repeats=2)
        scan_first, scan_run, scan_x = timed(scan, x_T, jr.key(1), repeats=2)
        _, eval_run, _ = timed(one_eval, jnp.asarray(0.5), x_T, repeats=20)
        floor = steps * eval_run
        row = dict(
            problem=name,
            dim=dist.dim,
            batch=batch,
            steps=steps,
            library_s=lib_run,
            scan_s=scan_run,
            floor_s=floor,
            library_over_scan=lib_run / scan_run,
            library_over_floor=lib_run / floor,
            scan_over_floor=scan_run / floor,
            library_compile_s=max(lib_first - lib_run, 0.0),
            scan_compile_s=max(scan_first - scan_run, 0.0),
            sample_mean_gap=float(jnp.abs(lib_x.mean(0) - scan_x.mean(0)).max()),
        )
        rows.append(row)
        print(
            f"{name:8s} d={dist.dim:3d} batch={batch} steps={steps}: library {lib_run:.3f}s, "
            f"scan {scan_run:.3f}s, floor {floor:.3f}s | library/scan {row['library_over_scan']:.2f}x,"
            f" library/floor {row['library_over_floor']:.2f}x, scan/floor "
            f"{row['scan_over_floor']:.2f}x | compile library {row['library_compile_s']:.1f}s, "
            f"scan {row['scan_compile_s']:.1f}s"
        )
    write(
        "sampling_overhead_quick" if quick else "sampling_overhead",
        dict(metadata(quick=quick, steps=steps, batch=batch), rows=rows),
    )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(**vars(parser.parse_args()))
