r"""Multistep exponential integrators (data prediction): DPM-Solver++ 2M/3M and UniPC.

One score evaluation per step: the data predictions $\hat x_0$ of earlier steps give the
polynomial in $\lambda$ that is integrated exactly (see [`scoresde._solver.base`][]).
"""

import abc
import math
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp

from .base import AbstractPFSolver, PFModel, _check_y, _phi, _times, _unwrap


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
    first $n$ = `num_active` nodes $(\theta_j, D_j)$ written as $\sum_k c_k \theta^k / k!$.

    In Lagrange form: with $L_j(\theta) = \prod_{i \ne j} (\theta - \theta_i) / (\theta_j -
    \theta_i) = \sum_k \ell_{jk} \theta^k$ over the active nodes, $c_k = k! \sum_j \ell_{jk}
    D_j$, so $b_j = \sum_k \ell_{jk}\, k!\, g_k$ (the Vandermonde system solved in closed form).
    Inactive nodes get weight 0. `thetas`: nodes in units of the step; `gs[k]` the integral of
    $e^{(\theta - 1)h}\theta^k/k!$ times $h$. At most 4 nodes: scalar arithmetic written out,
    which XLA fuses (no LAPACK call per step, and no pivoting: a few hundred instructions where
    Gaussian elimination took over a thousand).
    """
    m = thetas.shape[0]
    active = jnp.arange(m) < num_active
    one, zero = jnp.ones((), thetas.dtype), jnp.zeros((), thetas.dtype)
    weights = []
    for j in range(m):
        coef = [one] + [zero] * (m - 1)  # L_j's monomial coefficients, lowest degree first
        for i in range(m):
            if i == j:
                continue
            # times (theta - theta_i) / (theta_j - theta_i) where node i is active, else 1
            scale = 1 / jnp.where(active[i], thetas[j] - thetas[i], one)
            shift = jnp.where(active[i], -thetas[i] * scale, one)
            scale = jnp.where(active[i], scale, zero)
            coef = [shift * coef[0]] + [shift * coef[k] + scale * coef[k - 1] for k in range(1, m)]
        w = sum(coef[k] * math.factorial(k) * gs[k] for k in range(m))
        weights.append(jnp.where(active[j], w, zero))
    return jnp.stack(weights)


def _weighted_sum(weights, preds):
    """`sum_j weights[j] * preds[j]` written out, so XLA fuses it into one elementwise pass."""
    total = weights[0].astype(preds[0].dtype) * preds[0]
    for j in range(1, len(preds)):
        total = total + weights[j].astype(preds[j].dtype) * preds[j]
    return total


class _Multistep(AbstractPFSolver):
    """Data-prediction multistep exponential integrators (one evaluation per step)."""

    evals_per_step: ClassVar[int] = 1
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
        model = PFModel(sde, score)
        ts, tt = _times(time, direction, t0, t1)
        a_s, s_s, l_s = model.marginal(ts)
        a_t, s_t, l_t = model.marginal(tt)
        d_s = model.data(ts, y0)
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

    @abc.abstractmethod
    def _correct(self, model, ts, y0, state, l_s, d_s, a_s, s_s):
        """The state at the step's start, corrected with the new prediction `d_s` (or `y0`)."""

    @abc.abstractmethod
    def _predict(self, l_s, l_t, a_t, s_t, s_s, x_s, lams, preds, count):
        """The state at the step's end from the corrected start and the newest predictions."""


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

    def _correct(self, model, ts, y0, state, l_s, d_s, a_s, s_s):
        return y0

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

    def _correct(self, model, ts, y0, state, l_s, d_s, a_s, s_s):
        return y0

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
