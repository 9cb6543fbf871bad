r"""What every sampler and the likelihood compute from a score, written once.

- [`checked_score`][scoresde._score_calls.checked_score]: `score(t, x)` with its shape and dtype
  checked at trace time;
- [`pf_drift`][scoresde._score_calls.pf_drift]: the probability-flow drift
  $F(t, x) = f(t)x - \tfrac12 g(t)^2\,\nabla\ln p_t(x)$, the vector field of sampling
  (`probability_flow_term`), of the likelihood and of encoding/decoding;
- [`tweedie`][scoresde._score_calls.tweedie]: Tweedie's denoiser
  $E[x_0 \mid x_t] = (x_t + \sigma(t)^2\,\nabla\ln p_t(x_t)) / \alpha(t)$, the final denoising
  step of the samplers and the data prediction of the exponential integrators;
- [`diagnose_score`][scoresde._score_calls.diagnose_score]: after a failed solve, whether the
  score itself returned NaN or inf (said before any tolerance advice).
"""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._checks import finite_rows, on_host
from ._custom_types import Sample, Scalar, ScoreFn


def check_like(out, x, *, who: str, scalar: bool = False):
    """Check at trace time that `who`'s output `out` has `x`'s dtype and its shape (or is a
    scalar); returns `out`."""
    expected = () if scalar else jnp.shape(x)
    if not hasattr(out, "shape") or jnp.shape(out) != expected:
        what = "a scalar" if scalar else f"an array of x's shape {jnp.shape(x)}"
        raise ValueError(
            f"{who} must return {what}; got {getattr(out, 'shape', type(out).__name__)}. "
            "It acts on ONE unbatched sample."
        )
    if jnp.result_type(out) != jnp.result_type(x):
        raise TypeError(
            f"{who} must return x's dtype {jnp.result_type(x)}; got {jnp.result_type(out)}."
        )
    return out


def checked_score(score: ScoreFn, t: Scalar, x: Sample) -> Sample:
    """Call `score(t, x)` and check at trace time that it returns `x`'s shape and dtype."""
    return check_like(score(t, x), x, who="score(t, x)")


def pf_drift(sde, score: ScoreFn, t: Scalar, x: Sample) -> Sample:
    r"""$F(t, x) = f(t)x - \tfrac12 g(t)^2\,\mathrm{score}(t, x)$, in `x`'s dtype."""
    g2 = sde.diffusion(t) ** 2
    return (sde.drift(t, x) - 0.5 * g2 * checked_score(score, t, x)).astype(x.dtype)


def tweedie(sde, score: ScoreFn, t: Scalar, x: Sample) -> Sample:
    r"""$E[x_0 \mid x_t = x] = (x + \sigma(t)^2\,\mathrm{score}(t, x)) / \alpha(t)$, in `x`'s dtype."""
    alpha, sigma = sde.marginal(t)
    return ((x + sigma**2 * checked_score(score, t, x)) / alpha).astype(x.dtype)


class Conditioned(eqx.Module):
    """`score(t, x, cond)` with one sample's conditioning `cond` (a label, a context array, ...)
    bound: itself a `score(t, x)`."""

    score: Callable
    cond: Any

    def __call__(self, t: Scalar, x: Sample) -> Sample:
        return self.score(t, x, self.cond)


def bind(score: Callable, cond) -> ScoreFn:
    """`score` itself without conditioning (`cond is None`), else [`Conditioned`][scoresde._score_calls.Conditioned]."""
    return score if cond is None else Conditioned(score, cond)


def check_cond(cond, num: int):
    """Per-sample conditioning: a pytree of arrays whose leading axis has one entry per sample."""
    if cond is None:
        return None
    cond = jax.tree_util.tree_map(jnp.asarray, cond)
    for leaf in jax.tree_util.tree_leaves(cond):
        if leaf.ndim < 1 or leaf.shape[0] != num:
            raise ValueError(
                f"cond must hold one entry per sample (leading axis {num}); got a leaf of shape "
                f"{leaf.shape}."
            )
    return cond


def tweedie_batch(sde, score: Callable, t: Scalar, x, cond=None):
    """[`tweedie`][scoresde._score_calls.tweedie] on every sample of the batch `x` (sample `i` with its
    conditioning `cond_i`, if any)."""
    return jax.vmap(lambda xi, ci: tweedie(sde, bind(score, ci), t, xi))(x, cond)


@eqx.filter_jit
def _score_rows_finite(score: Callable, t, x, cond):
    """Per sample of the batch `x`: whether `score(t, x_i)` (with `cond_i`) is finite."""
    return finite_rows(jax.vmap(lambda xi, ci: bind(score, ci)(t, xi))(x, cond))


def diagnose_score(score: Callable, t, x, cond=None) -> Callable[[], str | None]:
    """The `diagnose` of `_checks.raise_if_failed` / `raise_if_not_finite` for a solve that
    starts at time `t` from the batch `x` (an array, or a function returning it: the latents
    are drawn only if needed).

    Called only after a failure, on the host: one score evaluation per sample at the start
    point (a program of its own, compiled on that path only, so a solve that succeeds pays
    nothing). The inputs were checked finite before the solve, so a non-finite score there is
    the score's own fault (NaN parameters, a division by zero, a dtype it cannot hold), which
    no tolerance fixes. A score that is non-finite only away from the start point is not seen
    here; the caller's advice then stands."""

    def diagnose() -> str | None:
        xs = x() if callable(x) else x
        flags = _score_rows_finite(score, jnp.asarray(t, xs.dtype), xs, cond)
        host = on_host(flags)
        bad = int(jnp.sum(~flags)) if host is None else int(host.size - host.sum())
        if not bad:
            return None
        return (
            f"The score returned NaN or inf at the start of the solve (t={float(t):g}) for "
            f"{bad} of {xs.shape[0]} samples, whose inputs are finite: fix the score (NaN "
            "parameters, a division by zero, a dtype it cannot hold) before tuning the solver."
        )

    return diagnose
