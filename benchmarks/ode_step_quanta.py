"""Can step ends on a grid of quanta (as `sample_sde_adaptive` puts them) make the adaptive
probability-flow ODE insensitive to rounding? Measured by perturbing the latents by ONE ulp.

The PF-ODE (`probability_flow_term`, reversed time s = -t from -1 to -t_eps, VP SDE, exact
scores, float32, Tsit5, rtol = atol = 1e-5, the first step a 64th of the span, as `sample_ode`)
is solved per sample under `jax.vmap` from `x_T` and from `nextafter(x_T, +inf)`, with:

- `pid`: `diffrax.PIDController(rtol, atol)` (what `sample_ode` uses);
- `q2^k`: the same, its step ends rounded down to a grid of 2^k equal quanta of the span (a
  wrapper of the controller, `Quantised` below: the controller's step floored to whole quanta,
  at least one; the grid's last point is t1 exactly);
- `floorF`: the error norm floored at F (`max(rms, F)`), so that an estimate below F (where
  rounding dominates it) proposes the same step; `floorF+q2^k` both.

Per problem and variant: `ulp_steps_differ` / `ulp_rows_differ` (samples whose step count /
result changed after the 1-ulp perturbation), `ulp_max_diff`, `mean_steps` (attempted steps;
NFE = 6 per step + 1 for Tsit5, FSAL), `rms_err` and `max_err` against a float64 solve at
rtol = atol = 1e-9 from the same latents. Also, on the 3-D mixture, how much one ulp moves the
first step's error estimate (`first_step_err`), which is what the controller reads.

Problems: `mix3` (the 3-component 3-D mixture of `ode_device_count.py`, 48 samples), `ring2d`
(256) and `aniso64` (128), from `scoresde/_bench/data`.

Run: `python benchmarks/ode_step_quanta.py` (spawns itself once with float64 for the
references); writes `benchmarks/results/ode_step_quanta.json`.
"""

import os
import subprocess
import sys
import tempfile

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from _common import load_problem, metadata, write

import scoresde as ss
from scoresde._terms import probability_flow_term

SDE = ss.VPSDE()
T_EPS = 1e-3
TOL = 1e-5
SIZES = {"mix3": 48, "ring2d": 256, "aniso64": 128}


def mix3(dtype):
    return ss.analytic.GaussianMixture(
        jnp.array([0.3, 0.5, 0.2], dtype),
        jnp.array([[1.5, 0.0, -0.5], [-1.0, 1.0, 0.0], [0.0, -1.5, 1.0]], dtype),
        jnp.stack(
            [0.05 * jnp.eye(3), 0.3 * jnp.eye(3), jnp.diag(jnp.array([0.02, 0.5, 0.1]))]
        ).astype(dtype),
    )


def problem(name, dtype):
    """The score in `dtype` and the float32 latents (the same draws for the float64 reference)."""
    mix = mix3(dtype) if name == "mix3" else load_problem(name, dtype)
    x_T = SDE.prior_std * jax.random.normal(jax.random.key(5), (SIZES[name], mix.dim), jnp.float32)
    return ss.analytic.marginal_score(mix, SDE), x_T.astype(dtype)


class Quantised(dfx.AbstractAdaptiveStepSizeController):
    """`controller` with its step ends on `quanta` equal quanta of [t0, t1]: the proposed step
    floored to whole quanta (at least one, at most to t1). The state carries the quantum
    indices of the attempted step's ends, so the times are recomputed, never accumulated."""

    controller: dfx.AbstractAdaptiveStepSizeController
    quanta: int = eqx.field(static=True)

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm

    def wrap(self, direction):
        return Quantised(self.controller.wrap(direction), self.quanta)

    def _time(self, n, a, b):
        return jnp.where(n >= self.quanta, b, a + (b - a) * (n.astype(a.dtype) / self.quanta))

    def _next(self, n0, dt, a, b):
        k = jnp.floor(jnp.minimum(dt / ((b - a) / self.quanta), self.quanta))
        return n0 + jnp.clip(k, 1, self.quanta - n0).astype(jnp.int32)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        t_next, inner = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        a = jnp.asarray(t0, jnp.result_type(t_next))
        b = jnp.asarray(t1, a.dtype)
        n0 = jnp.asarray(0, jnp.int32)
        n1 = self._next(n0, t_next - a, a, b)
        return self._time(n1, a, b), (inner, n0, n1, a, b)

    def adapt_step_size(self, t0, t1, y0, y1, args, y_error, error_order, state):
        inner, n0, n1, a, b = state
        keep, next_t0, next_t1, jump, inner, result = self.controller.adapt_step_size(
            t0, t1, y0, y1, args, y_error, error_order, inner
        )
        n0 = jnp.where(keep, n1, n0)
        n1 = self._next(n0, next_t1 - next_t0, a, b)
        return keep, self._time(n0, a, b), self._time(n1, a, b), jump, (inner, n0, n1, a, b), result


def floored(level):
    return lambda e: jnp.maximum(optx.rms_norm(e), level)


def variants():
    pid = dfx.PIDController(rtol=TOL, atol=TOL)
    out = {"pid": pid}
    out.update({f"q2^{k}": Quantised(pid, 2**k) for k in (8, 10, 12, 16)})
    for level in (0.01, 0.1):
        p = dfx.PIDController(rtol=TOL, atol=TOL, norm=floored(level))
        out[f"floor{level}"] = p
        out.update({f"floor{level}+q2^{k}": Quantised(p, 2**k) for k in (10, 16)})
    return out


def solve(score, controller, x_T):
    dtype = x_T.dtype

    def one(x0):
        term = probability_flow_term(SDE, score, origin=0.0)
        t0, t1 = jnp.asarray(-SDE.T, dtype), jnp.asarray(-T_EPS, dtype)
        sol = dfx.diffeqsolve(
            term,
            dfx.Tsit5(),
            t0,
            t1,
            (t1 - t0) / 64,
            x0,
            stepsize_controller=controller,
            max_steps=4096,
        )
        return sol.ys[0], sol.stats["num_steps"]

    x, steps = eqx.filter_jit(jax.vmap(one))(x_T)
    return np.asarray(x), np.asarray(steps)


def first_step_error():
    """The scaled error estimate of Tsit5's first step (a 64th of the span at t = T) on the
    3-D mixture, and how much a 1-ulp change of `x_T` moves it."""
    score, x_T = problem("mix3", jnp.float32)
    term = probability_flow_term(SDE, score, origin=0.0)
    solver = dfx.Tsit5()
    t0, t1 = jnp.float32(-1.0), jnp.float32(-1.0 + (1 - T_EPS) / 64)

    def err(y):
        state = solver.init(term, t0, t1, y, None)
        y1, y_err, _, _, _ = solver.step(term, t0, t1, y, None, state, False)
        scale = TOL + TOL * jnp.maximum(jnp.abs(y), jnp.abs(y1))
        return optx.rms_norm(y_err / scale)

    e0 = np.asarray(jax.vmap(err)(x_T))
    e1 = np.asarray(jax.vmap(err)(jnp.nextafter(x_T, jnp.inf)))
    rel = np.abs(e1 / e0 - 1)
    return {
        "median": float(np.median(e0)),
        "median_rel_change_1ulp": float(np.median(rel)),
        "max_rel_change_1ulp": float(rel.max()),
    }


def reference(path):
    """Float64 solutions at rtol = atol = 1e-9 from the float32 latents (run with
    JAX_ENABLE_X64=1)."""
    ctrl = dfx.PIDController(rtol=1e-9, atol=1e-9)
    out = {}
    for name in SIZES:
        score, x_T = problem(name, jnp.float64)
        out[name] = solve(score, ctrl, x_T)[0]
    np.savez(path, **out)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ref.npz")
        env = dict(os.environ, JAX_ENABLE_X64="1")
        subprocess.run([sys.executable, __file__, "--reference", path], env=env, check=True)
        refs = dict(np.load(path))
    report = {"meta": metadata(tol=TOL, t_eps=T_EPS, sizes=SIZES), "problems": {}}
    report["first_step_err"] = first_step_error()
    print(report["first_step_err"], flush=True)
    for name in SIZES:
        score, x_T = problem(name, jnp.float32)
        up = jnp.nextafter(x_T, jnp.inf)
        rows = {}
        for label, controller in variants().items():
            x, steps = solve(score, controller, x_T)
            x_up, steps_up = solve(score, controller, up)
            err = np.sqrt(np.mean((x - refs[name]) ** 2, axis=-1))
            rows[label] = {
                "ulp_steps_differ": int((steps != steps_up).sum()),
                "ulp_rows_differ": int((x != x_up).any(axis=-1).sum()),
                "ulp_max_diff": float(np.abs(x - x_up).max()),
                "mean_steps": float(steps.mean()),
                "rms_err": float(np.sqrt(np.mean(err**2))),
                "max_err": float(np.abs(x - refs[name]).max()),
            }
            print(name, label, rows[label], flush=True)
        report["problems"][name] = rows
    write("ode_step_quanta", report)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reference"]:
        reference(sys.argv[2])
    else:
        main()
