r"""[`scoresde.sample_edm`][]: EDM's Heun sampler with churn (Karras et al. 2022, Algorithm 2)."""

import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr

from .._checks import (
    check_bool,
    check_key,
    check_latents,
    check_positive,
    check_shape,
    check_steps,
    check_t_eps,
    finite_rows,
    is_concrete,
    raise_if_not_finite,
)
from .._custom_types import ScoreFn
from .._grid import KarrasGrid, as_time_grid, resolve_explicit
from .._keys import latents_and_noise_keys
from .._network_times import on_network_times
from .._nfe import network_nfe
from .._progress import scan_steps
from .._score_calls import bind, check_cond, diagnose_score, tweedie_batch
from .._sde import AbstractSDE, check_sde_and_score
from .._sharding import map_batch
from .._solver.base import PFModel
from .._solver.edm import heun_step
from .result import SampleResult


@eqx.filter_jit
def _sample_edm(
    *,
    sde,
    score,
    key,
    t_eps,
    x_T,
    churn,
    s_tmin,
    s_tmax,
    s_noise,
    grid,
    shape,
    steps,
    denoise,
    progress,
    cond,
    rows=None,
):
    if rows is not None:
        shape = (rows.num, *shape[1:])
    dtype = jnp.result_type(float)
    x_T, noise_keys = latents_and_noise_keys(sde, key, shape, x_T, dtype, rows)
    ts = grid.times_for(sde, steps, t_eps, dtype=dtype)
    gamma_max = jnp.minimum(churn / steps, math.sqrt(2) - 1)

    def step(x, noise_key, cond_i, i):
        model = PFModel(sde, bind(score, cond_i))
        t_cur, t_next = ts[i], ts[i + 1]
        a_c, s_c, _ = model.marginal(t_cur)
        sig = s_c / a_c
        gamma = jnp.where((sig >= s_tmin) & (sig <= s_tmax), gamma_max, 0.0)
        sig_hat = sig * (1 + gamma)
        t_hat = sde.log_snr_inverse(-jnp.log(sig_hat))
        t_hat = jnp.where(gamma > 0, t_hat, t_cur)
        a_h, _ = sde.marginal(t_hat)
        z = jr.normal(jr.fold_in(noise_key, i), shape[1:], dtype)
        extra = jnp.sqrt(jnp.maximum(sig_hat**2 - sig**2, 0.0)) * s_noise
        x_hat = a_h * (x / a_c + extra * z)
        x_next, _ = heun_step(model, t_hat, t_next, x_hat.astype(dtype))
        return x_next

    x = scan_steps(step, x_T, noise_keys, cond, steps, progress=progress, desc="sample_edm")
    if denoise:
        x = tweedie_batch(sde, score, ts[-1], x, cond)
    calls = 2 * steps + (1 if denoise else 0)
    nfe = jnp.full((shape[0],), network_nfe(score, calls), jnp.int32)
    num_steps = jnp.full((shape[0],), steps, jnp.int32)
    return x, nfe, num_steps, finite_rows(x)  # the checks after the call compile nothing


def sample_edm(
    sde: AbstractSDE,
    score: ScoreFn,
    *,
    key,
    shape: tuple[int, ...],
    steps: int | None = None,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    rho: float = 7.0,
    t_eps: float | None = None,
    denoise: bool = True,
    x_T=None,
    progress: bool = False,
    cond=None,
    sharding=None,
    chunk_size: int | None = None,
    grid=None,
) -> SampleResult:
    r"""EDM's Heun sampler (Karras et al. 2022, Algorithm 2) with optional churn.

    On the Karras grid $\tilde\sigma_0 > \dots > \tilde\sigma_N$ ($\tilde\sigma = \sigma/\alpha$,
    `steps` = $N$): at each step, if $\tilde\sigma_i \in [S_{tmin}, S_{tmax}]$, raise the noise to
    $\hat\sigma = (1 + \gamma)\tilde\sigma_i$ with $\gamma = \min(S_{churn}/N, \sqrt2 - 1)$ by
    adding $\sqrt{\hat\sigma^2 - \tilde\sigma_i^2}\,S_{noise}\,z$ to $\tilde x$, then one Heun
    step to $\tilde\sigma_{i+1}$. `churn=0` is the deterministic sampler ([`scoresde.EDMHeun`][]).
    EDM's last step goes to $\sigma = 0$ with Euler, which is the Tweedie denoising step here
    (`denoise=True`, +1 NFE).

    **Arguments:** `key` (sample `i` uses `fold_in(key, i)`), `shape = (num, *data_shape)`,
    `steps` (default 18), the churn parameters, `rho` (the grid's exponent), `t_eps` (end time,
    default `sde.default_t_eps`), `grid` (another time grid instead of Karras's, e.g. a
    [`scoresde.TimeGrid`][] from [`scoresde.tune_grid`][]: a grid of given times implies `steps`
    and `t_eps`), `x_T` (given latents), `progress` (a progress bar), `cond` (per-sample conditioning, as in
    [`scoresde.sample_ode`][]), `sharding` and `chunk_size` (as in [`scoresde.sample_ode`][]).

    **Returns:** a [`scoresde.SampleResult`][] with `x`, `nfe` ($2N$ score calls, +1 with
    `denoise`, each costing the score's `nfe_per_call` for a guided score) and `num_steps` ($N$).

    **Raises:** `FloatingPointError` if a sample ends non-finite (naming a score that returns
    NaN or inf, where it does).
    """
    check_sde_and_score(sde, score)
    score = on_network_times(grid, sde, score)  # a grid tuned with them
    key = check_key(key)
    shape = check_shape(shape)
    if grid is None:
        grid = KarrasGrid(float(rho))  # checks rho > 0
    else:
        if rho != 7.0:
            raise ValueError(
                f"sample_edm: rho={rho} sets the Karras grid's exponent; with grid= pass "
                "ss.KarrasGrid(rho=...) as the grid instead."
            )
        grid, steps, t_eps = resolve_explicit(as_time_grid(grid), sde, steps, t_eps)
    steps = check_steps(18 if steps is None else steps)
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    check_positive("churn", churn, strict=False)
    check_positive("s_tmin", s_tmin, strict=False)
    if is_concrete(s_tmax) and not float(s_tmax) > 0:
        raise ValueError(f"s_tmax must be > 0; got s_tmax={s_tmax!r}.")
    check_positive("s_noise", s_noise, strict=False)
    dtype = jnp.result_type(float)
    f = lambda v: jnp.asarray(v, dtype)
    x_T, cond = check_latents(x_T, shape, dtype), check_cond(cond, shape[0])
    x, nfe, num_steps, finite = map_batch(
        _sample_edm,
        shape[0],
        {"x_T": x_T, "cond": cond},
        sharding=sharding,
        chunk_size=chunk_size,
        sde=sde,
        score=score,
        key=key,
        t_eps=f(t_eps),
        churn=f(churn),
        s_tmin=f(s_tmin),
        s_tmax=f(s_tmax),
        s_noise=f(s_noise),
        grid=grid,
        shape=shape,
        steps=steps,
        denoise=check_bool("denoise", denoise),
        progress=check_bool("progress", progress),
    )
    diagnose = diagnose_score(
        score, sde.T, lambda: latents_and_noise_keys(sde, key, shape, x_T, dtype)[0], cond
    )
    raise_if_not_finite(
        "sample_edm", x, hint="use more steps or less churn.", finite=finite, diagnose=diagnose
    )
    return SampleResult(x=x, nfe=nfe, num_steps=num_steps)
