r"""Fast probability-flow ODE solvers as diffrax solvers: exponential integrators and EDM's Heun.

The PF-ODE of a linear SDE is semi-linear. In the half log-SNR $\lambda = \ln(\alpha/\sigma)$ its
exact solution over a step $\lambda_s \to \lambda_t$, $h = \lambda_t - \lambda_s > 0$, is

- noise prediction $\hat\epsilon = -\sigma\,\mathrm{score}$ (DPM-Solver):
  $x_t = \frac{\alpha_t}{\alpha_s} x_s - \sigma_t \int_0^h e^{h - \tau}\hat\epsilon(\lambda_s + \tau)\,d\tau$;
- data prediction $\hat x_0 = (x + \sigma^2\,\mathrm{score})/\alpha$ (DPM-Solver++):
  $x_t = \frac{\sigma_t}{\sigma_s} x_s + \alpha_t \int_0^h e^{\tau - h}\hat x_0(\lambda_s + \tau)\,d\tau$.

Expanding the prediction in a polynomial in $\tau$ with Taylor coefficients $c_k$ integrates
exactly: $\sum_k c_k h^{k+1}\varphi_{k+1}(\pm h)$ with $\varphi_1(z) = (e^z - 1)/z$,
$\varphi_{k+1}(z) = (\varphi_k(z) - 1/k!)/z$. Single-step solvers get the coefficients from extra
evaluations inside the step; multistep solvers from the predictions of earlier steps (one score
evaluation per step).

Every solver here is a `diffrax.AbstractSolver` for the term
[`scoresde.probability_flow_term`][] (in the reversed time $s = T - t$; diffeqsolve wraps it in
`diffrax.WrapTerm`). It reads the SDE and the score from that term, so it works for every SDE with
`marginal`, `log_snr` and `log_snr_inverse` (VP, sub-VP, VE, EDM), on one sample or a whole batch
(the state may have any shape), in `diffrax.diffeqsolve` and in [`scoresde.sample_ode`][]. The
class attributes `score_evals_at_init` and `score_evals_per_step` give the exact cost.
"""

import math
from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from diffrax._term import WrapTerm as _WrapTerm

from ._checks import check_positive, check_shape, check_steps, check_t_eps, is_concrete
from ._grid import clipped_log_snr_grid, time_grid  # noqa: F401  (re-exported)
from ._sde import AbstractSDE
from ._terms import ProbabilityFlow, checked_score

__all__ = [
    "AbstractPFSolver",
    "DPMSolver1",
    "DPMSolver2",
    "DPMSolver3",
    "DPMSolverPP2M",
    "DPMSolverPP3M",
    "UniPC",
    "EDMHeun",
    "sample_edm",
    "EDMResult",
    "clipped_log_snr_grid",
]


# --------------------------------------------------------------------------------------------
# phi functions, accurate for small arguments


def _phi(k: int, z):
    r"""$\varphi_k(z) = \sum_{j \ge 0} z^j / (j + k)!$, with a Taylor series for small $|z|$."""
    z = jnp.asarray(z)
    small = jnp.abs(z) < 0.5
    zs = jnp.where(small, z, 0.0)
    series = sum(zs**j / float(math.factorial(j + k)) for j in range(9))
    zl = jnp.where(small, 1.0, z)
    closed = jnp.expm1(zl)
    for j in range(1, k):
        closed = closed - zl**j / float(math.factorial(j))
    closed = closed / zl**k
    return jnp.where(small, series, closed)


# --------------------------------------------------------------------------------------------
# Reading the SDE and the score out of the term


def _unwrap(solver, terms):
    """`(sde, score, direction, time)` from `probability_flow_term(sde, score)`, possibly wrapped;
    `time(s)` maps the term's reversed time to the diffusion time."""
    term, direction = terms, 1
    while isinstance(term, _WrapTerm):
        direction = direction * term.direction
        term = term.term
    vf = getattr(term, "vector_field", None)
    if not (isinstance(term, dfx.ODETerm) and isinstance(vf, ProbabilityFlow)):
        raise TypeError(
            f"{type(solver).__name__} integrates the probability-flow ODE only: pass "
            "terms=scoresde.probability_flow_term(sde, score) (use scoresde.sample_ode, not "
            f"sample_sde); got {type(term).__name__}"
            + (f" of {type(vf).__name__}" if vf is not None else "")
            + "."
        )
    sde = vf.sde
    for method in ("marginal", "log_snr", "log_snr_inverse"):
        if not callable(getattr(sde, method, None)):
            raise TypeError(
                f"{type(solver).__name__} needs an SDE with `{method}`; "
                f"{type(sde).__name__} has none."
            )
    return sde, vf.score, direction, vf.time


class _Model(eqx.Module):
    """The score and its noise / data predictions at a diffusion time `t`."""

    sde: AbstractSDE
    score: Callable

    def marginal(self, t):
        alpha, sigma = self.sde.marginal(t)
        return alpha, sigma, self.sde.log_snr(t)

    def at_lambda(self, lam):
        t = self.sde.log_snr_inverse(lam)
        alpha, sigma = self.sde.marginal(t)
        return t, alpha, sigma

    def eps(self, t, x, sigma):
        r"""$\hat\epsilon = -\sigma\,\mathrm{score}$."""
        return (-sigma * checked_score(self.score, t, x)).astype(x.dtype)

    def data(self, t, x, alpha, sigma):
        r"""$\hat x_0 = (x + \sigma^2\,\mathrm{score}) / \alpha$."""
        return ((x + sigma**2 * checked_score(self.score, t, x)) / alpha).astype(x.dtype)


def _times(time, direction, t0, t1):
    """Diffusion times of the step `[t0, t1]` in diffeqsolve's (wrapped, reversed) time."""
    return time(direction * t0), time(direction * t1)


def _check_y(solver, y0):
    if not (isinstance(y0, jax.Array) or hasattr(y0, "shape")):
        raise TypeError(
            f"{type(solver).__name__} needs the state y0 to be one array; got {type(y0).__name__}."
        )


class AbstractPFSolver(dfx.AbstractSolver):
    """Base of this module's solvers: the term is [`scoresde.probability_flow_term`][].

    Class attributes `score_evals_at_init` and `score_evals_per_step` state the exact cost
    (read by [`scoresde.sample_ode`][] to count `nfe`).
    """

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., dfx.LocalLinearInterpolation]] = (
        dfx.LocalLinearInterpolation
    )
    score_evals_at_init: ClassVar[int] = 0
    score_evals_per_step: ClassVar[int]

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


# --------------------------------------------------------------------------------------------
# Single-step DPM-Solvers (noise prediction)


class _SingleStep(AbstractPFSolver):
    def init(self, terms, t0, t1, y0, args):
        _unwrap(self, terms)
        _check_y(self, y0)
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        sde, score, direction, time = _unwrap(self, terms)
        model = _Model(sde, score)
        ts, tt = _times(time, direction, t0, t1)
        y1, y_error = self._step(model, ts, tt, y0)
        dense_info = dict(y0=y0, y1=y1)
        return y1, y_error, dense_info, None, dfx.RESULTS.successful


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

    score_evals_per_step: ClassVar[int] = 1

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

    score_evals_per_step: ClassVar[int] = 2
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

    score_evals_per_step: ClassVar[int] = 3

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


# --------------------------------------------------------------------------------------------
# Multistep solvers (data prediction), one score evaluation per step


class _History(eqx.Module):
    """The last `k` data predictions (a ring buffer), their log-SNRs (index 0 the newest) and the
    step count.

    `preds[count % k]` is where the next prediction goes, so the newest stored one sits at
    `(count - 1) % k`: each step writes one slice in place instead of shifting the whole history.
    `x_start` is the (corrected) state at the start of the previous step, for UniPC's corrector.
    """

    lams: jax.Array
    preds: jax.Array
    count: jax.Array
    x_start: jax.Array

    def newest(self, num: int) -> list:
        """The `num` newest stored predictions, newest first."""
        k = self.preds.shape[0]
        return [
            jax.lax.dynamic_index_in_dim(self.preds, (self.count - 1 - i) % k, keepdims=False)
            for i in range(num)
        ]


def _taylor_weights(thetas, num_active, gs):
    r"""Weights $b_j$ with $\sum_j b_j D_j = \sum_{k<n} c_k g_k$ for the polynomial through the
    first `num_active` nodes $(\theta_j, D_j)$ written as $\sum_k c_k \theta^k / k!$.

    Inactive nodes get weight 0. `thetas`: nodes in units of the step; `gs[k]` the integral of
    $e^{(\theta - 1)h}\theta^k/k!$ times $h$. The system is at most 4x4: it is solved by
    unrolled Gaussian elimination (scalar arithmetic XLA fuses, no LAPACK call per step).
    """
    m = thetas.shape[0]
    j = jnp.arange(m)
    k = jnp.arange(m)
    fact = jnp.asarray([math.factorial(i) for i in range(m)], thetas.dtype)
    vander = thetas[:, None] ** k[None, :] / fact[None, :]
    active_row = j[:, None] < num_active
    active_col = k[None, :] < num_active
    eye = jnp.eye(m, dtype=thetas.dtype)
    mat = jnp.where(active_row & active_col, vander, jnp.where(active_row | active_col, 0.0, eye))
    g = jnp.where(k < num_active, gs, 0.0)
    return _small_solve(mat.T, g)


def _small_solve(a, b):
    """`solve(a, b)` for a tiny well-conditioned system, unrolled (partial pivoting)."""
    m = a.shape[0]
    a = [[a[i, j] for j in range(m)] for i in range(m)]
    b = [b[i] for i in range(m)]
    for col in range(m):
        # pivot: swap in the row (at or below col) with the largest entry in this column
        for row in range(col + 1, m):
            swap = jnp.abs(a[row][col]) > jnp.abs(a[col][col])
            for j in range(m):
                a[col][j], a[row][j] = (
                    jnp.where(swap, a[row][j], a[col][j]),
                    jnp.where(swap, a[col][j], a[row][j]),
                )
            b[col], b[row] = jnp.where(swap, b[row], b[col]), jnp.where(swap, b[col], b[row])
        for row in range(col + 1, m):
            f = a[row][col] / a[col][col]
            a[row] = [a[row][j] - f * a[col][j] for j in range(m)]
            b[row] = b[row] - f * b[col]
    x = [None] * m
    for i in reversed(range(m)):
        acc = b[i]
        for j in range(i + 1, m):
            acc = acc - a[i][j] * x[j]
        x[i] = acc / a[i][i]
    return jnp.stack(x)


def _weighted_sum(weights, preds):
    """`sum_j weights[j] * preds[j]` written out, so XLA fuses it into one elementwise pass."""
    total = weights[0].astype(preds[0].dtype) * preds[0]
    for j in range(1, len(preds)):
        total = total + weights[j].astype(preds[j].dtype) * preds[j]
    return total


class _Multistep(AbstractPFSolver):
    """Data-prediction multistep exponential integrators (one evaluation per step)."""

    score_evals_per_step: ClassVar[int] = 1
    history: ClassVar[int]

    def init(self, terms, t0, t1, y0, args):
        _unwrap(self, terms)
        _check_y(self, y0)
        y0 = jnp.asarray(y0)
        k = self.history
        dtype = jnp.result_type(t0, float)
        return _History(
            lams=jnp.zeros((k,), dtype),
            preds=jnp.zeros((k, *y0.shape), y0.dtype),
            count=jnp.zeros((), jnp.int32),
            x_start=jnp.zeros_like(y0),
        )

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del made_jump
        sde, score, direction, time = _unwrap(self, terms)
        model = _Model(sde, score)
        ts, tt = _times(time, direction, t0, t1)
        a_s, s_s, l_s = model.marginal(ts)
        a_t, s_t, l_t = model.marginal(tt)
        d_s = model.data(ts, y0, a_s, s_s)
        state = solver_state
        k = self.history
        lams = jnp.concatenate([l_s[None].astype(state.lams.dtype), state.lams[:-1]])
        preds = [d_s, *state.newest(k - 1)]  # newest first
        x_s = self._correct(model, ts, y0, state, l_s, d_s, a_s, s_s)
        # A zero-length step (diffrax clips steps ending within 100 ULP of t1 to t1) changes
        # nothing: keep y0 and the history, so no later coefficient divides by h = 0.
        null = ~(l_t > l_s)
        l_t_safe = jnp.where(null, l_s + 1, l_t)
        y1 = self._predict(l_s, l_t_safe, a_t, s_t, s_s, x_s, lams, preds, state.count)
        y1 = jnp.where(null, y0, y1)
        slot = state.count % k
        kept = jax.lax.dynamic_index_in_dim(state.preds, slot, keepdims=False)
        new_state = _History(
            lams=jnp.where(null, state.lams, lams),
            preds=jax.lax.dynamic_update_index_in_dim(
                state.preds, jnp.where(null, kept, d_s), slot, 0
            ),
            count=state.count + jnp.where(null, 0, 1),
            x_start=jnp.where(null, state.x_start, x_s),
        )
        dense_info = dict(y0=y0, y1=y1)
        return y1, None, dense_info, new_state, dfx.RESULTS.successful

    def _correct(self, model, ts, y0, state, l_s, d_s, a_s, s_s):
        return y0

    def _predict(self, l_s, l_t, a_t, s_t, s_s, x_s, lams, preds, count):
        raise NotImplementedError


class DPMSolverPP2M(_Multistep):
    r"""Multistep DPM-Solver++ (2M), data prediction, one evaluation per step.

    With $r = h_{prev}/h$: $D = (1 + \tfrac{1}{2r})\hat x_0(\lambda_s) - \tfrac{1}{2r}\hat
    x_0(\lambda_{prev})$ and $x_t = \frac{\sigma_t}{\sigma_s}x_s - \alpha_t(e^{-h} - 1) D$;
    the first step is first order. Second order.

    ??? cite "Reference"
        ```bibtex
        @article{lu2022dpmsolverpp,
          title={{DPM-Solver++}: Fast Solver for Guided Sampling of Diffusion Probabilistic
                 Models},
          author={Lu, Cheng and Zhou, Yuhao and Bao, Fan and Chen, Jianfei and Li, Chongxuan
                  and Zhu, Jun},
          journal={arXiv:2211.01095}, year={2022}
        }
        ```
    """

    history: ClassVar[int] = 2

    def order(self, terms):
        return 2

    def _predict(self, l_s, l_t, a_t, s_t, s_s, x_s, lams, preds, count):
        h = l_t - l_s
        h_prev = lams[0] - lams[1]
        first = count < 1
        half_inv_r = jnp.where(first, 0.0, 0.5 * h / jnp.where(first, 1.0, h_prev))
        d = (1 + half_inv_r) * preds[0] - half_inv_r * preds[1]
        y1 = (s_t / s_s) * x_s - a_t * jnp.expm1(-h) * d
        return y1.astype(x_s.dtype)


class DPMSolverPP3M(_Multistep):
    r"""Multistep third-order data-prediction exponential integrator (DPM-Solver++ 3M).

    The quadratic through the last three predictions $\hat x_0(\lambda_j)$, written as
    $\sum_k c_k \tau^k/k!$ around $\lambda_s$, is integrated exactly:
    $x_t = \frac{\sigma_t}{\sigma_s}x_s + \alpha_t\sum_{k=0}^{2} c_k h^{k+1}\varphi_{k+1}(-h)$.
    The first two steps use orders 1 and 2. One evaluation per step.
    """

    history: ClassVar[int] = 3

    def order(self, terms):
        return 3

    def _predict(self, l_s, l_t, a_t, s_t, s_s, x_s, lams, preds, count):
        return _exp_multistep(l_s, l_t, a_t, s_t, s_s, x_s, lams, preds, count, self.history)


def _exp_multistep(l_s, l_t, a_t, s_t, s_s, x_s, lams, preds, count, order):
    """Order-`order` data-prediction predictor from the newest `order` predictions."""
    h = l_t - l_s
    dtype = jnp.result_type(lams.dtype, h)
    thetas = ((lams[:order] - l_s) / h).astype(dtype)
    gs = jnp.stack([h * _phi(k + 1, -h) for k in range(order)]).astype(dtype)
    num_active = jnp.minimum(count + 1, order)
    weights = _taylor_weights(thetas, num_active, gs)
    y1 = (s_t / s_s) * x_s + a_t * _weighted_sum(weights, preds[:order])
    return y1.astype(x_s.dtype)


class UniPC(_Multistep):
    r"""UniPC-style predictor-corrector: a multistep data-prediction predictor of order `order`
    plus a corrector of order `order + 1` that costs no extra evaluation.

    Step $k$ evaluates $\hat x_0$ at the predicted $x_k$ (needed for the next step anyway), then
    re-does the previous step $x_{k-1} \to x_k$ with the polynomial that also passes through that
    new prediction (an implicit-Adams-like corrector, integrated exactly in $\lambda$), and
    predicts $x_{k+1}$ from the corrected $x_k$. The last step stays uncorrected.

    **Arguments:**

    - `order`: the predictor's order, 1 to 3 (default 3: a fourth-order corrector).
    - `corrector`: apply the corrector (default `True`); `False` gives the bare predictor.

    ??? cite "Reference"
        ```bibtex
        @inproceedings{zhao2023unipc,
          title={{UniPC}: A Unified Predictor-Corrector Framework for Fast Sampling of
                 Diffusion Models},
          author={Zhao, Wenliang and Bai, Lujia and Rao, Yongming and Zhou, Jie and Lu, Jiwen},
          booktitle={NeurIPS}, year={2023}
        }
        ```
    """

    order_: int = eqx.field(static=True, default=3)
    corrector: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.order_ not in (1, 2, 3):
            raise ValueError(f"UniPC needs order in (1, 2, 3); got order={self.order_}.")

    def __init__(self, order: int = 3, corrector: bool = True):
        self.order_ = order
        self.corrector = corrector

    @property
    def history(self):
        return self.order_ + 1

    def order(self, terms):
        return self.order_ + (1 if self.corrector else 0)

    def _correct(self, model, ts, y0, state, l_s, d_s, a_s, s_s):
        if not self.corrector:
            return y0
        # Redo the previous step lams[0] -> l_s with the new prediction d_s as an extra node.
        prev_l = state.lams[0]
        h = l_s - prev_l
        have_prev = state.count >= 1
        h_safe = jnp.where(have_prev, h, 1.0)
        lams = jnp.concatenate([l_s[None].astype(state.lams.dtype), state.lams])
        order = self.order_ + 1
        preds = [d_s, *state.newest(order - 1)]
        dtype = jnp.result_type(lams.dtype, h_safe)
        thetas = ((lams[:order] - prev_l) / h_safe).astype(dtype)
        gs = jnp.stack([h_safe * _phi(k + 1, -h_safe) for k in range(order)]).astype(dtype)
        num_active = jnp.minimum(state.count + 1, order)
        weights = _taylor_weights(thetas, num_active, gs)
        _, s_prev = model.sde.marginal(model.sde.log_snr_inverse(prev_l))
        s_prev = jnp.where(have_prev, s_prev, 1.0)
        x_c = (s_s / s_prev) * state.x_start + a_s * _weighted_sum(weights, preds[:order])
        return jnp.where(have_prev, x_c.astype(y0.dtype), y0)

    def _predict(self, l_s, l_t, a_t, s_t, s_s, x_s, lams, preds, count):
        return _exp_multistep(l_s, l_t, a_t, s_t, s_s, x_s, lams, preds, count, self.order_)


# --------------------------------------------------------------------------------------------
# EDM's Heun sampler


class EDMHeun(AbstractPFSolver):
    r"""The second-order Heun sampler of Karras et al. (2022), two evaluations per step.

    It runs in the scaled variables $\tilde x = x/\alpha$, $\tilde\sigma = \sigma/\alpha =
    e^{-\lambda}$, where the PF-ODE reads $d\tilde x/d\tilde\sigma = (\tilde x - \hat x_0)/\tilde\sigma$
    (for [`scoresde.EDMSDE`][] these are $x$ and $t$ themselves): an Euler step to
    $\tilde\sigma_{i+1}$, then the trapezoidal correction. For the stochastic version with
    churn see [`scoresde.sample_edm`][].

    ??? cite "Reference"
        ```bibtex
        @inproceedings{karras2022edm,
          title={Elucidating the Design Space of Diffusion-Based Generative Models},
          author={Karras, Tero and Aittala, Miika and Aila, Timo and Laine, Samuli},
          booktitle={NeurIPS}, year={2022}
        }
        ```
    """

    score_evals_per_step: ClassVar[int] = 2

    def order(self, terms):
        return 2

    def init(self, terms, t0, t1, y0, args):
        _unwrap(self, terms)
        _check_y(self, y0)
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        sde, score, direction, time = _unwrap(self, terms)
        ts, tt = _times(time, direction, t0, t1)
        y1, y_err = _heun_step(_Model(sde, score), ts, tt, y0)
        return y1, y_err, dict(y0=y0, y1=y1), None, dfx.RESULTS.successful


def _heun_step(model, ts, tt, x):
    a_s, s_s, _ = model.marginal(ts)
    a_t, s_t, _ = model.marginal(tt)
    sig_s, sig_t = s_s / a_s, s_t / a_t
    xs = x / a_s
    d_s = (xs - model.data(ts, x, a_s, s_s)) / sig_s
    x_euler = xs + (sig_t - sig_s) * d_s
    d_t = (x_euler - model.data(tt, (a_t * x_euler).astype(x.dtype), a_t, s_t)) / sig_t
    x_heun = xs + (sig_t - sig_s) * 0.5 * (d_s + d_t)
    return (a_t * x_heun).astype(x.dtype), (a_t * (x_heun - x_euler)).astype(x.dtype)


class EDMResult(eqx.Module):
    """Samples of [`scoresde.sample_edm`][]: `x` `(num, *data)` and `nfe` per sample."""

    x: jax.Array
    nfe: jax.Array


@eqx.filter_jit
def _sample_edm(
    sde, score, key, t_eps, x_T, churn, s_tmin, s_tmax, s_noise, *, rho, shape, steps, denoise
):
    num, data_shape = shape[0], shape[1:]
    dtype = jnp.result_type(float)
    keys = jax.vmap(lambda i: jr.fold_in(key, i))(jnp.arange(num))
    both = jax.vmap(jr.split)(keys)
    prior_keys, noise_keys = both[:, 0], both[:, 1]
    if x_T is None:
        x_T = jax.vmap(lambda k: sde.prior_sample(k, data_shape).astype(dtype))(prior_keys)
    ts = time_grid(sde, steps, t_eps=t_eps, kind="karras", rho=rho, dtype=dtype)
    model = _Model(sde, score)
    gamma_max = jnp.minimum(churn / steps, math.sqrt(2) - 1)

    def one(x, noise_key):
        def body(x, i):
            t_cur, t_next = ts[i], ts[i + 1]
            a_c, s_c, lam_c = model.marginal(t_cur)
            sig = s_c / a_c
            gamma = jnp.where((sig >= s_tmin) & (sig <= s_tmax), gamma_max, 0.0)
            sig_hat = sig * (1 + gamma)
            t_hat = sde.log_snr_inverse(-jnp.log(sig_hat))
            t_hat = jnp.where(gamma > 0, t_hat, t_cur)
            a_h, _ = sde.marginal(t_hat)
            z = jr.normal(jr.fold_in(noise_key, i), data_shape, dtype)
            extra = jnp.sqrt(jnp.maximum(sig_hat**2 - sig**2, 0.0)) * s_noise
            x_hat = a_h * (x / a_c + extra * z)
            x_next, _ = _heun_step(model, t_hat, t_next, x_hat.astype(dtype))
            return x_next, None

        x, _ = jax.lax.scan(body, x, jnp.arange(steps))
        if denoise:
            a, s = sde.marginal(ts[-1])
            x = model.data(ts[-1], x, a, s)
        return x

    x = jax.vmap(one)(x_T, noise_keys)
    nfe = jnp.full((num,), 2 * steps + (1 if denoise else 0), jnp.int32)
    return x, nfe


def sample_edm(
    sde: AbstractSDE,
    score,
    *,
    key,
    shape: tuple[int, ...],
    steps: int = 18,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    rho: float = 7.0,
    t_eps: float | None = None,
    denoise: bool = True,
    x_T=None,
) -> EDMResult:
    r"""EDM's Heun sampler (Karras et al. 2022, Algorithm 2) with optional churn.

    On the Karras grid $\tilde\sigma_0 > \dots > \tilde\sigma_N$ ($\tilde\sigma = \sigma/\alpha$,
    `steps` = $N$): at each step, if $\tilde\sigma_i \in [S_{tmin}, S_{tmax}]$, raise the noise to
    $\hat\sigma = (1 + \gamma)\tilde\sigma_i$ with $\gamma = \min(S_{churn}/N, \sqrt2 - 1)$ by
    adding $\sqrt{\hat\sigma^2 - \tilde\sigma_i^2}\,S_{noise}\,z$ to $\tilde x$, then one Heun
    step to $\tilde\sigma_{i+1}$. `churn=0` is the deterministic sampler ([`scoresde.EDMHeun`][]).
    EDM's last step goes to $\sigma = 0$ with Euler, which is the Tweedie denoising step here
    (`denoise=True`, +1 NFE).

    **Arguments:** `key` (sample `i` uses `fold_in(key, i)`), `shape = (num, *data_shape)`,
    `steps`, the churn parameters, `rho` (the grid's exponent), `t_eps` (end time, default
    `sde.default_t_eps`), `x_T` (given latents).

    **Returns:** an [`scoresde.EDMResult`][] with `x` and `nfe` ($2N$, +1 with `denoise`).
    """
    if not isinstance(sde, AbstractSDE):
        raise TypeError(f"sde must be a scoresde SDE (AbstractSDE); got {type(sde).__name__}.")
    if not callable(score):
        raise TypeError(f"score must be callable as score(t, x); got {type(score).__name__}.")
    shape = check_shape(shape)
    steps = check_steps(steps)
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    check_positive("churn", churn, strict=False)
    check_positive("s_tmin", s_tmin, strict=False)
    if is_concrete(s_tmax) and not float(s_tmax) > 0:
        raise ValueError(f"s_tmax must be > 0; got s_tmax={s_tmax!r}.")
    check_positive("s_noise", s_noise, strict=False)
    check_positive("rho", rho)
    dtype = jnp.result_type(float)
    if x_T is not None:
        x_T = jnp.asarray(x_T, dtype)
        if x_T.shape != shape:
            raise ValueError(f"x_T has shape {x_T.shape}; expected shape={shape}.")
    f = lambda v: jnp.asarray(v, dtype)
    x, nfe = _sample_edm(
        sde,
        score,
        key,
        f(t_eps),
        x_T,
        f(churn),
        f(s_tmin),
        f(s_tmax),
        f(s_noise),
        rho=float(rho),
        shape=shape,
        steps=steps,
        denoise=denoise,
    )
    return EDMResult(x=x, nfe=nfe)
