"""Dual-averaging step-size adaptation (Hoffman and Gelman 2014): MALA reaches the target
acceptance; the adapted step is reusable by ULA; unadjusted kernels are refused."""

from typing import ClassVar

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss


def _gaussian(dim=10, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    stds = np.geomspace(0.05, 1.0, dim)
    return ss.analytic.Gaussian(jnp.asarray(rng.normal(size=dim)), jnp.asarray((q * stds**2) @ q.T))


@pytest.mark.parametrize("target_accept", [0.574, pytest.param(0.8, marks=pytest.mark.slow)])
def test_mala_reaches_the_target_acceptance(x64, target_accept):
    """From h0 = 1e-4 (acceptance ~1: the control) 400 adaptation steps on 64 chains give a step
    whose acceptance on a fresh 200-step run (256 chains, new key) is within 0.05 of the target."""
    target = _gaussian()
    x0 = target.sample(jr.key(0), 64)
    kernel = ss.MALA(target.log_prob, 1e-4)
    before = ss.run_langevin(kernel, x0, key=jr.key(9), num_steps=50)
    assert abs(float(jnp.mean(before.acceptance_rate)) - target_accept) > 0.15
    out = ss.adapt_step_size(kernel, x0, key=jr.key(1), num_steps=400, target_accept=target_accept)
    assert out.acceptance.shape == (400,)
    assert out.nfe == 401
    assert abs(float(jnp.mean(out.acceptance[-100:])) - target_accept) < 0.05
    tuned = out.apply_to(kernel)
    assert float(tuned.step_size) == float(out.step_size)
    x1 = target.sample(jr.key(2), 256)
    after = ss.run_langevin(tuned, x1, key=jr.key(3), num_steps=200)
    assert abs(float(jnp.mean(after.acceptance_rate)) - target_accept) < 0.05


def test_adapted_step_is_reusable_and_unadjusted_kernels_are_refused():
    target = _gaussian(dim=3)
    out = ss.adapt_step_size(
        ss.MALA(target.log_prob, 0.01), target.sample(jr.key(0), 8), key=jr.key(1), num_steps=20
    )
    ula = out.apply_to(ss.UnadjustedLangevin(target.score, 1.0))
    assert float(ula.step_size) == pytest.approx(float(out.step_size))
    with pytest.raises(ValueError, match="unadjusted"):
        ss.adapt_step_size(ula, jnp.zeros((4, 3)), key=jr.key(0), num_steps=5)
    with pytest.raises(ValueError, match="target_accept"):
        ss.adapt_step_size(
            ss.MALA(target.log_prob, 0.01),
            jnp.zeros((4, 3)),
            key=jr.key(0),
            num_steps=5,
            target_accept=1.5,
        )
    with pytest.raises(TypeError, match="step_size"):
        out.apply_to(object())


def test_step_stays_finite_when_every_step_is_accepted():
    """An adjusted Ozaki step on a Gaussian is accepted at any h (it is the exact transition),
    so dual averaging would grow h without bound; it stops at the cap h0 e^20, finite."""
    target = _gaussian(dim=3)
    kernel = ss.OzakiLangevin(target.score, 0.1, log_prob=target.log_prob, adjusted=True)
    out = ss.adapt_step_size(kernel, target.sample(jr.key(0), 16), key=jr.key(1), num_steps=100)
    assert float(jnp.min(out.acceptance)) > 0.99
    assert float(out.last_step_size) == pytest.approx(0.1 * np.exp(20), rel=1e-4)
    assert np.isfinite(float(out.step_size))


class _FixedKernel(ss.AbstractFixedCostKernel):
    """A kernel with no step size (it never moves): not an AbstractStepSizeKernel."""

    evals_at_init: ClassVar[int] = 0
    evals_per_step: ClassVar[int] = 1

    def init(self, x):
        return ss.LangevinState(jnp.asarray(x), jnp.zeros_like(x))

    def step(self, key, state):
        return state, ss.LangevinInfo(jnp.ones((), state.x.dtype), jnp.array(True))


def test_kernels_without_a_step_size_are_refused_by_type():
    kernel = _FixedKernel()
    assert kernel.nfe(jnp.zeros(3), 4) == 4
    assert isinstance(ss.MALA(lambda y: -jnp.sum(y**2), 0.1), ss.AbstractStepSizeKernel)
    with pytest.raises(TypeError, match="AbstractStepSizeKernel"):
        ss.adapt_step_size(kernel, jnp.zeros((4, 3)), key=jr.key(0), num_steps=5)
    out = ss.StepSizeAdaptation(jnp.ones(()), jnp.ones(()), jnp.ones((1,)), jnp.zeros((1, 3)), 1)
    with pytest.raises(TypeError, match="step_size"):
        out.apply_to(kernel)


def test_a_kernel_declares_its_cost():
    """`nfe` is abstract on the base: a kernel that states no cost cannot be built, and Ozaki
    implements it (overriding no concrete method)."""

    class _Costless(ss.AbstractLangevinKernel):
        def init(self, x):
            return x

        def step(self, key, state):
            return state, None

    with pytest.raises(TypeError):
        _Costless()
    assert "nfe" in ss.OzakiLangevin.__dict__
    assert getattr(ss.AbstractLangevinKernel.nfe, "__isabstractmethod__", False)
