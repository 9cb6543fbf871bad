"""SDEs on their own clock: `T=` on VPSDE / SubVPSDE / VESDE and `CustomVPSDE(B, T=...)`.

A clock change is exact in real arithmetic: the SDE on [0, T] at t is the unit-clock SDE (rates
times T) at u = t / T, with f and g^2 divided by T (dt = T du). So in float64 the schedules agree
to rounding (1e-12), and samplers from the same key agree to rounding amplified along the solve
(observed <= 1e-12; asserted at 1e-9, far below any solver error, e.g. rtol = 1e-5).
"""

import json
import math

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import assert_no_recompile

import scoresde as ss

T = 10.0
FRACTIONS = np.array([1e-6, 1e-4, 1e-3, 0.01, 0.1, 0.37, 0.5, 0.9, 1.0])
S_COS = 0.008
T_COS = 0.9946  # CosineVPSDE's default end, on its unit clock


def _linear_B(b0, b1, T):
    return lambda t: b0 * t + 0.5 * (b1 - b0) * t**2 / T


def _cosine_B(t, scale=T, s=S_COS):
    """The improved-DDPM cosine schedule on the clock t = scale * u (its beta blows up at
    t = scale, so an SDE with it ends before)."""
    phi = lambda u: (u + s) / (1 + s) * (math.pi / 2)  # noqa: E731
    return -2 * jnp.log(jnp.cos(phi(t / scale)) / math.cos(phi(0.0)))


def _pairs():
    """(SDE on the T clock, the same SDE on the unit clock), with ids."""
    return [
        pytest.param(ss.VPSDE(0.1, 20.0, T=T), ss.VPSDE(0.1 * T, 20.0 * T), id="vp"),
        pytest.param(ss.SubVPSDE(0.1, 20.0, T=T), ss.SubVPSDE(0.1 * T, 20.0 * T), id="subvp"),
        pytest.param(ss.VESDE(0.01, 50.0, T=T), ss.VESDE(0.01, 50.0), id="ve"),
        pytest.param(
            ss.CustomVPSDE(_linear_B(0.1, 20.0, T), T=T), ss.VPSDE(0.1 * T, 20.0 * T), id="custom"
        ),
        pytest.param(
            ss.CustomVPSDE(_cosine_B, T=T_COS * T), ss.CosineVPSDE(S_COS, T_COS), id="custom_cos"
        ),
    ]


def _close(a, b, rtol, atol=0.0):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize(("long", "unit"), _pairs())
def test_a_stretched_clock_is_the_unit_clock_at_t_over_T(x64, long, unit):
    """marginal, log-SNR and its inverse at t equal the unit clock's at t / T; f and g^2 are
    the unit clock's divided by T; default t_eps scales with T."""
    # Near t = 0 the user's cosine B(t) = -2 ln(cos phi / cos phi0) cancels (CosineVPSDE does
    # not): relative error ~ eps / B, so that pair is compared from u = 0.01 on.
    rtol = 1e-10 if isinstance(unit, ss.CosineVPSDE) else 1e-12
    u = jnp.asarray(FRACTIONS[FRACTIONS >= 0.01] if rtol > 1e-12 else FRACTIONS, jnp.float64)
    u = u * unit.T
    t = long.T / unit.T * u
    for a, b in zip(long.marginal(t), unit.marginal(u), strict=True):
        _close(a, b, rtol)
    _close(long.log_snr(t), unit.log_snr(u), rtol)
    scale = long.T / unit.T
    _close(long.drift_coeff(t) * scale, unit.drift_coeff(u), rtol, 1e-300)
    _close(long.diffusion(t) ** 2 * scale, unit.diffusion(u) ** 2, rtol)
    lam = unit.log_snr(u)
    _close(long.log_snr_inverse(lam), scale * unit.log_snr_inverse(lam), rtol)
    _close(long.log_snr_inverse(lam), t, 1e-10)  # and it inverts log_snr
    log_sigma = jnp.log(unit.marginal(u)[1])
    _close(long.log_snr_from_log_std(log_sigma), unit.log_snr_from_log_std(log_sigma), 1e-12)
    assert long.prior_std == unit.prior_std
    if not isinstance(unit, ss.CosineVPSDE):
        assert long.T == T and long.default_t_eps == pytest.approx(1e-3 * T, rel=1e-15)


def test_vp_with_unit_rate_on_ten():
    """VPSDE(1, 1, T=10) is beta = 1 on [0, 10] (Equinox's example): alpha = e^{-t/2}."""
    sde = ss.VPSDE(1.0, 1.0, T=10.0)
    t = jnp.array([0.5, 3.0, 10.0])
    _close(sde.diffusion(t), 1.0, 1e-6)
    _close(sde.marginal(t)[0], jnp.exp(-t / 2), 1e-6)
    _close(sde.log_snr_inverse(sde.log_snr(t)), t, 1e-5)


@pytest.mark.parametrize("cls", [ss.VPSDE, ss.SubVPSDE, ss.VESDE])
@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_bad_T_is_an_error(cls, bad):
    with pytest.raises(ValueError, match="T="):
        cls(T=bad)


def test_the_unit_clock_is_unchanged():
    """T = 1 (the default) gives the unit-clock formulas bit for bit (x / 1 and 1 * x are
    exact): VPSDE's B(t) = beta_min t + (beta_max - beta_min) t^2 / 2 as written before T."""
    sde, t = ss.VPSDE(), jnp.linspace(0.0, 1.0, 7)
    B = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
    assert np.array_equal(sde.marginal(t)[0], jnp.exp(-0.5 * B))
    assert sde.default_t_eps == 1e-3 and ss.VESDE().default_t_eps == 1e-3


# --------------------------------------------------------------------------- CustomVPSDE


def test_custom_inverse_is_accurate_over_the_whole_range(x64):
    """The Newton inverse of the log-SNR against the closed form (VPSDE's): a few ulp of t from
    t = 1e-12 T to T, in float64; in float32 within the conditioning of lambda -> t."""
    long, custom = ss.VPSDE(0.1, 20.0, T=T), ss.CustomVPSDE(_linear_B(0.1, 20.0, T), T=T)
    t = T * jnp.logspace(-12, 0, 49)
    lam = long.log_snr(t)
    _close(custom.log_snr_inverse(lam), long.log_snr_inverse(lam), 1e-13)
    # A lam below lambda(T) maps to T; NaN stays NaN.
    assert float(custom.log_snr_inverse(lam[-1] - 1.0)) == T
    assert np.isnan(float(custom.log_snr_inverse(jnp.nan)))
    lam32 = lam.astype(jnp.float32)
    got = custom.log_snr_inverse(lam32)
    assert got.dtype == jnp.float32
    # |dt / t| = 2 B / (t beta) |d lambda| <= 2 |lambda| eps_32 (|d lambda| = one ulp of lambda).
    want = long.log_snr_inverse(lam32.astype(jnp.float64))
    bound = 4 * np.abs(np.asarray(lam)) * np.finfo(np.float32).eps + 4 * np.finfo(np.float32).eps
    assert np.all(np.abs(np.asarray(got, np.float64) / want - 1) <= bound)


def test_custom_inverse_is_differentiable(x64):
    """d t / d lambda by the implicit function theorem, under jit and vmap; and with respect to
    an array parameter of B: B = c t gives t = B* / c, d t / d c = -t / c."""
    long, custom = ss.VPSDE(0.1, 20.0, T=T), ss.CustomVPSDE(_linear_B(0.1, 20.0, T), T=T)
    lam = long.log_snr(T * jnp.array([1e-4, 0.2, 0.9]))
    grad = jax.jit(jax.vmap(jax.grad(custom.log_snr_inverse)))
    _close(grad(lam), jax.vmap(jax.grad(long.log_snr_inverse))(lam), 1e-10)

    class Rate(eqx.Module):
        c: jax.Array

        def __call__(self, t):
            return self.c * t

    def t_of(c):
        return ss.CustomVPSDE(Rate(c), T=T).log_snr_inverse(jnp.asarray(0.3))

    c = jnp.asarray(2.0)
    t_star = float(jnp.logaddexp(0.0, -0.6) / c)
    _close(t_of(c), t_star, 1e-13)
    _close(jax.grad(t_of)(c), -t_star / float(c), 1e-12)


def test_custom_sde_is_a_pytree_for_filter_jit(x64):
    """A plain function is a static leaf: filter_jit traces once per function object, and two
    SDEs from the same function share the compiled code."""
    B = _linear_B(0.1, 20.0, T)

    @eqx.filter_jit
    def lam_mid(sde):
        return sde.log_snr_inverse(sde.log_snr(jnp.asarray(0.5 * sde.T)))

    _close(lam_mid(ss.CustomVPSDE(B, T=T)), 0.5 * T, 1e-12)
    sde = ss.CustomVPSDE(B, T=T)
    with assert_no_recompile():
        lam_mid(sde)


@pytest.mark.parametrize(
    ("B", "T_", "match"),
    [
        (lambda t: t + 1.0, 1.0, "B\\(0\\)"),
        (lambda t: -t, 1.0, "increasing"),
        (lambda t: jnp.sin(4 * t), 1.0, "increasing"),
        (lambda t: jnp.log1p(-t), 1.0, "increasing|finite"),  # decreasing, -inf at t = 1
        (lambda t: jnp.tan(t), 2.0, "finite|increasing"),  # a pole at pi / 2 < 2
        (lambda t: t, 0.0, "T="),
    ],
)
def test_custom_rejects_a_bad_integrated_beta(B, T_, match):
    with pytest.raises(ValueError, match=match):
        ss.CustomVPSDE(B, T=T_)


def test_custom_rejects_a_non_callable():
    with pytest.raises(TypeError, match="integrated_beta"):
        ss.CustomVPSDE(1.0)


# --------------------------------------------------------------------------- samplers

DIST = dict(mean=[0.5, -1.0], cov=[[1.0, 0.3], [0.3, 0.5]])


def _gauss():
    return ss.analytic.Gaussian(jnp.asarray(DIST["mean"]), jnp.asarray(DIST["cov"]))


def _samplers():
    """(run(sde, score), across clocks?): each compares VPSDE(T=10) and CustomVPSDE(linear B,
    T=10) with the unit clock's VPSDE, except fixed-step `sample_sde`, whose noise is drawn
    from the bits of the step times: the same key gives the same noise only on the same grid,
    so it compares the two T = 10 SDEs (other clocks: the law test below)."""
    key, shape = jr.key(3), (3, 2)

    def ode_tsit5(sde, s):
        return ss.sample_ode(sde, s, key=key, shape=shape).x

    def ode_dpmpp2m(sde, s):
        return ss.sample_ode(sde, s, key=key, shape=shape, solver=ss.DPMSolverPP2M(), steps=12).x

    def pc(sde, s):
        return ss.sample_pc(sde, s, key=key, shape=shape, steps=20).x

    def likelihood(sde, s):
        div, x = ss.ExactDivergence(), jnp.array([[0.6, -0.8], [-0.2, -1.5]])
        return ss.log_likelihood(sde, s, x, key=key, t_eps=1e-5 * sde.T, divergence=div).log_prob

    def sde_fixed(sde, s):
        return ss.sample_sde(sde, s, key=key, shape=shape, steps=30).x

    return [
        pytest.param(ode_tsit5, True, id="ode_tsit5"),
        pytest.param(ode_dpmpp2m, True, id="ode_dpmpp2m"),
        pytest.param(pc, True, id="pc"),
        pytest.param(likelihood, True, id="log_likelihood"),
        pytest.param(sde_fixed, False, id="sde_fixed_same_clock"),
    ]


@pytest.mark.parametrize(("run", "across"), _samplers())
def test_samplers_agree_across_clocks(x64, run, across):
    """The same key and the exact score give the same samples (and log-likelihoods, t_eps
    scaled with T) on VPSDE(T=10), on CustomVPSDE(linear B, T=10) and on the unit clock."""
    dist = _gauss()
    long = ss.VPSDE(0.1, 20.0, T=T)
    custom = ss.CustomVPSDE(_linear_B(0.1, 20.0, T), T=T)
    ref_sde = ss.VPSDE(0.1 * T, 20.0 * T) if across else long
    ref, *outs = [
        run(sde, ss.analytic.marginal_score(dist, sde)) for sde in (ref_sde, long, custom)
    ]
    assert np.all(np.isfinite(ref))
    for out in outs:
        _close(out, ref, 1e-9, 1e-9)


def test_dpm_solver_on_a_custom_cosine_schedule(x64):
    """CustomVPSDE with the cosine B (its log-SNR inverse numerical) against CosineVPSDE (closed
    form) on the unit clock: DPM-Solver++ steps uniform in lambda, from the same latents."""
    dist, key = _gauss(), jr.key(5)
    custom, unit = ss.CustomVPSDE(_cosine_B, T=T_COS * T), ss.CosineVPSDE(S_COS, T_COS)
    x = [
        ss.sample_ode(
            sde,
            ss.analytic.marginal_score(dist, sde),
            key=key,
            shape=(3, 2),
            solver=ss.DPMSolverPP2M(),
            steps=12,
            t_eps=1e-3 * sde.T,  # CosineVPSDE's default is 1e-3 whatever its T
        ).x
        for sde in (custom, unit)
    ]
    _close(x[0], x[1], 1e-9, 1e-9)


def test_analytic_score_follows_the_clock(x64):
    dist, x = _gauss(), jnp.array([0.3, -0.2])
    long, unit = ss.VPSDE(0.1, 20.0, T=T), ss.VPSDE(0.1 * T, 20.0 * T)
    custom = ss.CustomVPSDE(_linear_B(0.1, 20.0, T), T=T)
    for u in (1e-3, 0.2, 1.0):
        want = ss.analytic.marginal_score(dist, unit)(u, x)
        for sde in (long, custom):
            _close(ss.analytic.marginal_score(dist, sde)(T * u, x), want, 1e-12)


def test_adaptive_sde_agrees_across_power_of_four_clocks(x64):
    """Adaptive reverse SDE on a `VirtualBrownianTree` (which normalises its interval and scales
    increments by the square root of its length): on T = 4 every scaling (4 and sqrt(4)) is a
    power of two, exact in binary, so the same key gives the same path and the same accepted
    steps. (On T = 10, or 8, rounding can flip one accept/reject decision among thousands, and
    the samples then differ by the solver's error, about rtol.)"""
    dist, key = _gauss(), jr.key(0)
    outs = []
    for sde in (ss.VPSDE(0.1, 20.0, T=4.0), ss.VPSDE(0.4, 80.0)):
        r = ss.sample_sde(
            sde,
            ss.analytic.marginal_score(dist, sde),
            key=key,
            shape=(2, 2),
            solver=dfx.Heun(),
            steps=None,
            stepsize_controller=dfx.PIDController(rtol=1e-2, atol=1e-2),
        )
        outs.append((r.x, r.nfe))
    _close(outs[0][0], outs[1][0], 1e-12)
    assert np.array_equal(outs[0][1], outs[1][1])


def test_fixed_step_sde_has_the_same_law_on_another_clock():
    """Euler-Maruyama on t_i = T u_i has the transition kernels of the unit clock's chain on
    u_i (f dt and g^2 dt are unchanged), so the samples have one law. The two-sample mean
    difference has std sqrt(2 var / n) per coordinate: asserted within 4 of them. Negative
    control: the unit clock's score read at t instead of t / T gives a far-off mean."""
    dist, n, steps = _gauss(), 4000, 40
    long, unit = ss.VPSDE(0.1, 20.0, T=T), ss.VPSDE(0.1 * T, 20.0 * T)

    def mean(sde, score, key):
        return ss.sample_sde(sde, score, key=jr.key(key), shape=(n, 2), steps=steps).x.mean(0)

    m_long = mean(long, ss.analytic.marginal_score(dist, long), 1)
    m_unit = mean(unit, ss.analytic.marginal_score(dist, unit), 2)
    se = np.sqrt(2 * np.diag(np.asarray(DIST["cov"])) / n)
    assert np.all(np.abs(np.asarray(m_long - m_unit)) < 4 * se)
    m_wrong = mean(long, ss.analytic.marginal_score(dist, unit), 1)
    assert np.any(np.abs(np.asarray(m_wrong - m_unit)) > 20 * se)


def _integrated_rate(t):
    return 0.1 * t + 0.5 * (20.0 - 0.1) * t**2 / T


def test_checkpoints_record_the_clock(tmp_path):
    """A sidecar records T and CustomVPSDE's B by name (not its repr, whose address changes
    between processes), so a saved model loads again; another clock is a mismatch; and a
    sidecar written before `T=` (no "T") loads into the unit clock."""
    net = ss.MLPScoreNet(2, width=8, depth=1, key=jr.key(0))
    custom = ss.EpsPrediction(net, ss.CustomVPSDE(_integrated_rate, T=T))
    path = tmp_path / "custom.eqx"
    ss.save(path, custom)
    side = ss.read_sidecar(path)["sde"]
    assert side == {
        "class": "CustomVPSDE",
        "T": T,
        "integrated_beta": (f"{__name__}._integrated_rate"),
    }
    ss.load(path, custom)
    with pytest.raises(ss.CheckpointError, match="SDE"):
        ss.load(path, ss.EpsPrediction(net, ss.CustomVPSDE(_integrated_rate, T=2 * T)))

    unit, path = ss.EpsPrediction(net, ss.VPSDE()), tmp_path / "vp.eqx"
    ss.save(path, unit)
    sidecar = ss._training.checkpoint.sidecar_path(path)
    meta = json.loads(sidecar.read_text())
    assert meta["sde"].pop("T") == 1.0
    sidecar.write_text(json.dumps(meta))
    ss.load(path, unit)
    with pytest.raises(ss.CheckpointError, match="SDE"):
        ss.load(path, ss.EpsPrediction(net, ss.VPSDE(T=T)))
