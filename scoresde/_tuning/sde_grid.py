r"""[`scoresde.tune_sde_grid`][]: the time grid of Euler-Maruyama on the reverse SDE, tuned
without paired noise.

A stochastic sampler has no per-latent reference (its end point depends on the noise), so the
objective is distributional: the squared sliced 2-Wasserstein distance between the sampler's end
points and a reference sample of the data at $t_\varepsilon$ (a tight probability-flow solve from
other latents: exact samples up to its tolerance), over fixed random directions,

$$L(\theta) = \frac{1}{K}\sum_{k=1}^K W_2^2\big(\langle v_k, X_{\text{grid}(\theta)}\rangle,
\langle v_k, Y\rangle\big),$$

each 1-D $W_2^2$ exact from sorted projections. The latents, the Brownian increments (standard
normals $z_j$ per step, scaled by $\sqrt{\Delta t_j}$) and the directions are drawn once, so
$L$ is a deterministic, differentiable function of the grid (common random numbers), minimised
like [`scoresde.tune_grid`][]'s objective. Held out: fresh latents, noise, reference sample and
directions. The sampler is `sample_sde(..., solver=diffrax.Euler())` with its final denoising
step; a sample from the same grid has the same law as this scan's (its noise is drawn
differently).
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._checks import check_key, check_shape, check_steps, check_t_eps
from .._sampling.ode import sample_ode
from .._score_calls import tweedie_batch
from .._sde import check_sde_and_score
from .._terms import BatchedScore
from .time_grid import TimeGrid
from .tune_grid import MAX_ITERATIONS, NAMED_GRIDS, check_fraction, search_grid

DIRECTIONS = 64


def euler_maruyama_on_times(sde, score, times, x_T, noise, denoise: bool = True):
    r"""Euler-Maruyama on the reverse SDE over `times` ($T$ down to $t_\varepsilon$):
    $x_{j+1} = x_j + [-f(t_j)x_j + g(t_j)^2\,\mathrm{score}(t_j, x_j)]\,\Delta_j +
    g(t_j)\sqrt{\Delta_j}\,z_j$, $\Delta_j = t_j - t_{j+1}$, with `noise` $z$ of shape
    `(steps, *x_T.shape)`; then the Tweedie step at $t_\varepsilon$ if `denoise`."""
    batched = BatchedScore(score)

    def body(x, inputs):
        t, t_next, z = inputs
        dt = t - t_next
        g = sde.diffusion(t)
        drift = -sde.drift_coeff(t) * x + g**2 * batched(t, x)
        return (x + drift * dt + g * jnp.sqrt(dt) * z).astype(x.dtype), None

    x, _ = jax.lax.scan(body, x_T, (times[:-1], times[1:], noise))
    if denoise:
        x = tweedie_batch(sde, score, times[-1], x, None)
    return x


def sliced_w2_squared(x, y, directions):
    """Mean over `directions` (`(K, d)`, unit rows) of the exact 1-D squared $W_2$ between the
    projections of the equal-size point sets `x` and `y` (`(n, ...)`)."""
    px = jnp.sort(x.reshape(x.shape[0], -1) @ directions.T, axis=0)
    py = jnp.sort(y.reshape(y.shape[0], -1) @ directions.T, axis=0)
    return jnp.mean(jnp.square(px - py))


@eqx.filter_jit
def _distance(sde, score, times, x_T, noise, reference, directions):
    x = euler_maruyama_on_times(sde, score, times, x_T, noise)
    return sliced_w2_squared(x, reference, directions)


def _draw(sde, key, shape, steps, dtype):
    k_latent, k_noise, k_dir = jr.split(key, 3)
    x_T = sde.prior_sample(k_latent, shape).astype(dtype)
    noise = jr.normal(k_noise, (steps, *shape), dtype)
    d = int(np.prod(shape[1:]))
    directions = jr.normal(k_dir, (DIRECTIONS, d), dtype)
    directions = directions / jnp.linalg.norm(directions, axis=1, keepdims=True)
    return x_T, noise, directions


def tune_sde_grid(
    sde,
    score,
    *,
    steps: int,
    key,
    shape: tuple[int, ...],
    t_eps: float | None = None,
    held_out: float = 0.5,
    max_iterations: int = MAX_ITERATIONS,
    reference_tol: float = 1e-5,
    progress: bool = False,
) -> TimeGrid:
    r"""The `steps + 1` times of Euler-Maruyama (`sample_sde` with `diffrax.Euler()`, denoised)
    that minimise the sliced Wasserstein distance of its samples to a reference sample.

    **Arguments:** `steps`; `key` and `shape` (`(num, *data_shape)`: the pilot's latents, noise
    and reference sample; a `held_out` fraction of that many, drawn from another key, checks
    the result); `t_eps`; `reference_tol` (the reference: adaptive Tsit5 solves of the probability-flow ODE
    at this tolerance); `max_iterations`, `progress` as in
    [`scoresde.tune_grid`][].

    **Returns:** a [`scoresde.TimeGrid`][]; `info["rms"]` holds the sliced $W_2$ (not an RMS
    error) of the tuned and the named grids on the pilot and held-out draws.
    """
    check_sde_and_score(sde, score)
    steps = check_steps(steps)
    key, shape = check_key(key), check_shape(shape)
    held_out = check_fraction("held_out", held_out)
    num_check = max(2, round(shape[0] * held_out))
    if shape[0] < 2:
        raise ValueError(f"tune_sde_grid needs a pilot of >= 2 samples; got shape={shape}.")
    t_eps = sde.default_t_eps if t_eps is None else t_eps
    check_t_eps(t_eps, sde.T)
    dtype = jnp.result_type(float)
    started = time.perf_counter()
    k_fit, k_check, k_ref_fit, k_ref_check = jr.split(key, 4)

    def reference(k, num):
        return sample_ode(
            sde, score, key=k, shape=(num, *shape[1:]), t_eps=t_eps, rtol=reference_tol,
            atol=reference_tol, max_steps=100_000,
        ).x  # fmt: skip

    check_shape_ = (num_check, *shape[1:])
    fit = (*_draw(sde, k_fit, shape, steps, dtype), reference(k_ref_fit, shape[0]))
    check = (*_draw(sde, k_check, check_shape_, steps, dtype), reference(k_ref_check, num_check))
    reference_seconds = time.perf_counter() - started

    def error(times, batch):
        x_T, noise, directions, ref = batch
        return _distance(sde, score, times, x_T, noise, ref, directions)

    candidates = {n: g.times_for(sde, steps, t_eps, dtype=dtype) for n, g in NAMED_GRIDS.items()}
    times, search = search_grid(
        "tune_sde_grid", sde, t_eps, error, fit, check, candidates, max_iterations, progress
    )
    provenance = {
        "objective": "squared sliced W2 (64 directions) of Euler-Maruyama samples (denoised) "
        "to a reference sample (probability-flow solves at reference_tol)",
        "sde": repr(sde),
        "steps": steps,
        "t_eps": float(t_eps),
        "pilot": shape[0],
        "held_out": num_check,
        "reference": {"solver": "Tsit5", "tol": reference_tol},
        **search,
        "reference_seconds": reference_seconds,
        "seconds": time.perf_counter() - started,
    }
    return TimeGrid(jnp.asarray(np.asarray(times, np.float64)), "Euler", provenance)
