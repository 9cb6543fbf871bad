r"""Divergence estimators for the instantaneous change of variables.

Each estimator is a value (an Equinox module) with two methods, both on ONE sample:

- `init(key, fn, x)`: the random probes for one trajectory, drawn ONCE per solve and held fixed
  along it (re-drawing them per step makes the vector field discontinuous, which breaks adaptive
  solvers). `fn` is $x \mapsto F(t_\varepsilon, x)$, which only `EigenHutchinson` uses.
- `__call__(fn, x, probes) -> (fn(x), estimates)`: the vector field and a vector of
  `num_estimates` estimates of $\nabla\cdot F = \operatorname{tr}(\partial F/\partial x)$ whose mean
  is the estimate; their spread gives a standard error when there are several.

Every call evaluates `fn` once, plus Jacobian-vector products through it; the library counts
one such call as ONE score evaluation (NFE), whatever the number of products.
"""

import abc
import math
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr


class AbstractProbeDistribution(eqx.Module):
    r"""The distribution of Hutchinson's probes $v$, with $E[v] = 0$ and $E[vv^\top] = I$."""

    @abc.abstractmethod
    def sample(self, key, shape, dtype):
        """Independent probe entries of `shape`."""


class RademacherProbes(AbstractProbeDistribution):
    r"""Entries $\pm 1$ with equal probability (alias `"rademacher"`): variance
    $2(\|J\|_F^2 - \sum_i J_{ii}^2)$, the least of any probe distribution."""

    def sample(self, key, shape, dtype):
        return jr.rademacher(key, shape, dtype)


class GaussianProbes(AbstractProbeDistribution):
    r"""Standard normal entries (alias `"gaussian"`): variance $2\|J\|_F^2$ for symmetric
    $J$."""

    def sample(self, key, shape, dtype):
        return jr.normal(key, shape, dtype)


PROBES: dict[str, Callable[[], AbstractProbeDistribution]] = {
    "rademacher": RademacherProbes,
    "gaussian": GaussianProbes,
}


def as_probe_distribution(noise) -> AbstractProbeDistribution:
    """`Hutchinson(noise=)` as a value: an [`scoresde.AbstractProbeDistribution`][] or one of
    the aliases `"rademacher"`, `"gaussian"`; `ValueError` for another string, `TypeError` for
    anything else, naming `noise`."""
    if isinstance(noise, AbstractProbeDistribution):
        return noise
    if isinstance(noise, str) and noise in PROBES:
        return PROBES[noise]()
    raise (ValueError if isinstance(noise, str) else TypeError)(
        "noise must be ss.RademacherProbes(), ss.GaussianProbes() or one of the aliases "
        f"{tuple(PROBES)}; got noise={noise!r}."
    )


def _orthogonal_rademacher(key, num, size, dtype):
    r"""`num` Rademacher probes `(num, size)` that are orthogonal in blocks of $P = 2^{\lceil
    \log_2 \text{size} \rceil}$: probe $j$ of a block is $\sigma \circ h_{\pi(\cdot), c_j}$, with
    $H_{ab} = (-1)^{\operatorname{popcount}(a \wedge b)}$ Sylvester's Hadamard matrix, $\pi$ a random
    choice of `size` of its rows, $c$ a random choice of its columns (without replacement) and
    $\sigma$ random signs. Each probe is exactly Rademacher-distributed, so the estimator stays
    unbiased; within a block the probes are orthogonal (for `size` a power of two), which
    removes the finite-population part of the variance: on average over the random choices the
    variance of $n \le P$ probes is $(P - n)/(P - 1)$ times that of independent ones, and a full
    block ($n = P = $ `size`) gives the trace exactly.
    """
    p = 1 << max(size - 1, 0).bit_length()
    blocks = []
    for b, k in enumerate(jr.split(key, -(-num // p))):
        cols_here = min(p, num - b * p)
        k_rows, k_cols, k_signs = jr.split(k, 3)
        rows = jr.permutation(k_rows, p)[:size]
        cols = jr.permutation(k_cols, p)[:cols_here]
        parity = jax.lax.population_count(rows[None, :] & cols[:, None]) & 1
        signs = jr.rademacher(k_signs, (1, size), dtype)
        blocks.append(signs * (1 - 2 * parity).astype(dtype))
    return jnp.concatenate(blocks, axis=0)


def _check_size(who, data_shape, max_size):
    size = math.prod(data_shape)
    if size > max_size:
        raise ValueError(
            f"{who} forms the full {size}x{size} Jacobian, above its max_size={max_size}. Use "
            "Hutchinson() (unbiased, one Jacobian-vector product per probe), or raise max_size."
        )


def _probe_products(fn, x, probes):
    """`fn(x)` and the rows $J v_j$ for probes `(n, *data)`, with one linearisation."""
    if probes.shape[0] == 1:
        fx, jv = jax.jvp(fn, (x,), (probes[0],))
        return fx, jv[None]
    fx, lin = jax.linearize(fn, x)
    return fx, jax.vmap(lin)(probes)


def _jacobian(fn, x):
    """`fn(x)` and the full Jacobian as a `(size, size)` matrix $J_{ij} = \\partial f_i/\\partial x_j$."""
    size = x.size
    basis = jnp.eye(size, dtype=x.dtype).reshape(size, *x.shape)
    fx, cols = _probe_products(fn, x, basis)
    return fx, cols.reshape(size, size).T


class AbstractDivergence(eqx.Module):
    """An estimator of $\\nabla\\cdot F(x)$ from Jacobian-vector products (see the module doc)."""

    stochastic: eqx.AbstractClassVar[bool]
    evals_at_init: eqx.AbstractClassVar[int]

    @property
    @abc.abstractmethod
    def num_estimates(self) -> int:
        """Length of the estimate vector (one per probe)."""

    def check(self, data_shape: tuple[int, ...]) -> None:
        """Raise a `ValueError` at trace time if the estimator cannot handle `data_shape`."""

    @abc.abstractmethod
    def init(self, key, fn, x):
        """Probes for one sample's trajectory (drawn once, fixed along it)."""

    @abc.abstractmethod
    def __call__(self, fn, x, probes):
        """`(fn(x), estimates)` with `estimates` of shape `(num_estimates,)`."""


class ExactDivergence(AbstractDivergence):
    r"""The exact trace $\sum_i \partial F_i / \partial x_i$ from the full Jacobian.

    One linearisation and `size` forward-mode products (`jax.linearize` + `vmap`, the same as
    `jax.jacfwd`): cost grows as the data size, so it refuses data with more than `max_size`
    entries (default 1024) with a `ValueError`.
    """

    max_size: int = eqx.field(default=1024, static=True)
    stochastic: ClassVar[bool] = False
    evals_at_init: ClassVar[int] = 0

    @property
    def num_estimates(self):
        return 1

    def check(self, data_shape):
        _check_size("ExactDivergence", data_shape, self.max_size)

    def init(self, key, fn, x):
        return None

    def __call__(self, fn, x, probes):
        fx, jac = _jacobian(fn, x)
        return fx, jnp.trace(jac)[None]


class Hutchinson(AbstractDivergence):
    r"""Hutchinson's estimator $\nabla\cdot F \approx \tfrac1n \sum_j v_j^\top J v_j$, $E[vv^\top] = I$.

    - `num_probes`: $n$ probes, drawn once per sample from `fold_in(key, i)`.
    - `noise`: the probes' distribution, [`scoresde.RademacherProbes`][]`()` (alias
      `"rademacher"`, the default; variance $2(\|J\|_F^2 - \sum_i J_{ii}^2)$) or
      [`scoresde.GaussianProbes`][]`()` (`"gaussian"`; variance $2\|J\|_F^2$) for
      symmetric $J$.
    - `orthogonal`: with Rademacher probes, draw the probes as random-signed columns of a
      Hadamard matrix, orthogonal to each other (default `False`: independent probes). Still
      unbiased; the variance of $n$ probes shrinks by $(P - n)/(P - 1)$ on average, $P$ the data
      size rounded up to a power of two, and $n = P$ probes give the exact trace.

    Products are forward-mode (JVP; `jax.linearize` for several probes): as fast as or faster
    than VJPs ([why](../how-to/likelihood.md#why-these-defaults)).
    With $n > 1$ the result carries a per-sample standard error.

    ??? cite "Reference"
        ```bibtex
        @article{hutchinson1989stochastic,
          title={A stochastic estimator of the trace of the influence matrix for Laplacian
                 smoothing splines},
          author={Hutchinson, Michael F},
          journal={Communications in Statistics - Simulation and Computation},
          year={1989}
        }
        ```
    """

    num_probes: int = eqx.field(default=1, static=True)
    noise: AbstractProbeDistribution = eqx.field(
        default=RademacherProbes(), static=True, converter=as_probe_distribution
    )
    orthogonal: bool = eqx.field(default=False, static=True)
    stochastic: ClassVar[bool] = True
    evals_at_init: ClassVar[int] = 0

    def __check_init__(self):
        if isinstance(self.num_probes, bool) or not isinstance(self.num_probes, int):
            raise TypeError(f"num_probes must be a positive int; got {self.num_probes!r}.")
        if self.num_probes < 1:
            raise ValueError(f"num_probes must be >= 1; got num_probes={self.num_probes}.")
        if self.orthogonal and not isinstance(self.noise, RademacherProbes):
            raise ValueError(
                "orthogonal=True builds Rademacher (Hadamard) probes; it needs "
                f"noise=ss.RademacherProbes() (or 'rademacher'); got noise={self.noise!r}."
            )

    @property
    def num_estimates(self):
        return self.num_probes

    def init(self, key, fn, x):
        if self.orthogonal:
            probes = _orthogonal_rademacher(key, self.num_probes, x.size, x.dtype)
            return probes.reshape(self.num_probes, *x.shape)
        return self.noise.sample(key, (self.num_probes, *x.shape), x.dtype)

    def __call__(self, fn, x, probes):
        fx, jv = _probe_products(fn, x, probes)
        n = self.num_probes
        return fx, jnp.sum((probes * jv).reshape(n, -1), axis=1)


class EigenHutchinson(AbstractDivergence):
    r"""Rademacher Hutchinson in the eigenbasis of the Jacobian at the data point: variance-reduced.

    Rademacher probes $r$ see only the off-diagonal part of the matrix they probe. At the start
    of each trajectory this estimator forms the full Jacobian $J_0$ of $F(t_\varepsilon, \cdot)$
    at the data point once (`size` JVPs, counted as one evaluation), takes the eigenvectors $W$
    of $(J_0 + J_0^\top)/2$ and uses probes $v = W r$, fixed along the trajectory. The
    estimator $\tfrac1n\sum_j v_j^\top J v_j$ stays unbiased for any fixed orthogonal $W$
    ($E[vv^\top] = W W^\top = I$); its variance $2\sum_{i \ne j} (W^\top M W)_{ij}^2$ (with $M$
    the Jacobian integrated along the path) is small when the path's Jacobians share the
    eigenvectors of $J_0$, as for data that are locally Gaussian. What it cannot remove is the
    low-rank, rotating part of the Jacobian where a sample sits between mixture components.

    By default (`orthogonal=True`) the $r_j$ are random-signed Hadamard columns, orthogonal to
    each other (see [`scoresde.Hutchinson`][]): still unbiased, and $n$ of them have
    $(P - n)/(P - 1)$ of the variance of independent ones on average.

    Its cost and accuracy against plain probes are measured in
    [the likelihood how-to](../how-to/likelihood.md#why-these-defaults). The one-off batched `eigh`
    goes through LAPACK: on a small CPU set `OPENBLAS_NUM_THREADS=1` before importing NumPy or
    JAX, or its threads contend with XLA's.

    $W$ enters through `stop_gradient` (the estimate is unbiased for any fixed $W$, so
    gradients stay unbiased too). Like [`scoresde.ExactDivergence`][] it refuses data larger
    than `max_size` (default 1024).
    """

    num_probes: int = eqx.field(default=1, static=True)
    max_size: int = eqx.field(default=1024, static=True)
    orthogonal: bool = eqx.field(default=True, static=True)
    stochastic: ClassVar[bool] = True
    evals_at_init: ClassVar[int] = 1

    def __check_init__(self):
        if isinstance(self.num_probes, bool) or not isinstance(self.num_probes, int):
            raise TypeError(f"num_probes must be a positive int; got {self.num_probes!r}.")
        if self.num_probes < 1:
            raise ValueError(f"num_probes must be >= 1; got num_probes={self.num_probes}.")

    @property
    def num_estimates(self):
        return self.num_probes

    def check(self, data_shape):
        _check_size("EigenHutchinson", data_shape, self.max_size)

    def init(self, key, fn, x):
        _, jac = _jacobian(fn, x)
        _, eigvecs = jnp.linalg.eigh(0.5 * (jac + jac.T))
        eigvecs = jax.lax.stop_gradient(eigvecs)
        if self.orthogonal:
            r = _orthogonal_rademacher(key, self.num_probes, x.size, x.dtype)
        else:
            r = jr.rademacher(key, (self.num_probes, x.size), x.dtype)
        return (r @ eigvecs.T).reshape(self.num_probes, *x.shape)

    def __call__(self, fn, x, probes):
        fx, jv = _probe_products(fn, x, probes)
        n = self.num_probes
        return fx, jnp.sum((probes * jv).reshape(n, -1), axis=1)
