r"""Adaptive steps for the reverse-time SDE: "Gotta Go Fast" (Jolicoeur-Martineau et al. 2021,
Algorithm 1).

In the reversed time $s = -t$ (from $-T$ to $-t_\varepsilon$), with the reverse drift
$b(s, x) = -f(t)x + g(t)^2\,\mathrm{score}(t, x)$ and ONE Brownian increment
$\Delta W = W(s + h) - W(s)$ per attempted step $h$:

$$x' = x + h\,b(s, x) + g(t)\,\Delta W, \qquad
\tilde x = x + h\,b(s + h, x') + g(t - h)\,\Delta W, \qquad x'' = \tfrac12 (x' + \tilde x)$$

(Euler-Maruyama and its improved-Euler partner on the same noise). The error
$E = \mathrm{RMS}_j\big[(x'_j - x''_j)/\delta_j\big]$ with the mixed tolerance
$\delta = \max(\varepsilon_{abs}, \varepsilon_{rel}\max(|x'|, |x'_{prev}|))$ ($x'_{prev}$: the
Euler-Maruyama proposal of the last accepted step) decides: accept $x''$ if $E \le 1$; in any case
$h \leftarrow \min(s_{end} - s, \theta h E^{-r})$ with $\theta = r = 0.9$.

Each sample runs its own `lax.while_loop` (under `jax.vmap`) along its own Brownian path keyed
by `fold_in(key, i)`, so a rejected step retries over a shorter interval of the SAME path. (The
authors' PyTorch code draws a fresh $z$ at every attempt; redrawing after a rejection favours
small increments and biases the sampler.) Step ends lie on a grid of $2^{16}$ quanta, and the
path is a Brownian tree over that grid (`brownian.grid_brownian`), read only at its nodes.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._checks import (
    ADVICE,
    check_bool,
    check_int,
    check_key,
    check_latents,
    check_positive,
    check_shape,
    check_t_eps,
    finite_rows,
    is_concrete,
    on_host,
    raise_if_not_finite,
)
from .._custom_types import ScoreFn
from .._keys import latents_and_noise_keys
from .._nfe import network_nfe
from .._score_calls import bind, check_cond, diagnose_score, tweedie_batch
from .._sde import AbstractSDE, check_sde_and_score
from .._sharding import map_batch
from .._terms import ReverseDrift
from .brownian import grid_brownian
from .result import SampleResult

SAFETY = 0.9  # theta: the step-size safety factor
EXPONENT = 0.9  # r: h <- theta h E^-r
# Loop status per sample.
RUNNING, DONE, MAX_STEPS, NOT_FINITE, UNDERFLOW = 0, 1, 2, 3, 4
LEVELS = 16
QUANTA = 2**LEVELS  # step ends lie on this many equal quanta of the span (see `_solve_one`)


class AdaptiveStats(eqx.Module):
    """Per-sample counters of the adaptive loop: attempted and accepted steps, and a status
    (1 done; 2 max_steps exhausted; 3 non-finite error estimate; 4 step below `dt_min`)."""

    attempted: jax.Array
    accepted: jax.Array
    status: jax.Array


def _solve_one(
    sde, score, x0, noise_key, *, s0, s_end, rtol, atol, h_init, tol, max_steps, log_snr_steps
):
    r"""One sample's adaptive solve: `(x at t_eps, attempted, accepted, status)`. The controller's
    variable `u` is the reversed time `s`, or the half log-SNR $\lambda(t)$ with
    `log_snr_steps` (then `h_init` and the steps are in $\lambda$).

    Step ends lie on a grid of `QUANTA` equal quanta of the span of `u`: the loop carries the
    integer quantum index `n` and step `k` (in quanta, the controller's step floored), and the
    Brownian path is a tree over that grid read at integer nodes only (`grid_brownian`, the
    value at `n` carried), so every compile of the loop (another batch width, device count or
    chunk) draws bitwise the same increments (in `log_snr_steps`, up to the rounding of the
    clock `s_at`). A tree over the continuous time (diffrax's
    `VirtualBrownianTree`) interpolates within its leaves with slopes of order
    $1/\sqrt{tol}$: the one-ulp differences in the rescaled time that two compiles of the
    loop make moved its increments by ~1e-5, flipping a floored step a few steps later.
    `tol` is only the smallest step (`10 * tol`)."""
    dtype = x0.dtype
    drift = ReverseDrift(sde, score, origin=0.0)
    dt_min = 10 * tol
    if log_snr_steps:
        u0, u_end = sde.log_snr(-s0).astype(dtype), sde.log_snr(-s_end).astype(dtype)
        s_of_u = lambda u: -sde.log_snr_inverse(u).astype(dtype)
    else:
        u0, u_end, s_of_u = s0, s_end, lambda u: u
    quantum = (u_end - u0) / QUANTA

    def s_at(n):  # the reversed time at quantum index n, exact at both ends
        u = u0 + (u_end - u0) * (n.astype(dtype) / QUANTA)
        return jnp.where(n == 0, s0, jnp.where(n == QUANTA, s_end, s_of_u(u)))

    if log_snr_steps:  # W(s) on the grid's own clock, s_at(n) - s0
        root, clock = jnp.ones((), dtype), lambda n: (s_at(n) - s0).astype(dtype)
    else:  # s linear in n: W(s_at(n)) = sqrt(quantum) B(n), B on the clock n (exact bridges)
        root, clock = jnp.sqrt((s_end - s0) / QUANTA).astype(dtype), None

    def brownian(n):
        return root * grid_brownian(noise_key, n, LEVELS, x0.shape, dtype, clock)

    def whole(k):  # a step of k (real) quanta as whole quanta in [1, QUANTA], floored
        return jnp.maximum(jnp.floor(jnp.minimum(k, QUANTA)), 1).astype(jnp.int32)

    def cond(carry):
        return carry[-1] == RUNNING

    def body(carry):
        n, w, x, x_prev, k, attempted, accepted, _ = carry
        n_next = jnp.minimum(n + k, QUANTA)
        last = n_next == QUANTA
        k = n_next - n
        s, s_next = s_at(n), s_at(n_next)
        h = s_next - s
        w_next = brownian(n_next)
        dw = w_next - w
        g0 = sde.diffusion(-s).astype(dtype)
        g1 = sde.diffusion(-s_next).astype(dtype)
        x_em = x + h * drift(s, x, None) + g0 * dw
        x_tilde = x + h * drift(s_next, x_em, None) + g1 * dw
        x_heun = 0.5 * (x_em + x_tilde)
        delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x_em), jnp.abs(x_prev)))
        err = jnp.sqrt(jnp.mean(((x_em - x_heun) / delta) ** 2))
        ok = err <= 1
        attempted = attempted + 1
        accepted = accepted + ok.astype(accepted.dtype)
        n_new = jnp.where(ok, n_next, n)
        w = jnp.where(ok, w_next, w)
        x_new = jnp.where(ok, x_heun, x)
        x_prev = jnp.where(ok, x_em, x_prev)
        growth = SAFETY * err ** (-EXPONENT)
        k_new = jnp.minimum(whole(k.astype(dtype) * growth), QUANTA - n_new)
        # The next step's length in s (for log-SNR steps, to first order) against dt_min.
        h_ctrl_s = h * growth
        status = jnp.where(ok & last, DONE, RUNNING)
        status = jnp.where((status == RUNNING) & (h_ctrl_s < dt_min), UNDERFLOW, status)
        status = jnp.where(jnp.isfinite(err), status, NOT_FINITE)
        status = jnp.where((status == RUNNING) & (attempted >= max_steps), MAX_STEPS, status)
        return n_new, w, x_new, x_prev, k_new, attempted, accepted, status.astype(jnp.int32)

    zero = jnp.asarray(0, jnp.int32)
    k0 = whole(jnp.asarray(h_init, dtype) / quantum)
    init = (zero, jnp.zeros_like(x0), x0, x0, k0, zero, zero, zero)
    _, _, x, _, _, attempted, accepted, status = lax.while_loop(cond, body, init)
    return x, attempted, accepted, status


@eqx.filter_jit
def _sample_adaptive(
    *,
    sde,
    score,
    key,
    shape,
    x_T,
    t_eps,
    rtol,
    atol,
    h_init,
    brownian_tol,
    max_steps,
    denoise,
    cond,
    log_snr_steps,
    throw,
    rows=None,
):
    """`x`, `nfe`, the stats, `ok` (reached `t_eps`; with `throw=False` also: `x` is finite, else
    NaN) and per-sample finiteness: the checks after the call compile nothing of their own."""
    dtype = jnp.result_type(float)
    if rows is not None:  # this device's (or chunk's) rows of the batch
        shape = (rows.num, *shape[1:])
    x_T, noise_keys = latents_and_noise_keys(sde, key, shape, x_T, dtype, rows)
    s0, s_end = -jnp.asarray(sde.T, dtype), -t_eps

    def one(x0, noise_key, cond_i):
        return _solve_one(
            sde,
            bind(score, cond_i),
            x0,
            noise_key,
            s0=s0,
            s_end=s_end,
            rtol=rtol,
            atol=atol,
            h_init=h_init,
            tol=brownian_tol,
            max_steps=max_steps,
            log_snr_steps=log_snr_steps,
        )

    x, attempted, accepted, status = jax.vmap(one)(x_T, noise_keys, cond)
    nfe = 2 * attempted
    if denoise:
        x = tweedie_batch(sde, score, t_eps, x, cond)
        nfe = nfe + 1
    nfe = network_nfe(score, nfe)  # score calls -> network evaluations
    ok, finite = status == DONE, finite_rows(x)
    if not throw:  # failed or non-finite samples are NaN; `ok` says which
        ok = ok & finite
        x = jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.nan)
    return x, nfe.astype(jnp.int32), AdaptiveStats(attempted, accepted, status), ok, finite


def _check_tolerances(rtol, atol):
    check_positive("rtol", rtol, strict=False)
    check_positive("atol", atol)  # delta = max(atol, ...) must be > 0 where x' = x'_prev = 0


def sample_sde_adaptive_with_stats(
    sde: AbstractSDE,
    score: ScoreFn,
    *,
    key,
    shape: tuple[int, ...],
    rtol: float = 0.05,
    atol: float = 0.0078,
    t_eps: float | None = None,
    h_init: float | None = None,
    denoise: bool = True,
    max_steps: int = 16384,
    brownian_tol: float | None = None,
    x_T=None,
    throw: bool = True,
    cond=None,
    sharding=None,
    chunk_size: int | None = None,
    log_snr_steps: bool = False,
) -> tuple[SampleResult, AdaptiveStats]:
    """[`scoresde.sample_sde_adaptive`][] and the loop's per-sample counters (attempted and
    accepted steps, status)."""
    check_sde_and_score(sde, score)
    key = check_key(key)
    shape = check_shape(shape)
    _check_tolerances(rtol, atol)
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    log_snr_steps = check_bool("log_snr_steps", log_snr_steps)
    if h_init is None:
        span = sde.log_snr(t_eps) - sde.log_snr(sde.T) if log_snr_steps else sde.T
        h_init = 0.01 * float(span)
    check_positive("h_init", h_init)
    brownian_tol = 1e-6 * sde.T if brownian_tol is None else brownian_tol
    check_positive("brownian_tol", brownian_tol)
    if not log_snr_steps and is_concrete(h_init) and float(h_init) <= 10 * float(brownian_tol):
        raise ValueError(
            f"h_init={h_init} must exceed 10 * brownian_tol = {10 * brownian_tol}, the smallest "
            "step a sample may take."
        )
    max_steps = check_int("max_steps", max_steps)
    denoise, throw = check_bool("denoise", denoise), check_bool("throw", throw)
    dtype = jnp.result_type(float)
    f = lambda v: jnp.asarray(v, dtype)
    x_T, cond = check_latents(x_T, shape, dtype), check_cond(cond, shape[0])
    x, nfe, stats, ok, finite = map_batch(
        _sample_adaptive,
        shape[0],
        {"x_T": x_T, "cond": cond},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        key=key,
        shape=shape,
        t_eps=f(t_eps),
        rtol=f(rtol),
        atol=f(atol),
        h_init=f(h_init),
        brownian_tol=float(brownian_tol),
        max_steps=jnp.asarray(max_steps, jnp.int32),  # a value: no recompile
        denoise=denoise,
        log_snr_steps=log_snr_steps,
        throw=throw,
    )
    if throw:
        diagnose = diagnose_score(
            score, sde.T, lambda: latents_and_noise_keys(sde, key, shape, x_T, dtype)[0], cond
        )
        _raise_if_failed(stats.status, max_steps, rtol, atol, diagnose)
        raise_if_not_finite(
            "sample_sde_adaptive",
            x,
            hint="the score is unstable; try tighter rtol/atol or a larger t_eps.",
            finite=finite,
            diagnose=diagnose,
        )
    result = SampleResult(x=x, nfe=nfe, num_steps=stats.attempted, successful=ok)
    return result, stats


def _raise_if_failed(status, max_steps, rtol, atol, diagnose):
    if not is_concrete(status):
        return
    host = on_host(status)  # counted on the host: no program compiles for the check
    xp, status = (jnp, status) if host is None else (np, host)
    reasons = {
        MAX_STEPS: f"used all max_steps={max_steps} attempted steps",
        NOT_FINITE: "met a non-finite error estimate (NaN or inf)",
        UNDERFLOW: "shrank its step below 10 * brownian_tol",
    }
    found = [
        f"{int(xp.sum(status == code))} of {status.shape[0]} samples {why}"
        for code, why in reasons.items()
        if bool(xp.any(status == code))
    ]
    if found:
        cause = diagnose() if bool(xp.any(status == NOT_FINITE)) else None
        raise RuntimeError(
            f"sample_sde_adaptive (rtol={rtol}, atol={atol}) failed: "
            + "; ".join(found)
            + ". "
            + (cause or ADVICE)
        )


def sample_sde_adaptive(
    sde: AbstractSDE,
    score: ScoreFn,
    *,
    key,
    shape: tuple[int, ...],
    rtol: float = 0.05,
    atol: float = 0.0078,
    t_eps: float | None = None,
    h_init: float | None = None,
    denoise: bool = True,
    max_steps: int = 16384,
    brownian_tol: float | None = None,
    x_T=None,
    throw: bool = True,
    cond=None,
    sharding=None,
    chunk_size: int | None = None,
    log_snr_steps: bool = False,
) -> SampleResult:
    r"""Draw samples from the reverse-time SDE with adaptive steps ("Gotta Go Fast",
    Jolicoeur-Martineau et al. 2021, Algorithm 1).

    Each attempted step of size $h$ in the reversed time takes an Euler-Maruyama step
    $x' = x + h\,b(t, x) + g(t)\,\Delta W$ and its improved-Euler partner
    $x'' = \tfrac12\big(x' + x + h\,b(t - h, x') + g(t - h)\,\Delta W\big)$ on the SAME increment
    $\Delta W$, with $b(t, x) = -f(t)x + g(t)^2\,\mathrm{score}(t, x)$; it accepts $x''$ when
    $E = \mathrm{RMS}\big[(x' - x'')/\max(\text{atol}, \text{rtol}\max(|x'|, |x'_{prev}|))\big]
    \le 1$, and sets $h \leftarrow \min(t - t_\varepsilon, 0.9\,h\,E^{-0.9})$ either way.

    **Arguments:**

    - `sde`, `score`: the SDE and the score `score(t, x)` on one sample.
    - `key`: sample `i` uses `fold_in(key, i)` for its prior latent and its Brownian path: a
      rejected step retries on the same path. `shape = (num, *data_shape)`. Step ends lie on a
      grid of $2^{16}$ equal quanta of the span (the controller's step is floored to whole
      quanta), and the path is a Brownian tree over that grid, exact at every grid point (no
      interpolation: each read costs 16 normal draws of the sample's shape).
    - `brownian_tol`: the smallest step: a sample whose next step would fall below
      $10\times$`brownian_tol` (default $10^{-6} T$) fails.
    - `rtol`, `atol`: the mixed tolerance; the defaults (0.05, 0.0078) are the paper's for data
      in $[-1, 1]$ (`atol` $\approx 2/256$, one grey level). Scale `atol` with the data.
    - `t_eps`: the end time (default `sde.default_t_eps`); `h_init`: the first step (default
      $0.01\,T$, the paper's).
    - `denoise`: finish with one Tweedie step at `t_eps` (default on; +1 NFE).
    - `max_steps`: attempted steps per sample before it fails.
    - `x_T`, `throw`, `cond`: as in [`scoresde.sample_sde`][].
    - `sharding`, `chunk_size`: split the batch over devices (each runs its own adaptive loops)
      and stream it in chunks, as in [`scoresde.sample_ode`][]; sample `i` keeps its key and
      Brownian path, whose increments are bitwise the same in every layout (with
      `log_snr_steps`, up to the rounding of the grid's times). What can still
      differ is the rounding of the score and the step by a `vmap` of another width, which can
      flip a floored step or an accept decision: measured against a batch of 8 in float32
      (widths 1 and 3 and 2 devices, 12 keys), no sample of a two-width 2-D mixture moved and
      33 of 576 of a 2-D Gaussian did (by up to 3e-3); in float64 all agreed to 5e-16. (A tree
      over continuous time read between its nodes, as diffrax's `VirtualBrownianTree` is,
      amplifies a one-ulp difference in the time about $1/\sqrt{\text{tol}}$-fold: there 2
      samples in 3 moved.)
    - `log_snr_steps`: take the steps $h$ (and `h_init`, default 1% of the span) in the half
      log-SNR $\lambda(t) = \ln(\alpha/\sigma)$ instead of $t$; the step pair, the Brownian path
      and the error norm are unchanged. On the 64-D benchmarks it uses about 10% fewer
      evaluations for the same sliced W2 (`benchmarks/adaptive_sde_variants.py`).

    **Returns:** a [`scoresde.SampleResult`][]; `nfe` is $2\times$ the attempted steps (rejected
    ones included) $+1$ with `denoise`, per sample (score calls; times the score's
    `nfe_per_call` for a guided score); `num_steps` the attempted steps.

    **Raises:** `RuntimeError` naming the samples that used all `max_steps`, met a non-finite
    error estimate or shrank their step below $10\times$`brownian_tol`; `ValueError` on bad
    arguments (`rtol < 0`, `atol <= 0`, ...).

    ??? cite "Reference"

        ```bibtex
        @article{jolicoeur2021gotta,
          title={Gotta Go Fast When Generating Data with Score-Based Models},
          author={Jolicoeur-Martineau, Alexia and Li, Ke and Pich{\'e}-Taillefer, R{\'e}mi
                  and Kachman, Tal and Mitliagkas, Ioannis},
          journal={arXiv preprint arXiv:2105.14080},
          year={2021}
        }
        ```
    """
    result, _ = sample_sde_adaptive_with_stats(
        sde,
        score,
        key=key,
        shape=shape,
        rtol=rtol,
        atol=atol,
        t_eps=t_eps,
        h_init=h_init,
        denoise=denoise,
        max_steps=max_steps,
        brownian_tol=brownian_tol,
        x_T=x_T,
        throw=throw,
        cond=cond,
        sharding=sharding,
        chunk_size=chunk_size,
        log_snr_steps=log_snr_steps,
    )
    return result
