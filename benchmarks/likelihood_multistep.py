"""Variable-step Adams-Bashforth(-Moulton) on the likelihood ODE (issue 27, item 4; a prototype,
not library code): can one evaluation a step beat the Runge-Kutta solves at about 37 NFE?

The augmented ODE d[x, delta]/dt (one Rademacher probe, `AugmentedFlow`) is integrated forward in
t over a named grid's times by an explicit Adams-Bashforth method of order k (the integral over
each step of the Lagrange polynomial through the last k derivatives, by 8-point Gauss-Legendre;
lower orders while the history fills): 36 steps, 37 NFE; or PECE with an Adams-Moulton corrector
of the same order: 18 steps, 37 NFE.

`mix64`, VP, t_eps 1e-5, float64, exact score; 512 test points (`jr.key(1)`, after 256), RMS
error in nats against a per-sample Dopri8 solve at rtol = atol = 1e-10 with the same probes, with
95 % bootstrap intervals. For scale: the tuned 6-step Tsit5 grid (37 NFE) gives 0.150 nats and
the named ones 0.13-0.24 (`benchmarks/likelihood_budget.py`, `tune_likelihood_grid`'s report).

    python benchmarks/likelihood_multistep.py     # about 3 minutes on 2 cores

Writes `benchmarks/results/likelihood_multistep.json`.
"""

import pathlib
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from _common import metadata, mix64, write  # noqa: E402
from likelihood_budget import reference_log_prob, rms_with_interval  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._likelihood.log_likelihood import DIVERGENCE, T_EPS, VARIABLE  # noqa: E402
from scoresde._likelihood.vector_fields import AugmentedFlow  # noqa: E402
from scoresde._tuning.likelihood_grid import likelihood_probes  # noqa: E402

SDE = ss.VPSDE()
NODES, WEIGHTS = np.polynomial.legendre.leggauss(8)
GRIDS = {"log_snr": ss.LogSNRGrid(), "clipped_log_snr": ss.ClippedLogSNRGrid(),
         "uniform": ss.UniformGrid()}  # fmt: skip


def lagrange_weights(nodes, a, b):
    """The integrals over [a, b] of the Lagrange basis polynomials on `nodes`."""
    tq = (a + b) / 2 + (b - a) / 2 * NODES
    weights = []
    for j in range(nodes.shape[0]):
        basis = jnp.ones_like(tq)
        for m in range(nodes.shape[0]):
            if m != j:
                basis = basis * (tq - nodes[m]) / (nodes[j] - nodes[m])
        weights.append(jnp.sum(WEIGHTS * basis) * (b - a) / 2)
    return jnp.stack(weights)


def adams(order, corrector):
    @eqx.filter_jit
    def solve(score, x, probes, u):
        def one(xi, pi):
            flow = AugmentedFlow(SDE, score, DIVERGENCE, VARIABLE, pi)
            f = lambda t, y: flow(t, y, None)
            y = (xi, jnp.zeros((1,), xi.dtype))
            ts, fs = [u[0]], [f(u[0], y)]

            def combine(y, weights, derivatives):
                return jax.tree.map(
                    lambda y0, *d: y0 + sum(w * dj for w, dj in zip(weights, d, strict=True)),
                    y, *derivatives,
                )  # fmt: skip

            for i in range(u.shape[0] - 1):
                k = min(order, len(ts))
                w = lagrange_weights(jnp.stack(ts[-k:]), u[i], u[i + 1])
                y_new = combine(y, w, fs[-k:])
                f_new = f(u[i + 1], y_new)
                if corrector:
                    k = min(order, len(ts) + 1)
                    nodes = jnp.stack((ts + [u[i + 1]])[-k:])
                    y_new = combine(y, lagrange_weights(nodes, u[i], u[i + 1]),
                                    (fs + [f_new])[-k:])  # fmt: skip
                    f_new = f(u[i + 1], y_new)
                y = y_new
                ts.append(u[i + 1])
                fs.append(f_new)
            return SDE.prior_log_prob(y[0]) + y[1][0]

        return jax.vmap(one)(x, probes)

    return solve


def main():
    started = time.perf_counter()
    mix = mix64(jnp.float64)
    score = ss.analytic.marginal_score(mix, SDE)
    test = mix.sample(jr.key(1), 256 + 512)[256:]
    key = jr.key(1)
    ref = reference_log_prob(score, test, key)
    probes = likelihood_probes(SDE, score, DIVERGENCE, test, key, T_EPS)
    rows = []
    for order, corrector in ((3, False), (4, False), (3, True), (4, True)):
        steps = 18 if corrector else 36
        for name, grid in GRIDS.items():
            times = grid.times_for(SDE, steps, T_EPS, dtype=jnp.float64)
            u = VARIABLE.u_of_t(SDE, times[::-1])
            errors = np.asarray(adams(order, corrector)(score, test, probes, u)) - ref
            row = {"order": order, "corrector": corrector, "steps": steps, "nfe": 37,
                   "grid": name, **rms_with_interval(errors),
                   "max_abs": float(np.abs(errors).max())}  # fmt: skip
            rows.append(row)
            low, high = row["interval"]
            print(f"{'PECE' if corrector else 'AB'}{order} {steps} steps (37 NFE), {name}: RMS "
                  f"{row['rms']:.3f} [{low:.3f}, {high:.3f}] nats, largest "
                  f"{row['max_abs']:.2f}", flush=True)  # fmt: skip
    write("likelihood_multistep", dict(benchmark="likelihood_multistep",
          **metadata(test=512, t_eps=T_EPS), rows=rows,
          seconds=time.perf_counter() - started))  # fmt: skip


if __name__ == "__main__":
    main()
