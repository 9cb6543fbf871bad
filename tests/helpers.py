"""Shared parametrisations for the tests: every SDE and the SDE solvers that must work."""

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import scoresde as ss

SDES = [ss.VPSDE(), ss.SubVPSDE(), ss.VESDE(), ss.EDMSDE()]
SDE_IDS = ["vp", "subvp", "ve", "edm"]
# Checked by tests/test_sde.py and the exact PF-ODE flow-map test only (they would add half again
# to every SDE-parametrised test; DDPMSDE's piecewise-constant beta also needs jump_ts there).
EXTRA_SDES = [ss.CosineVPSDE(), ss.DDPMSDE()]
EXTRA_SDE_IDS = ["cosine", "ddpm"]

SDE_SOLVERS = [dfx.Euler(), dfx.Heun(), dfx.ReversibleHeun(), dfx.SRA1(), dfx.ShARK()]
SDE_SOLVER_IDS = ["euler", "heun", "reversible_heun", "sra1", "shark"]


def random_spd(rng: np.random.Generator, dim: int, low=0.05, high=2.0):
    """A random symmetric positive-definite matrix with eigenvalues in [low, high]."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eig = rng.uniform(low, high, size=dim)
    return (q * eig) @ q.T


def random_gaussian(seed: int, dim: int, dtype=jnp.float32) -> ss.analytic.Gaussian:
    rng = np.random.default_rng(seed)
    return ss.analytic.Gaussian(
        jnp.asarray(rng.normal(size=dim), dtype), jnp.asarray(random_spd(rng, dim), dtype)
    )


def random_mixture(seed: int, dim: int, k: int, dtype=jnp.float32) -> ss.analytic.GaussianMixture:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 2.0))
    means = 2 * rng.normal(size=(k, dim))
    covs = np.stack([random_spd(rng, dim, 0.05, 1.0) for _ in range(k)])
    return ss.analytic.GaussianMixture(
        jnp.asarray(weights, dtype), jnp.asarray(means, dtype), jnp.asarray(covs, dtype)
    )


SCORE_CALLS: list = []


class CountingScore(eqx.Module):
    """`inner(t, x)`, appending to `SCORE_CALLS` on the host every time it really runs (a
    `jax.debug.callback`, so it counts executions, not traces). Clear `SCORE_CALLS` first."""

    inner: Callable

    def __call__(self, t, x):
        jax.debug.callback(SCORE_CALLS.append, 1)
        return self.inner(t, x)
