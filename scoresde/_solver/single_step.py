r"""Single-step DPM-Solvers (noise prediction): DPM-Solver-1 (DDIM), -2 and -3.

The noise prediction $\hat\epsilon = -\sigma\,\mathrm{score}$ is expanded around the step's
start from extra evaluations inside the step (see [`scoresde._solver.base`][]).
"""

from typing import ClassVar

import jax.numpy as jnp

from .base import _phi, _SingleStep


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

    def _step(self, model, ts, tt, x):
        a_s, s_s, l_s = model.marginal(ts)
        a_t, s_t, l_t = model.marginal(tt)
        h = l_t - l_s
        eps_s = model.eps(ts, x, s_s)
        y1 = (a_t / a_s) * x - s_t * jnp.expm1(h) * eps_s
        return y1.astype(x.dtype), None


class DPMSolver2(_SingleStep):
    r"""Single-step DPM-Solver-2 (midpoint in $\lambda$, $r_1 = 1/2$), two evaluations per step.

    $u = \frac{\alpha_{s_1}}{\alpha_s}x_s - \sigma_{s_1}(e^{r_1 h}-1)\hat\epsilon_s$,
    $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h-1)\hat\epsilon_s
    - \frac{\sigma_t}{2r_1}(e^h-1)(\hat\epsilon(u, s_1) - \hat\epsilon_s)$.
    Second order; the error estimate (the difference with DPM-Solver-1) makes it adaptive
    (DPM-Solver-12) under `diffrax.PIDController`.

    Reference: as [`scoresde.DPMSolver1`][].
    """

    evals_per_step: ClassVar[int] = 2
    r1: ClassVar[float] = 0.5

    def order(self, terms):
        return 2

    def _step(self, model, ts, tt, x):
        r1 = self.r1
        a_s, s_s, l_s = model.marginal(ts)
        a_t, s_t, l_t = model.marginal(tt)
        h = l_t - l_s
        t1, a_1, s_1 = model.at_lambda(l_s + r1 * h)
        eps_s = model.eps(ts, x, s_s)
        u = (a_1 / a_s) * x - s_1 * jnp.expm1(r1 * h) * eps_s
        d1 = model.eps(t1, u.astype(x.dtype), s_1) - eps_s
        y_lo = (a_t / a_s) * x - s_t * jnp.expm1(h) * eps_s
        correction = -(s_t / (2 * r1)) * jnp.expm1(h) * d1
        return (y_lo + correction).astype(x.dtype), correction.astype(x.dtype)


class DPMSolver3(_SingleStep):
    r"""Single-step DPM-Solver-3 ($r_1 = 1/3$, $r_2 = 2/3$), three evaluations per step.

    $u_1 = \frac{\alpha_{s_1}}{\alpha_s}x_s - \sigma_{s_1}(e^{r_1h}-1)\hat\epsilon_s$,
    $D_1 = \hat\epsilon(u_1) - \hat\epsilon_s$;
    $u_2 = \frac{\alpha_{s_2}}{\alpha_s}x_s - \sigma_{s_2}(e^{r_2h}-1)\hat\epsilon_s
    - \frac{\sigma_{s_2} r_2}{r_1}\,r_2h\,\varphi_2(r_2h)\,D_1$,
    $D_2 = \hat\epsilon(u_2) - \hat\epsilon_s$;
    $x_t = \frac{\alpha_t}{\alpha_s}x_s - \sigma_t(e^h-1)\hat\epsilon_s
    - \frac{\sigma_t}{r_2}\,h\varphi_2(h)\,D_2$. Third order; the error estimate (against the
    second-order solution built from $u_1$) makes it adaptive (DPM-Solver-23).

    Reference: as [`scoresde.DPMSolver1`][].
    """

    evals_per_step: ClassVar[int] = 3

    def order(self, terms):
        return 3

    def _step(self, model, ts, tt, x):
        r1, r2 = 1.0 / 3.0, 2.0 / 3.0
        a_s, s_s, l_s = model.marginal(ts)
        a_t, s_t, l_t = model.marginal(tt)
        h = l_t - l_s
        t1, a_1, s_1 = model.at_lambda(l_s + r1 * h)
        t2, a_2, s_2 = model.at_lambda(l_s + r2 * h)
        eps_s = model.eps(ts, x, s_s)
        u1 = (a_1 / a_s) * x - s_1 * jnp.expm1(r1 * h) * eps_s
        d1 = model.eps(t1, u1.astype(x.dtype), s_1) - eps_s
        u2 = (
            (a_2 / a_s) * x
            - s_2 * jnp.expm1(r2 * h) * eps_s
            - (s_2 * r2 / r1) * (r2 * h) * _phi(2, r2 * h) * d1
        )
        d2 = model.eps(t2, u2.astype(x.dtype), s_2) - eps_s
        base = (a_t / a_s) * x - s_t * jnp.expm1(h) * eps_s
        y1 = base - (s_t / r2) * h * _phi(2, h) * d2
        y2 = base - (s_t / (2 * r1)) * jnp.expm1(h) * d1  # second order, from u1 alone
        return y1.astype(x.dtype), (y1 - y2).astype(x.dtype)


DDIM = DPMSolver1
"""DDIM (Song, Meng and Ermon 2021) is DPM-Solver-1: the same first-order exponential step."""
