"""Decoupled network times and per-step scales (`scoresde._network_times`,
`tune_grid(network_times=True, network_scales=True)`): the score is asked where the grid says and
scaled as it says, every sampler applies them, they survive JSON, and the tuner keeps them only
when the held-out latents say so."""

import json

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss
from scoresde._bench.problems import DATA
from scoresde._network_times import NetworkTimeScore, offsets_of, on_network_times
from scoresde.guidance import ClassifierFree


def load_problem(name):
    return ss.analytic.GaussianMixture.from_npz(DATA / f"{name}.npz")


class _Time:
    """A 'score' that returns its time argument (broadcast): shows where it was asked."""

    def __call__(self, t, x, *cond):
        return jnp.full_like(x, t)


def _grid_with_network_times():
    sde = ss.VPSDE()
    times = jnp.asarray([1.0, 0.6, 0.2, 0.05, 1e-3])
    network = jnp.asarray([0.9, 0.65, 0.1, 0.04, 1e-3])
    return sde, ss.TimeGrid(times, "DPMSolverPP2M(2)", {}, network)


def test_the_score_is_asked_at_the_network_times_and_rescaled():
    sde, grid = _grid_with_network_times()
    wrapped = on_network_times(grid, sde, _Time())
    assert isinstance(wrapped, NetworkTimeScore)
    x = jnp.zeros(3)
    for t, t_net in zip(grid.times, grid.network_times, strict=True):
        _, sigma = sde.marginal(t)
        _, sigma_net = sde.marginal(t_net)
        np.testing.assert_allclose(wrapped(t, x), sigma_net / sigma * t_net, rtol=2e-5)
    # without network times (a plain grid, a name, None) the score is handed over untouched
    score = _Time()
    for plain in (ss.TimeGrid(grid.times), "log_snr", None, grid.times):
        assert on_network_times(plain, sde, score) is score


SCALES = jnp.asarray([1.3, 0.8, 1.1, 0.9, 1.0])


def test_the_score_is_scaled_at_each_time():
    sde, grid = _grid_with_network_times()
    both = ss.TimeGrid(grid.times, "", {}, grid.network_times, SCALES)
    only_scales = ss.TimeGrid(grid.times, "", {}, None, SCALES)
    x = jnp.zeros(3)
    for i, (t, t_net) in enumerate(zip(grid.times, grid.network_times, strict=True)):
        _, sigma = sde.marginal(t)
        _, sigma_net = sde.marginal(t_net)
        np.testing.assert_allclose(on_network_times(both, sde, _Time())(t, x),
                                   SCALES[i] * sigma_net / sigma * t_net, rtol=2e-5)  # fmt: skip
        np.testing.assert_allclose(on_network_times(only_scales, sde, _Time())(t, x),
                                   SCALES[i] * t, rtol=2e-5)  # fmt: skip
    # between the nodes ln c is linear in t
    mid = 0.5 * (grid.times[0] + grid.times[1])
    expected = jnp.exp(0.5 * (jnp.log(SCALES[0]) + jnp.log(SCALES[1]))) * mid
    np.testing.assert_allclose(on_network_times(only_scales, sde, _Time())(mid, x), expected,
                               rtol=2e-5)  # fmt: skip


def test_zero_offsets_are_the_score_itself():
    sde = ss.VPSDE()
    mix = load_problem("ring2d")
    score = ss.analytic.marginal_score(mix, sde)
    times = jnp.asarray([1.0, 0.3, 1e-3])
    wrapped = NetworkTimeScore(score, sde, times, jnp.zeros(3))
    x = jnp.asarray([0.3, -1.2])
    for t in (1.0, 0.7, 0.3, 0.01, 1e-3):
        np.testing.assert_allclose(wrapped(t, x), score(t, x), rtol=1e-5, atol=1e-6)


def test_network_times_cost_what_the_score_costs():
    sde = ss.VPSDE()
    guided = ClassifierFree(lambda t, x, label: -x, 1, 0, jnp.asarray(2.0))
    wrapped = NetworkTimeScore(guided, sde, jnp.asarray([1.0, 1e-3]), jnp.zeros(2))
    assert wrapped.nfe_per_call == guided.nfe_per_call == 2


def test_time_grid_with_network_times_round_trips_json(tmp_path):
    _, grid = _grid_with_network_times()
    back = ss.TimeGrid.from_json(grid.to_json(tmp_path / "g.json"))
    assert np.array_equal(np.asarray(back.network_times), np.asarray(grid.network_times))
    assert np.array_equal(np.asarray(back.times), np.asarray(grid.times))
    plain = ss.TimeGrid.from_json(ss.TimeGrid(grid.times).to_json())
    assert plain.network_times is None
    with pytest.raises(ValueError, match="network_times"):
        ss.TimeGrid(grid.times, "", {}, grid.network_times[:-1])
    payload = json.loads(grid.to_json())
    for broken in (["nan"] * 5, payload["network_times"][:-1]):
        with pytest.raises(ValueError, match="network_times"):
            ss.TimeGrid.from_json(json.dumps(dict(payload, network_times=broken)))
    scaled = ss.TimeGrid(grid.times, "", {}, grid.network_times, SCALES)
    back = ss.TimeGrid.from_json(scaled.to_json())
    assert np.array_equal(np.asarray(back.network_scales), np.asarray(scaled.network_scales))
    assert back.network_times is not None and plain.network_scales is None
    with pytest.raises(ValueError, match="network_scales must be positive"):
        ss.TimeGrid(grid.times, "", {}, None, SCALES.at[1].set(0.0))
    with pytest.raises(ValueError, match="network_scales"):
        ss.TimeGrid(grid.times, "", {}, None, SCALES[:-1])
    payload = json.loads(scaled.to_json())
    with pytest.raises(ValueError, match="network_scales"):
        ss.TimeGrid.from_json(
            json.dumps(dict(payload, network_scales=payload["network_scales"][:2]))
        )


@pytest.mark.parametrize(
    "sampler, scaled",
    [("ode", False), ("sde", False), ("pc", False), ("edm", False), ("ode", True), ("pc", True)],
)
def test_every_sampler_applies_a_grids_network_times(sampler, scaled):
    """A grid with network times (and scales) samples as its times with the wrapped score
    does, and not as the plain times do."""
    sde, grid = _grid_with_network_times()
    score = ss.analytic.marginal_score(load_problem("ring2d"), sde)
    offsets = offsets_of(sde, grid.times, grid.network_times)
    if scaled:
        grid = ss.TimeGrid(grid.times, "", {}, grid.network_times, SCALES)
    log_scales = jnp.log(SCALES) if scaled else None
    wrapped = NetworkTimeScore(score, sde, grid.times, offsets, log_scales)
    kw = dict(key=jr.key(0), shape=(16, 2))
    if sampler == "ode":
        run = lambda s, g: ss.sample_ode(sde, s, solver=ss.DPMSolverPP2M(), grid=g, **kw).x
    elif sampler == "sde":
        run = lambda s, g: ss.sample_sde(sde, s, grid=g, **kw).x
    elif sampler == "pc":
        run = lambda s, g: ss.sample_pc(sde, s, grid=g, **kw).x
    else:
        run = lambda s, g: ss.sample_edm(sde, s, grid=g, **kw).x
    applied = run(score, grid)
    np.testing.assert_allclose(applied, run(wrapped, ss.TimeGrid(grid.times)), rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    assert float(jnp.max(jnp.abs(applied - run(score, ss.TimeGrid(grid.times))))) > 1e-3


def test_tune_grid_keeps_network_times_only_when_the_held_out_latents_gain():
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(load_problem("ring2d"), sde)
    grid = ss.tune_grid(sde, score, solver=ss.DPMSolverPP2M(), steps=4, key=jr.key(0),
                        shape=(64, 2), network_times=True, max_iterations=20)  # fmt: skip
    rms = grid.info["rms"]
    assert set(rms) >= {"tuned", "network_times"}
    if grid.info["chosen"] == "network_times":
        assert grid.network_times is not None
        assert rms["network_times"]["held_out"] < rms["tuned"]["held_out"]
        times, network = np.asarray(grid.times), np.asarray(grid.network_times)
        assert network[-1] == times[-1] and np.all(network <= times[0])
        assert np.all(network >= times[-1])
    else:
        assert grid.network_times is None
    # this problem gains (measured: held-out RMS 0.078 -> 0.033 at 128 latents)
    assert grid.info["chosen"] == "network_times"


def test_log_likelihood_refuses_a_grid_with_network_times():
    sde, grid = _grid_with_network_times()
    score = ss.analytic.marginal_score(load_problem("ring2d"), sde)
    with pytest.raises(ValueError, match="network times"):
        ss.log_likelihood(sde, score, jnp.zeros((2, 2)), grid=grid)
    with pytest.raises(ValueError, match="network scales"):
        ss.log_likelihood(sde, score, jnp.zeros((2, 2)),
                          grid=ss.TimeGrid(grid.times, "", {}, None, SCALES))  # fmt: skip


def test_tune_grid_keeps_network_scales_only_when_the_held_out_latents_gain():
    sde = ss.VPSDE()
    score = ss.analytic.marginal_score(load_problem("ring2d"), sde)
    grid = ss.tune_grid(sde, score, solver=ss.DPMSolverPP2M(), steps=4, key=jr.key(0),
                        shape=(64, 2), network_times=True, network_scales=True,
                        max_iterations=20)  # fmt: skip
    info = grid.info
    rms = info["rms"]
    assert set(rms) >= {"tuned", "network_times", "network_scales"}
    if info["chosen"] == "network_scales":
        assert grid.network_scales is not None and grid.network_times is not None
        assert rms["network_scales"]["held_out"] < rms["network_times"]["held_out"]
        assert float(grid.network_scales[-1]) == 1.0
        assert np.all(np.asarray(grid.network_scales) > 0)
    else:
        assert grid.network_scales is None
        assert rms["network_scales"]["held_out"] >= rms[info["chosen"]]["held_out"]
    # this problem gains (measured: held-out RMS 0.037 -> 0.028 at 64 latents)
    assert info["chosen"] == "network_scales"
