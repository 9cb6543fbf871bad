r"""Single-step DPM-Solvers (noise prediction): DPM-Solver-1 (DDIM), -2 and -3.

The noise prediction $\hat\epsilon = -\sigma\,\mathrm{score}$ is expanded around the step's
start from extra evaluations inside the step (see [`scoresde._solver.base`][]).

**Fixed budgets.** On a fixed grid of $N$ steps (`fixed_steps`, which
[`scoresde.sample_ode`][] sets) DPM-Solver-$k$ spends some steps' $k$ evaluations on lower
orders, always at the points where the full-order step evaluates (so the cost is unchanged):

- the last step, as the reference implementation does (Lu et al. 2022, the order schedule of
  its "DPM-Solver-fast"): DPM-Solver-3 takes a second-order step over the first two thirds of
  the interval (in $\lambda$) and a first-order step over the last third (orders
  $3, \dots, 3, 2, 1$); DPM-Solver-2 two first-order steps over its halves ($2, \dots, 2, 1,
  1$; the reference keeps order 2 there);
- a step longer than `LONG_STEP` $= 3$ in $\lambda$: $k$ first-order (DDIM) steps of $h/k$.
  In noise prediction the higher-order corrections carry the factor $e^h - 1$
  ($\approx \alpha_t\sigma_s/(\alpha_s\sigma_t)$), so over a long step any error of the
  prediction's slope is amplified a hundredfold; the reference's schedule only avoids such steps
  on budgets of about 10 evaluations or more.

So a short budget never takes one high-order step over the whole interval: one step of
DPM-Solver-3 from $T$ to $t_\varepsilon$ is three DDIM steps, not an overshoot by orders of
magnitude. Measured in `benchmarks/default_grids.py`; under adaptive steps (`fixed_steps=None`)
every step has the full order.
"""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from .base import LONG_STEP, _Budgeted, _check_fixed_steps, _phi, _SingleStep


class DPMSolver1(_SingleStep):
    r"""DPM-Solver-1 (= DDIM): $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h - 1)\hat\epsilon_s$.

    First order, one score evaluation per step.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{lu2022dpmsolver,
          title={{DPM-Solver}: A Fast {ODE} Solver for Diffusion Probabilistic Model Sampling
                 in Around 10 Steps},
          author={Lu, Cheng and Zhou, Yuhao and Bao, Fan and Chen, Jianfei and Li, Chongxuan
                  and Zhu, Jun},
          booktitle={NeurIPS}, year={2022}
        }
        ```
    """

    evals_per_step: ClassVar[int] = 1

    def order(self, terms):
        return 1

    def _step(self, model, ts, tt, x, last):
        a_s, s_s, l_s = model.marginal(ts)
        a_t, s_t, l_t = model.marginal(tt)
        y1 = _ddim(a_s, a_t, s_t, l_t - l_s, x, model.eps(ts, x, s_s))
        return y1.astype(x.dtype), None


def _ddim(a_s, a_t, s_t, h, x, eps):
    r"""One first-order step of length $h$ in $\lambda$: $\frac{\alpha_t}{\alpha_s}x -
    \sigma_t(e^h - 1)\hat\epsilon$."""
    return (a_t / a_s) * x - s_t * jnp.expm1(h) * eps


class DPMSolver2(_Budgeted):
    r"""Single-step DPM-Solver-2 (midpoint in $\lambda$, $r_1 = 1/2$), two evaluations per step.

    $u = \frac{\alpha_{s_1}}{\alpha_s}x_s - \sigma_{s_1}(e^{r_1 h}-1)\hat\epsilon_s$,
    $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h-1)\hat\epsilon_s
    - \frac{\sigma_t}{2r_1}(e^h-1)(\hat\epsilon(u, s_1) - \hat\epsilon_s)$.
    Second order; the error estimate (the difference with DPM-Solver-1) makes it adaptive
    (DPM-Solver-12) under `diffrax.PIDController`.

    **Arguments:** `fixed_steps`: the number of steps of the fixed grid it runs on (`None`,
    the default, under adaptive steps; [`scoresde.sample_ode`][] sets it from `steps`). Its
    last step and any step with $h > 3$ are then two first-order steps from the same
    evaluations: $x_{s_1} = u$, then $x_t = \frac{\alpha_t}{\alpha_{s_1}}u - \sigma_t(e^{h/2}-1)
    \hat\epsilon(u, s_1)$ (as [`scoresde.DPMSolver3`][]).

    Reference: as [`scoresde.DPMSolver1`][].
    """

    fixed_steps: int | None = eqx.field(static=True, default=None)
    evals_per_step: ClassVar[int] = 2
    r1: ClassVar[float] = 0.5

    def __check_init__(self):
        _check_fixed_steps(self)

    def order(self, terms):
        return 2

    def _step(self, model, ts, tt, x, last):
        r1 = self.r1
        a_s, s_s, l_s = model.marginal(ts)
        a_t, s_t, l_t = model.marginal(tt)
        h = l_t - l_s
        t1, a_1, s_1 = model.at_lambda(l_s + r1 * h)
        eps_s = model.eps(ts, x, s_s)
        u = _ddim(a_s, a_1, s_1, r1 * h, x, eps_s).astype(x.dtype)
        eps_u = model.eps(t1, u, s_1)
        correction = -(s_t / (2 * r1)) * jnp.expm1(h) * (eps_u - eps_s)
        y1 = _ddim(a_s, a_t, s_t, h, x, eps_s) + correction
        if last is not None:  # on a budget, the last step and long ones: DDIM from u to t
            lower = last | (h > LONG_STEP)
            y1 = jnp.where(lower, _ddim(a_1, a_t, s_t, (1 - r1) * h, u, eps_u), y1)
        return y1.astype(x.dtype), correction.astype(x.dtype)


class DPMSolver3(_Budgeted):
    r"""Single-step DPM-Solver-3 ($r_1 = 1/3$, $r_2 = 2/3$), three evaluations per step.

    $u_1 = \frac{\alpha_{s_1}}{\alpha_s}x_s - \sigma_{s_1}(e^{r_1h}-1)\hat\epsilon_s$,
    $D_1 = \hat\epsilon(u_1) - \hat\epsilon_s$;
    $u_2 = \frac{\alpha_{s_2}}{\alpha_s}x_s - \sigma_{s_2}(e^{r_2h}-1)\hat\epsilon_s
    - \frac{\sigma_{s_2} r_2}{r_1}\,r_2h\,\varphi_2(r_2h)\,D_1$,
    $D_2 = \hat\epsilon(u_2) - \hat\epsilon_s$;
    $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h-1)\hat\epsilon_s
    - \frac{\sigma_t}{r_2}\,h\varphi_2(h)\,D_2$. Third order; the error estimate (against the
    second-order solution built from $u_1$) makes it adaptive (DPM-Solver-23).

    **Arguments:** `fixed_steps`: the number of steps of the fixed grid it runs on (`None`,
    the default, under adaptive steps; [`scoresde.sample_ode`][] sets it from `steps`). Its
    last step is then a DPM-Solver-2 step to $s_2$ (midpoint $s_1$, from the same evaluations:
    $u_2 = \frac{\alpha_{s_2}}{\alpha_s}x_s - \sigma_{s_2}(e^{r_2h}-1)(\hat\epsilon_s + D_1)$)
    and a DPM-Solver-1 step from $u_2$ to $t$ (the reference's schedule); a step with $h > 3$
    three DPM-Solver-1 steps $s \to s_1 \to s_2 \to t$. In noise prediction the corrections
    carry the factor $e^h - 1 \approx \alpha_t\sigma_s/(\alpha_s\sigma_t)$: over a long step an
    error of the prediction's slope is amplified a hundredfold, and a one-step budget from $T$
    to $t_\varepsilon$ with the full order overshoots by orders of magnitude. The cost is the
    same (3 evaluations per step); under adaptive steps every step has the full order.

    Reference: as [`scoresde.DPMSolver1`][].
    """

    fixed_steps: int | None = eqx.field(static=True, default=None)
    evals_per_step: ClassVar[int] = 3

    def __check_init__(self):
        _check_fixed_steps(self)

    def order(self, terms):
        return 3

    def _step(self, model, ts, tt, x, last):
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        a_s, s_s, l_s = model.marginal(ts)
        a_t, s_t, l_t = model.marginal(tt)
        h = l_t - l_s
        t1, a_1, s_1 = model.at_lambda(l_s + r1 * h)
        t2, a_2, s_2 = model.at_lambda(l_s + r2 * h)
        eps_s = model.eps(ts, x, s_s)
        u1 = _ddim(a_s, a_1, s_1, r1 * h, x, eps_s).astype(x.dtype)
        eps_1 = model.eps(t1, u1, s_1)
        d1 = eps_1 - eps_s
        ddim_2 = _ddim(a_s, a_2, s_2, r2 * h, x, eps_s)
        u2 = ddim_2 - (s_2 * r2 / r1) * (r2 * h) * _phi(2, r2 * h) * d1
        if last is not None:  # on a budget: the last step reaches s_2 by DPM-Solver-2, a long
            long = h > LONG_STEP  # step by DDIM from u_1
            u2 = jnp.where(last, ddim_2 - s_2 * jnp.expm1(r2 * h) * d1, u2)
            u2 = jnp.where(long, _ddim(a_1, a_2, s_2, (r2 - r1) * h, u1, eps_1), u2)
        u2 = u2.astype(x.dtype)
        eps_2 = model.eps(t2, u2, s_2)
        base = _ddim(a_s, a_t, s_t, h, x, eps_s)
        y1 = base - (s_t / r2) * h * _phi(2, h) * (eps_2 - eps_s)
        y2 = base - (s_t / (2 * r1)) * jnp.expm1(h) * d1  # second order, from u1 alone
        error = y1 - y2
        if last is not None:  # ... and both go on by DDIM from u_2 to t
            lower = last | long
            y1 = jnp.where(lower, _ddim(a_2, a_t, s_t, (1 - r2) * h, u2, eps_2), y1)
        return y1.astype(x.dtype), error.astype(x.dtype)


DDIM = DPMSolver1
"""DDIM (Song, Meng and Ermon 2021) is DPM-Solver-1: the same first-order exponential step."""
