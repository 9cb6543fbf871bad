"""Item 4 of issue 13 (a prototype, not library code): the likelihood ODE in exponential form.

With $\\lambda = \\ln(\\alpha/\\sigma)$, $y = x/\\sigma$ and the data prediction
$D(x) = (x + \\sigma^2 \\mathrm{score})/\\alpha$, the augmented PF-ODE is
$dY/d\\lambda = e^\\lambda G$ with $Y = [y, \\delta']$, $G = [D(\\sigma y), v^\\top (\\partial D/\\partial y) v]$
(one fixed Rademacher probe $v$), and $\\delta = \\delta' + d\\ln(\\sigma_T/\\sigma_\\varepsilon)$
(the analytic part, MATH.md "the exponential form of the likelihood ODE"). Variants:

- `expo23-rms`, `expo23-nats`: an adaptive exponential integrator, per sample: singlestep stages
  at 1/3 and 2/3 of the step in $\\lambda$, $G$ integrated against $e^\\lambda$ exactly for a
  polynomial in $\\lambda$: order 3 (slope from the 2/3 stage) with the embedded order 2 (slope
  from the 1/3 stage), whose difference drives the step (I-controller, exponent 1/3, safety 0.9,
  factor in [0.2, 5]); error norm RMS over $(y, \\delta')$ at rtol = atol = tol, or
  $|\\delta'_{\\rm err}|$ / tol (nats). NFE: 1 + 3 per accepted step + 2 per rejected one.
- `expo23-res-nats`: the same with the part of $\\delta'$'s integrand that cancels the analytic
  part near the data removed too: $e^\\lambda(h - \\sigma d) = \\alpha(\\operatorname{tr}
  \\partial D/\\partial x - d)$ is integrated, and $d\\int\\alpha\\,d\\lambda =
  d(\\operatorname{asinh} e^{\\lambda_T} - \\operatorname{asinh} e^{\\lambda_\\varepsilon})$ added (VP).
  Without it the integrated channel carries about $-d\\ln(\\sigma_T/\\sigma_\\varepsilon)$
  (442 nats on `mix64`), whose relative error gives every sample the same bias.
- `Dopri5-lam`, `Dopri5-s`: diffrax Dopri5 on the same transformed ODE in $u = -\\lambda$, or in
  $u = -e^\\lambda$ (where $dY/du = -G$: DDIM's variable).
- `Dopri5-t`: the library default (`ss.log_likelihood`, Dopri5 in $t$) at rtol = atol = tol.

`mix64` (2-component 64-D mixture, `_common.mix64`), VP, $t_\\varepsilon = 10^{-5}$, float64,
exact score; solver error = `log_prob` minus a per-sample Dopri8 solve at rtol = atol = 1e-10
with the same probes (library). Run: `python benchmarks/likelihood_expo.py [--quick]`; writes
`benchmarks/results/likelihood_expo[_quick].json`.
"""

import argparse
import sys

import jax

jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import load_problem, metadata, write  # noqa: E402

import scoresde as ss  # noqa: E402
from scoresde._keys import sample_keys  # noqa: E402

SDE = ss.VPSDE()
T_EPS = 1e-5
R1, R2 = 1.0 / 3.0, 2.0 / 3.0


def _i0(e, h):
    """$\\int_0^h e^{\\lambda_s + r} dr$ with `e` = $e^{\\lambda_s}$."""
    return e * jnp.expm1(h)


def _i1(e, h):
    """$\\int_0^h e^{\\lambda_s + r} r\\, dr$."""
    return e * (h * jnp.exp(h) - jnp.expm1(h))


def _g(score, v, residual=False):
    def g(lam, y):
        t = SDE.log_snr_inverse(lam)
        a, s = SDE.marginal(t)
        d, jv = jax.jvp(lambda yy: (s * yy + s**2 * score(t, s * yy)) / a, (y,), (v,))
        tr = jnp.sum(v * jv)
        return d, (tr - s * y.size if residual else tr)

    return g


def expo23(score, prior, x, keys, tol, mode, max_steps=4000, residual=False):
    lam0, lam1 = SDE.log_snr(jnp.asarray(T_EPS)), SDE.log_snr(jnp.asarray(SDE.T))
    s_eps, s_T = SDE.marginal(T_EPS)[1], SDE.marginal(SDE.T)[1]
    dim = x.shape[1]
    # residual: integrate e^lam (h - sigma d) = alpha (tr dD/dx - d); the removed part
    # int alpha d dlam = d (asinh(e^lam1) - asinh(e^lam0)) (VP: alpha^2 + sigma^2 = 1).
    extra = dim * (jnp.arcsinh(jnp.exp(lam1)) - jnp.arcsinh(jnp.exp(lam0))) if residual else 0.0

    def one(xi, ki):
        g = _g(score, jr.rademacher(ki, (1, dim), xi.dtype)[0], residual)

        def norm(ey, ed, y, d, y3, d3):
            if mode == "nats":
                return jnp.abs(ed) / tol
            sy = tol + tol * jnp.maximum(jnp.abs(y), jnp.abs(y3))
            sd = tol + tol * jnp.maximum(jnp.abs(d), jnp.abs(d3))
            return jnp.sqrt((jnp.sum((ey / sy) ** 2) + (ed / sd) ** 2) / (dim + 1))

        def cond(c):
            return (c[0] > lam1) & (c[-1] < max_steps)

        def body(c):
            lam, y, d, gy, gd, h, nfe, steps = c
            h = jnp.maximum(h, lam1 - lam)  # h < 0: lambda decreases to lam1
            e = jnp.exp(lam)
            g1y, g1d = g(lam + R1 * h, y + _i0(e, R1 * h) * gy)
            c2 = _i1(e, R2 * h) / (R1 * h)
            y2 = y + _i0(e, R2 * h) * gy + c2 * (g1y - gy)
            g2y, g2d = g(lam + R2 * h, y2)
            a0, a1 = _i0(e, h), _i1(e, h)
            y3 = y + a0 * gy + a1 / (R2 * h) * (g2y - gy)
            d3 = d + a0 * gd + a1 / (R2 * h) * (g2d - gd)
            ylo = y + a0 * gy + a1 / (R1 * h) * (g1y - gy)
            dlo = d + a0 * gd + a1 / (R1 * h) * (g1d - gd)
            err = norm(y3 - ylo, d3 - dlo, y, d, y3, d3)
            err = jnp.where(jnp.isfinite(err), err, jnp.inf)
            ok = err <= 1.0
            factor = jnp.clip(0.9 * jnp.where(err > 0, err, 1e-10) ** (-1.0 / 3.0), 0.2, 5.0)
            gny, gnd = g(lam + h, y3)  # the next step's first stage, counted when accepted
            return (
                jnp.where(ok, lam + h, lam),
                jnp.where(ok, y3, y),
                jnp.where(ok, d3, d),
                jnp.where(ok, gny, gy),
                jnp.where(ok, gnd, gd),
                h * factor,
                nfe + 2 + ok.astype(jnp.int32),
                steps + 1,
            )

        y0 = xi / s_eps
        g0y, g0d = g(lam0, y0)
        c = (lam0, y0, jnp.zeros(()), g0y, g0d, (lam1 - lam0) / 16, jnp.int32(1), jnp.int32(0))
        _, y, d, *_, nfe, _ = jax.lax.while_loop(cond, body, c)
        return prior(s_T * y) + d + dim * jnp.log(s_T / s_eps) + extra, nfe

    return jax.jit(jax.vmap(one))(x, keys)


def dopri5_transformed(score, prior, x, keys, tol, variable):
    lam0, lam1 = SDE.log_snr(jnp.asarray(T_EPS)), SDE.log_snr(jnp.asarray(SDE.T))
    s_eps, s_T = SDE.marginal(T_EPS)[1], SDE.marginal(SDE.T)[1]
    dim = x.shape[1]
    if variable == "lam":
        u0, u1 = -lam0, -lam1

        def lam_w(u):
            return -u, jnp.exp(-u)
    else:
        u0, u1 = -jnp.exp(lam0), -jnp.exp(lam1)

        def lam_w(u):
            return jnp.log(-u), jnp.ones_like(u)

    def one(xi, ki):
        g = _g(score, jr.rademacher(ki, (1, dim), xi.dtype)[0])

        def f(u, state, args):
            lam, w = lam_w(u)
            gy, gd = g(lam, state[0])
            return -w * gy, -w * gd

        term = dfx.ODETerm(f)
        y0 = (xi / s_eps, jnp.zeros(()))
        ctrl = dfx.PIDController(
            rtol=tol,
            atol=tol,
            norm=lambda e: jnp.sqrt((jnp.sum(e[0] ** 2) + e[1] ** 2) / (dim + 1)),
        )
        sol = dfx.diffeqsolve(
            term,
            dfx.Dopri5(),
            u0,
            u1,
            (u1 - u0) / 64,
            y0,
            stepsize_controller=ctrl,
            max_steps=20_000,
            solver_state=(jnp.array(False), term.vf(u0, y0, None)),
            throw=False,
        )
        lp = prior(s_T * sol.ys[0][0]) + sol.ys[1][0] + dim * jnp.log(s_T / s_eps)
        return lp, 1 + 6 * sol.stats["num_steps"]

    return jax.jit(jax.vmap(one))(x, keys)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="batch 16, two tolerances")
    args = parser.parse_args()
    batch = 16 if args.quick else 64
    tols = (1e-4, 1e-5) if args.quick else (1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
    nats = (1e-2,) if args.quick else (3e-2, 1e-2, 3e-3)
    res_nats = (1e-1, 3e-2) if args.quick else (1e-1, 3e-2, 1e-2, 3e-3)
    dist = load_problem("mix64", jnp.float64)
    score = ss.analytic.marginal_score(dist, SDE)
    prior = dist.marginal(SDE, jnp.asarray(SDE.T, jnp.float64)).log_prob
    x = dist.sample(jr.key(0), batch)
    key = jr.key(1)
    keys = sample_keys(key, batch)
    kw = dict(key=key, t_eps=T_EPS, prior_log_prob=prior)
    ref = ss.log_likelihood(
        SDE, score, x, solver=dfx.Dopri8(), rtol=1e-10, atol=1e-10, max_steps=100_000, **kw
    ).log_prob
    runs = []
    for tol in tols:
        runs.append(("Dopri5-t", tol, lambda tol=tol: _lib(score, x, tol, kw)))
        for variable in ("lam", "s"):
            runs.append(
                (
                    f"Dopri5-{variable}",
                    tol,
                    lambda tol=tol, v=variable: dopri5_transformed(score, prior, x, keys, tol, v),
                )
            )
        runs.append(("expo23-rms", tol, lambda tol=tol: expo23(score, prior, x, keys, tol, "rms")))
    for tol in nats:
        runs.append(
            ("expo23-nats", tol, lambda tol=tol: expo23(score, prior, x, keys, tol, "nats"))
        )
    for tol in res_nats:
        runs.append(
            (
                "expo23-res-nats",
                tol,
                lambda tol=tol: expo23(score, prior, x, keys, tol, "nats", residual=True),
            )
        )
    rows = []
    for label, tol, fn in runs:
        lp, nfe = fn()
        err = np.asarray(lp - ref)
        nfe = np.asarray(nfe)
        row = dict(
            method=label,
            tol=tol,
            nfe_mean=float(nfe.mean()),
            nfe_max=int(nfe.max()),
            rms_nats=float(np.sqrt(np.mean(err**2))),
            max_nats=float(np.max(np.abs(err))),
        )
        rows.append(row)
        print(
            f"{label:12s} tol {tol:.0e} NFE mean {row['nfe_mean']:6.1f} max {row['nfe_max']:4d}"
            f"  solver err RMS {row['rms_nats']:.2e} max {row['max_nats']:.2e} nats",
            flush=True,
        )
    name = "likelihood_expo" + ("_quick" if args.quick else "")
    write(
        name, dict(metadata(batch=batch, t_eps=T_EPS, dtype="float64", problem="mix64"), rows=rows)
    )


def _lib(score, x, tol, kw):
    r = ss.log_likelihood(SDE, score, x, rtol=tol, atol=tol, **kw)
    return r.log_prob, r.nfe


if __name__ == "__main__":
    main()
