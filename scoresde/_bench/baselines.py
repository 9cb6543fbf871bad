r"""Classical bits/dim baselines for integer images, for `benchmarks/real_data.py` and its tests.

Data are integer levels $v \in \{0..L - 1\}^D$, flattened to `(n, D)`. The discrete rows give
exact code lengths; a continuous density $p$ is fitted to, and evaluated on, the uniformly
dequantised $w = v + u$, $u \sim U[0, 1)^D$, in level units, whose figure
$E_u[-\log_2 p(v + u)]/D$ bounds the discrete code length from above. It equals
`ss.bits_per_dim` of the same density moved to $y = 2w/L - 1 \in [-1, 1]$: the affine map's
Jacobian cancels against the bin width.

- [`uniform_bpd`][]: $\log_2 L$, the baseline every ratio is against.
- [`categorical_fit`][] / [`categorical_bpd`][]: independent per-pixel categoricals, add-$\alpha$.
- [`gaussian_log_density`][]: a full-covariance Gaussian, or with `rank=k` a probabilistic PCA
  Gaussian (the top $k$ principal directions, an isotropic remainder).
- [`gmm_log_density`][]: scikit-learn's `GaussianMixture` (full covariances).
"""

import math

import numpy as np

LOG2 = math.log(2)


def split_validation(v, num_val: int, seed: int):
    """`(fit, val)`: a permutation from `seed` holds out `num_val` rows of `v` for validation."""
    if not 0 < num_val < len(v):
        raise ValueError(f"num_val must lie in (0, {len(v)}); got num_val={num_val}.")
    perm = np.random.default_rng(seed).permutation(len(v))
    return v[perm[num_val:]], v[perm[:num_val]]


def dequantised(v, rng, copies: int = 1) -> np.ndarray:
    """`copies` draws of $w = v + u$ stacked along the batch axis."""
    return np.concatenate([v + rng.random(v.shape) for _ in range(copies)])


def uniform_bpd(levels: int) -> float:
    """$\\log_2 L$ bits/dim: the uniform law on the levels (exact)."""
    return math.log2(levels)


# --- discrete: independent per-pixel categorical ---------------------------------------------


def categorical_fit(v, alpha: float, levels: int) -> np.ndarray:
    r"""Per-pixel probabilities `(D, L)`: $(c_{dk} + \alpha)/(n + L\alpha)$ from the counts
    $c_{dk}$ of level $k$ at pixel $d$ in the `n` rows of `v`."""
    v = np.asarray(v)
    if v.min() < 0 or v.max() >= levels:
        raise ValueError(f"v must hold levels in [0, {levels - 1}]; got [{v.min()}, {v.max()}].")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0; got alpha={alpha}.")
    counts = np.stack([np.bincount(col, minlength=levels) for col in v.T])
    return (counts + alpha) / (len(v) + levels * alpha)


def categorical_bpd(probs, v) -> np.ndarray:
    """Exact discrete bits/dim of each row of `v` under per-pixel probabilities `(D, L)`."""
    logp = np.log2(probs[np.arange(v.shape[1]), v])  # (n, D)
    return -logp.mean(axis=1)


# --- continuous: Gaussian, PCA Gaussian, Gaussian mixture on dequantised data ----------------


def gaussian_log_density(w_train, rank: int | None = None):
    r"""Natural log-density of a Gaussian fitted to the rows of `w_train` (maximum likelihood
    mean, sample covariance $C = \sum_i \lambda_i e_i e_i^\top$ with `ddof=1`).

    `rank=None`: the full covariance $C$. `rank=k < D`: probabilistic PCA, covariance
    $\sum_{i \le k} \lambda_i e_i e_i^\top + \sigma^2 (I - \sum_{i \le k} e_i e_i^\top)$ with
    $\sigma^2$ the mean of the other $D - k$ eigenvalues (Tipping and Bishop's maximum
    likelihood noise variance):
    $\ln p(w) = -\tfrac12[\sum_{i \le k} z_i^2/\lambda_i + \lVert r\rVert^2/\sigma^2
    + \sum_{i \le k}\ln\lambda_i + (D - k)\ln\sigma^2 + D\ln 2\pi]$, $z = E_k^\top(w - \mu)$,
    $r = (w - \mu) - E_k z$. Returns a function of `(m, D)` rows.
    """
    w_train = np.asarray(w_train, np.float64)
    n, d = w_train.shape
    k = d if rank is None else rank
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= d:
        raise ValueError(f"rank must be None or an int in [1, {d}]; got rank={rank!r}.")
    mean = w_train.mean(axis=0)
    vals, vecs = np.linalg.eigh(np.cov(w_train, rowvar=False))
    vals, vecs = vals[::-1], vecs[:, ::-1]  # descending
    top, basis = vals[:k], vecs[:, :k]
    noise = float(np.mean(vals[k:])) if k < d else 1.0
    if top[-1] <= 0 or noise <= 0:
        raise ValueError(
            f"the covariance of w_train ({n} rows) is singular at rank {k}: dequantise the data."
        )
    log_norm = np.sum(np.log(top)) + (d - k) * math.log(noise) + d * math.log(2 * math.pi)

    def log_density(w):
        c = np.asarray(w, np.float64) - mean
        z = c @ basis
        quad = np.sum(z**2 / top, axis=1)
        if k < d:
            quad = quad + np.sum((c - z @ basis.T) ** 2, axis=1) / noise
        return -0.5 * (quad + log_norm)

    return log_density


def gmm_log_density(w_train, n_components: int, seed: int, reg_covar: float = 1e-6):
    """Natural log-density of scikit-learn's `GaussianMixture` (full covariances, k-means
    initialisation from `seed`, `reg_covar` added to each covariance's diagonal) fitted to the
    rows of `w_train`."""
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(
        n_components, covariance_type="full", reg_covar=reg_covar, random_state=seed, n_init=1
    )
    gmm.fit(w_train)
    return gmm.score_samples


def dequantised_bpd(log_density, v, rng, repeats: int):
    """`(per-image bits/dim averaged over repeats, per-repeat means over the images)` of a
    continuous density on $w = v + u$, `repeats` draws of $u$."""
    d = v.shape[1]
    per_draw = np.stack(
        [-log_density(v + rng.random(v.shape)) / (d * LOG2) for _ in range(repeats)]
    )
    return per_draw.mean(axis=0), per_draw.mean(axis=1)


def row(name: str, per_image, draw_means=None, **extra) -> dict:
    """A results row: mean bits/dim, its standard error over the test images (`stderr_test`)
    and, for dequantised figures, over the draws of $u$ (`stderr_mc`)."""
    per_image = np.asarray(per_image)
    n = len(per_image)
    out = dict(
        name=name,
        bpd=float(np.mean(per_image)),
        stderr_test=float(np.std(per_image, ddof=1) / math.sqrt(n)),
        stderr_mc=None
        if draw_means is None
        else float(np.std(draw_means, ddof=1) / math.sqrt(len(draw_means))),
    )
    out.update(extra)
    return out
