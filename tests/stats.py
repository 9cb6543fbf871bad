r"""Statistical assertions shared by the tests: a sample statistic against its exact value, in
standard errors derived from the sample size.

Every check builds `ZScores` (named arrays of z = (estimate - exact) / standard error) and asks
`.within(k)`: all |z| < k. Returning the scores, not only a verdict, gives each test its
negative control with the same call: the check passes on the right sample, and
`not ZScores.within(k)` on a deliberately wrong one (another target, a biased sampler), so a
check that can never fail is caught. The tolerance `k` stays the test's own.

Standard errors, for n independent draws (or an effective sample size n):

- a mean: $\sqrt{\mathrm{Var}\,x_i / n}$, the variance exact when known, else the sample's;
- a Gaussian sample covariance entry: $\sqrt{(\Sigma_{ii}\Sigma_{jj} + \Sigma_{ij}^2) / n}$;
  for any law, the spread of $(x_i - \bar x_i)(x_j - \bar x_j)$ over $\sqrt n$;
- whitened draws $z = L^\top (x - \mu)$ with $L L^\top = \Sigma^{-1}$: mean $1/\sqrt n$,
  variance $\sqrt{2/n}$ per axis;
- a mode weight or any frequency $\hat p$: $\sqrt{p (1 - p) / n}$ (binomial).
"""

from __future__ import annotations

import dataclasses

import numpy as np


def _f64(a) -> np.ndarray:
    return np.asarray(a, np.float64)


@dataclasses.dataclass(frozen=True)
class ZScores:
    """Named arrays of z-scores. `within(k)`: every |z| < k (NaN fails)."""

    scores: dict[str, np.ndarray]

    def within(self, k: float, *names: str) -> bool:
        """Whether every |z| (of `names`, default all) is below `k`."""
        picked = [self.scores[n] for n in (names or self.scores)]
        return all(bool(np.all(np.abs(z) < k)) for z in picked)

    def worst(self) -> float:
        """The largest |z| over all scores."""
        return max(float(np.max(np.abs(z))) for z in self.scores.values())

    def __getitem__(self, name: str) -> np.ndarray:
        return self.scores[name]

    def __str__(self) -> str:
        return ", ".join(f"{n}: {np.array2string(z, precision=2)}" for n, z in self.scores.items())

    def check(self, k: float, *names: str) -> None:
        """Assert `within(k, *names)`, printing the scores on failure."""
        assert self.within(k, *names), f"|z| >= {k}: {self}"


def mean_z(x, mean, var=None, n=None, ddof: int = 0) -> np.ndarray:
    r"""$(\bar x - \mu) / \sqrt{\mathrm{Var}/n}$ per coordinate of draws `x` (first axis).

    `var`: the exact variance per coordinate (default: the sample variance with `ddof`);
    `n`: the (effective) sample size (default: `len(x)`)."""
    x = _f64(x)
    n = x.shape[0] if n is None else n
    var = x.var(axis=0, ddof=ddof) if var is None else _f64(var)
    return (x.mean(axis=0) - _f64(mean)) / np.sqrt(var / n)


def mean(x, exact, var=None, n=None, ddof: int = 0) -> ZScores:
    """Score `"mean"`: the mean of draws `x` against `exact` (see `mean_z`). With `var=None`, an
    unbiasedness check of i.i.d. estimates, the standard error their spread over sqrt(n)."""
    return ZScores({"mean": mean_z(x, exact, var=var, n=n, ddof=ddof)})


def cov_z(x, cov, se: str = "gaussian") -> np.ndarray:
    r"""The sample covariance (`np.cov`, ddof 1) of draws `x` against `cov`, per entry.

    `se="gaussian"`: $\sqrt{(\Sigma_{ii}\Sigma_{jj} + \Sigma_{ij}^2)/n}$ (Gaussian data, exact
    $\Sigma$); `se="empirical"`: estimated from the draws' fourth moments (any law)."""
    x, cov = _f64(x), _f64(cov)
    n = x.shape[0]
    if se == "gaussian":
        var = np.diag(cov)
        err = np.sqrt((np.outer(var, var) + cov**2) / n)
    elif se == "empirical":
        c = x - x.mean(0)
        err = (c[:, :, None] * c[:, None, :]).std(0) / np.sqrt(n)
    else:
        raise ValueError(f"se must be 'gaussian' or 'empirical'; got se={se!r}.")
    return (np.cov(x.T) - cov) / err


def moments(x, mean, cov, cov_se: str = "gaussian") -> ZScores:
    """Mean (exact variances) and covariance of draws `x` against the exact `mean`, `cov`:
    scores `"mean"` and `"cov"`."""
    return ZScores(
        {"mean": mean_z(x, mean, var=np.diag(_f64(cov))), "cov": cov_z(x, cov, se=cov_se)}
    )


def whitened_moments(x, mean, cov, n=None) -> ZScores:
    r"""Draws whitened by the exact law, $z = L^\top (x - \mu)$ with $L L^\top = \Sigma^{-1}$:
    scores `"mean"` (SE $1/\sqrt n$) and `"var"` (SE $\sqrt{2/n}$) per axis; `n` the
    effective sample size (default `len(x)`)."""
    white = np.linalg.cholesky(np.linalg.inv(_f64(cov)))
    z = (_f64(x) - _f64(mean)) @ white
    n = z.shape[0] if n is None else n
    return ZScores(
        {"mean": z.mean(axis=0) * np.sqrt(n), "var": (z.var(axis=0) - 1) / np.sqrt(2 / n)}
    )


def proportion_z(freq, p, n) -> np.ndarray:
    r"""Observed frequencies `freq` of `n` draws against probabilities `p`:
    $(\hat p - p) / \sqrt{p (1 - p) / n}$ (binomial)."""
    p = _f64(p)
    return (_f64(freq) - p) / np.sqrt(p * (1 - p) / n)


def frequencies(freq, p, n) -> ZScores:
    """Score `"freq"`: frequencies of `n` draws against probabilities `p` (see `proportion_z`),
    e.g. mode weights `ss.mode_weights(mixture, x)` against `mixture.weights`."""
    return ZScores({"freq": proportion_z(freq, p, n)})
