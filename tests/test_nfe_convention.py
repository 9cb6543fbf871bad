"""One NFE convention: every sampler's `nfe` counts network evaluations, a VJP through the network
as 2 (its forward pass 1, its backward pass 2). Checked against the network's real calls, counted
on the host: a `jax.custom_vjp` network whose forward pass and backward pass each report through
`jax.debug.callback` (unrolled per sample and per cotangent under `vmap`, so it counts executions,
not traces), for every guided score on every sampler.

The default run keeps one combination per guided score and one per sampler; the cross product is
`slow`."""

import itertools

import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import scoresde as ss

SDE = ss.VPSDE()
MIXTURE = ss.analytic.GaussianMixture(
    jnp.array([0.4, 0.6]),
    jnp.array([[-1.0, 0.0], [1.0, 0.5]]),
    jnp.stack([0.2 * jnp.eye(2), 0.3 * jnp.eye(2)]),
)
EXACT = ss.analytic.marginal_score(MIXTURE, SDE)
M1 = ss.LinearMeasurement(jnp.array([[1.0, 0.5]]), jnp.array([0.3]), 0.3)  # d_y = 1
M2 = ss.LinearMeasurement(jnp.array([[1.0, 0.5], [0.2, 1.0]]), jnp.array([0.3, 0.1]), 0.3)
NOISY_LIKELIHOOD = ss.analytic.noisy_likelihood_score(MIXTURE, SDE, M1)  # exact, not a network

CALLS = [0]  # network evaluations seen on the host


def _bump(n):
    def bump(*_):
        CALLS[0] += n

    return bump


def counted(f):
    """`f(t, x)` as a network that reports its real calls: 1 per forward pass, 2 per backward
    pass (a VJP, its forward pass counted apart). The callbacks take the batched operands, so
    `vmap` unrolls them once per sample (and per cotangent)."""

    @jax.custom_vjp
    def net(t, x):
        jax.debug.callback(_bump(1), x)
        return f(t, x)

    def fwd(t, x):
        jax.debug.callback(_bump(1), x)
        return f(t, x), (t, x)

    def bwd(res, ct):
        t, x = res
        jax.debug.callback(_bump(2), x, ct)
        return jax.vjp(f, t, x)[1](ct)

    net.defvjp(fwd, bwd)
    return net


NET = counted(EXACT)
_LABELLED = {label: counted(lambda t, x, c=label: (1 - 0.05 * c) * EXACT(t, x)) for label in (0, 1)}
CLASSIFIER = counted(lambda t, x: jax.nn.log_softmax(jnp.stack([x[0], -x[0]])))


def cond_net(t, x, label):
    """A class-conditional network: one counted network call per call."""
    return _LABELLED[label](t, x)


def _classifier_free():
    return ss.guidance.ClassifierFree(cond_net, 1, 0, 2.0)


# Each guided score around the counted network, and what one call costs, as the convention says.
GUIDED = {
    "posterior": (lambda: ss.guidance.Posterior(NET, NOISY_LIKELIHOOD), 1),
    "dps": (lambda: ss.guidance.DPS(SDE, NET, M1), 3),
    "pigdm": (lambda: ss.guidance.PiGDM(SDE, NET, M1), 3),
    "tmpd": (lambda: ss.guidance.TMPD(SDE, NET, M2), 1 + 2 * 2),  # 1 + 2 d_y
    "tmpd_diagonal": (lambda: ss.guidance.TMPD(SDE, NET, M2, diagonal=True), 1 + 2 * 2),
    "classifier": (lambda: ss.guidance.Classifier(NET, CLASSIFIER, 0, 1.5), 1 + 3),
    "classifier_free": (_classifier_free, 2),
    "dps_of_classifier_free": (lambda: ss.guidance.DPS(SDE, _classifier_free(), M1), 3 * 2),
}

# Each sampler with few steps; the adaptive ones on one sample (a vmapped while loop runs its
# body for every lane until the last one is done, so a batch would count the idle lanes too).
SAMPLERS = {
    "ode": (ss.sample_ode, dict(solver=dfx.Euler(), steps=3, denoise=True), 2),
    "ode_adaptive": (ss.sample_ode, dict(solver=dfx.Tsit5(), rtol=1e-2, atol=1e-2), 1),
    "sde": (ss.sample_sde, dict(steps=3), 2),
    "edm": (ss.sample_edm, dict(steps=3), 2),
    "pc": (ss.sample_pc, dict(steps=3, corrector=ss.LangevinCorrector(0.05, 2)), 2),
    "sde_adaptive": (ss.sample_sde_adaptive, dict(rtol=0.5, atol=0.5, throw=False), 1),
}


def _real_calls(run):
    CALLS[0] = 0
    result = run()
    jax.effects_barrier()
    return result, CALLS[0]


def _check(score, sampler, kw, num):
    result, calls = _real_calls(lambda: sampler(SDE, score, key=jr.key(0), shape=(num, 2), **kw))
    assert int(jnp.sum(result.nfe)) == calls > 0


def _check_guided(guided_id, sampler_id):
    make, per_call = GUIDED[guided_id]
    score = make()
    assert score.nfe_per_call == per_call  # the declaration ...
    sampler, kw, num = SAMPLERS[sampler_id]
    _check(score, sampler, kw, num)  # ... is what the network really ran


# One combination per guided score and one per sampler by default; the scores that take VJPs on
# the fixed-step samplers (the adaptive loops compile several times longer around them).
DEFAULT = [
    ("posterior", "sde_adaptive"),
    ("classifier_free", "ode_adaptive"),
    ("dps", "sde"),
    ("pigdm", "edm"),
    ("tmpd", "pc"),
    ("tmpd_diagonal", "ode"),
    ("classifier", "sde"),
]
SWEEP = [
    pytest.param(g, s, marks=pytest.mark.slow)
    for g, s in itertools.product(GUIDED, SAMPLERS)
    if (g, s) not in DEFAULT
]


@pytest.mark.parametrize("guided_id, sampler_id", [*DEFAULT, *SWEEP])
def test_nfe_counts_the_networks_real_evaluations(guided_id, sampler_id):
    _check_guided(guided_id, sampler_id)


# sample_smc: each twist with the plain network, and guided scores (with no VJP of their own) as
# the prior's score, whose cost then multiplies the twist's.
TWISTS = {
    "moment": (ss.MomentTwist(), M2, 1 + 2 * 2),
    "tweedie": (ss.TweedieTwist(), M1, 3),
    "tweedie_inflated": (ss.TweedieTwist(data_var=0.5), M1, 3),
    "log": (ss.LogTwist(NOISY_LIKELIHOOD.log_likelihood), M1, 1),
}
SMC_SCORES = {"net": (lambda: NET, 1), "classifier_free": (_classifier_free, 2)}
SMC_DEFAULT = [("classifier_free", "tweedie")]
SMC_SWEEP = [
    pytest.param(s, t, marks=pytest.mark.slow)
    for s, t in itertools.product(SMC_SCORES, TWISTS)
    if (s, t) not in SMC_DEFAULT
]


@pytest.mark.filterwarnings("ignore:sample_smc")  # 2 particles, 10 steps: a low ESS, no matter
@pytest.mark.parametrize("score_id, twist_id", [*SMC_DEFAULT, *SMC_SWEEP])
def test_smc_nfe_counts_the_networks_real_evaluations(score_id, twist_id):
    make, score_cost = SMC_SCORES[score_id]
    twist, m, per_step = TWISTS[twist_id]
    steps, num = 10, 2  # fewer Euler-Maruyama steps of the VP SDE diverge (beta dt > 2)

    def run():
        return ss.sample_smc(SDE, make(), m, key=jr.key(0), shape=(num, 2), steps=steps,
                             twist=twist)  # fmt: skip

    result, calls = _real_calls(run)
    assert calls == int(jnp.sum(result.nfe))
    assert int(result.nfe[0]) == score_cost * (steps * per_step + 1)  # + the denoising step


@pytest.mark.slow  # the cost is PiGDM's (checked above); tests/test_cli_conditional.py reads it
def test_the_cli_inpainting_score_declares_the_guided_cost():
    """`scoresde inpaint` binds each image's observation through `cond=`: its score still
    declares PiGDM's cost, so `nfe_per_image` counts network evaluations."""
    from scoresde._cli.inpaint import _PerImage

    mask = jnp.array([True, False])
    m = ss.LinearMeasurement.from_mask(mask, jnp.zeros(2), 0.3)
    score = _PerImage(ss.guidance.PiGDM(SDE, NET, m))
    observed = jnp.array([[0.3, 0.0], [-0.5, 0.0]])
    result, calls = _real_calls(
        lambda: ss.sample_sde(SDE, score, key=jr.key(0), shape=(2, 2), steps=3, cond=observed)
    )
    assert score.nfe_per_call == 3
    assert int(jnp.sum(result.nfe)) == calls == 2 * 3 * (3 + 1)
