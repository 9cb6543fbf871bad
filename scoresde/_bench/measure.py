r"""Measurements of one problem: the reference solution, the NLL, and one row per sampler run.

Per run (all samplers of a problem start from the same latents $x_T$):

- `err_ref`: mean L2 distance per sample to the reference PF-ODE solution from the same $x_T$
  (deterministic samplers only). Exact-score problems: float64 Dopri8 at rtol = atol = 1e-10;
  trained networks: float32 Dopri8 at 1e-6 (the quick run: float64 at 1e-8).
- `sliced_w2`: sliced 2-Wasserstein distance to the problem's reference samples;
  `mmd2`: unbiased squared MMD with an RBF kernel (median-distance bandwidth of the reference);
  `mode_weight_error`: largest error in the fraction of samples per mixture component.
  Digit problems add `digits`: `scoresde.digit_metrics` (Frechet distance to the test digits
  beside its floor, class-histogram TV, classifier confidence beside that on real digits).
  Each problem also records the floor of these metrics: their value between two independent
  sets of reference samples.
- `nfe`: the exact score evaluations per sample the sampler reports (mean and max).
- `compile_s`: first call minus a later call; `wall_s`: best of `repeats` later calls.
"""

import functools
import time
import warnings

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._likelihood.divergence import ExactDivergence, Hutchinson
from .._likelihood.flow import bits_per_dim, log_likelihood
from .._metrics import sample_distances as _metrics
from .._metrics.digits import DigitClassifier, digit_metrics
from .._sampling.sample import sample_ode
from .._timing import timed_after_compile
from .problems import Problem


def reference_solution(problem: Problem, x_T, *, tol64: float = 1e-10) -> tuple[np.ndarray, dict]:
    """The reference PF-ODE samples from `x_T` and a description of how they were computed.

    `tol64`: rtol = atol of the float64 solve of exact-score problems (the quick run uses 1e-8:
    its errors at 10-20 NFE are above 1e-3)."""
    start = time.perf_counter()
    if problem.exact_score_64 is not None:
        previous = jax.config.read("jax_enable_x64")
        jax.config.update("jax_enable_x64", True)
        try:
            result = sample_ode(
                problem.sde,
                problem.exact_score_64(),
                key=jr.key(0),
                shape=x_T.shape,
                solver=dfx.Dopri8(),
                rtol=tol64,
                atol=tol64,
                x_T=jnp.asarray(x_T, jnp.float64),
                denoise=True,
                max_steps=100_000,
            )
            x = np.asarray(result.x, np.float64)
            nfe = float(np.mean(result.nfe))
        finally:
            jax.config.update("jax_enable_x64", previous)
        how = f"float64 Dopri8, rtol = atol = {tol64:g}"
    else:
        result = sample_ode(
            problem.sde,
            problem.score,
            key=jr.key(0),
            shape=x_T.shape,
            solver=dfx.Dopri8(),
            rtol=1e-6,
            atol=1e-6,
            x_T=x_T,
            denoise=True,
            max_steps=100_000,
        )
        x = np.asarray(result.x, np.float64)
        nfe = float(np.mean(result.nfe))
        how = "float32 Dopri8, rtol = atol = 1e-6"
    return x, {"method": how, "nfe_mean": nfe, "seconds": time.perf_counter() - start}


FLOOR_DRAWS = 5


def floors(problem: Problem, bandwidth: float, key) -> dict:
    """The metrics between two independent reference sets: what a perfect sampler scores.

    The sliced-W2 floor's spread: its value against `FLOOR_DRAWS` further sets, independent draws
    where the density is known (mixtures), else bootstrap resamples of the second held-out set;
    a sampler at or below their largest value is "at floor"."""
    n = problem.num_samples
    sets = [
        problem.mixture.sample(jr.fold_in(key, 100 + i), n)
        if problem.mixture is not None
        else problem.reference_2[jr.randint(jr.fold_in(key, 100 + i), (n,), 0, n)]
        for i in range(FLOOR_DRAWS)
    ]
    draws = [_metrics.sliced_wasserstein(x, problem.reference, key=key) for x in sets]
    return {
        "sliced_w2_draws": draws,
        "sliced_w2_spread": "independent draws" if problem.mixture is not None else "bootstrap",
        "sliced_w2": _metrics.sliced_wasserstein(problem.reference_2, problem.reference, key=key),
        "mmd2": _metrics.mmd2(problem.reference_2, problem.reference, bandwidth=bandwidth),
        "mode_weight_error": (
            _metrics.mode_weight_error(problem.mixture, problem.reference_2)
            if problem.mixture is not None
            else None
        ),
    }


def negative_log_likelihood(problem: Problem, key) -> dict:
    """Test NLL of the problem's score model, with the exact value where the density is known.

    Mixtures: nats per sample under `log_likelihood` (Dopri5 at 1e-5, t_eps = 1e-5, exact
    divergence up to 8 dimensions, else 4 Rademacher probes) against the analytic
    $-\\ln p_0(x)$. Images: bits per dimension of 8-bit test images, uniform dequantisation,
    affine map to [-1, 1] (`scoresde.bits_per_dim`'s defaults), one Rademacher probe.
    """
    data = problem.nll_data
    assert data is not None  # every problem has held-out data for its NLL
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # float32 at t_eps = 1e-5: on purpose
        if problem.nll_bits is not None:
            bpd = bits_per_dim(problem.sde, problem.score, data, key=key, bits=problem.nll_bits)
            nfe = bpd.nfe
            out = {
                "unit": "bits/dim",
                "model": float(jnp.mean(bpd.bpd)),
                "exact": None,
                "convention": "8-bit, uniform dequantisation, [0, 256) -> [-1, 1]",
            }
        else:
            dim = int(np.prod(problem.data_shape))
            divergence = ExactDivergence() if dim <= 8 else Hutchinson(4)
            res = log_likelihood(problem.sde, problem.score, data, key=key, divergence=divergence)
            nfe = res.nfe
            assert problem.mixture is not None  # analytic problems carry their mixture
            exact = -jax.vmap(problem.mixture.log_prob)(data)
            out = {
                "unit": "nats/sample",
                "model": float(-jnp.mean(res.log_prob)),
                "exact": float(jnp.mean(exact)),
                "divergence": type(divergence).__name__,
            }
    out.update(
        num_points=int(data.shape[0]),
        nfe_mean=float(jnp.mean(nfe)),
        seconds=time.perf_counter() - start,
    )
    return out


def run_sampler(
    spec, problem: Problem, budget, *, key, x_T, ref, bandwidth, repeats, metric_key
) -> dict:
    """One row: run `spec` at `budget` (timed apart from compilation) and score its samples."""
    row = {
        "sampler": spec.name,
        "family": spec.family,
        "deterministic": spec.deterministic,
        "budget": budget,
        "setting": spec.setting(budget),
    }
    try:
        result, first, wall = timed_after_compile(
            lambda: spec.run(problem, key, x_T, budget), repeats
        )
    except (RuntimeError, FloatingPointError) as e:  # a failed solve is a status, not a number
        row.update(status=f"failed: {str(e).splitlines()[0]}")
        return row
    x = np.asarray(result.x, np.float64).reshape(x_T.shape[0], -1)
    nfe = np.asarray(result.nfe)
    row.update(
        status="ok",
        nfe_mean=float(nfe.mean()),
        nfe_max=int(nfe.max()),
        err_ref=(
            float(np.mean(np.linalg.norm(x - ref.reshape(x.shape[0], -1), axis=1)))
            if spec.deterministic
            else None
        ),
        sliced_w2=_metrics.sliced_wasserstein(x, problem.reference, key=metric_key),
        mmd2=_metrics.mmd2(x, problem.reference, bandwidth=bandwidth),
        mode_weight_error=(
            _metrics.mode_weight_error(problem.mixture, jnp.asarray(x, jnp.float32))
            if problem.mixture is not None
            else None
        ),
        wall_s=wall,
        compile_s=max(first - wall, 0.0),
    )
    if problem.digits:
        row["digits"] = digit_quality(x)
    return row


@functools.cache
def _digit_classifier():
    return DigitClassifier()


def digit_quality(x) -> dict:
    """`scoresde.digit_metrics` of digit samples in [-1, 1] (flattened `(n, 64)`): Frechet
    distance to the test digits and its floor, class-histogram TV (each with its 95 % bootstrap
    interval), mean confidence on the samples and on real test digits."""
    m = digit_metrics(np.asarray(x).reshape(-1, 1, 8, 8), classifier=_digit_classifier())
    return dict(
        frechet=m.frechet,
        frechet_interval=list(m.frechet_interval),
        frechet_floor=m.frechet_floor,
        frechet_floor_interval=list(m.frechet_floor_interval),
        class_tv=m.histogram_tv,
        class_tv_interval=list(m.histogram_tv_interval),
        confidence=m.confidence,
        reference_confidence=m.reference_confidence,
    )
