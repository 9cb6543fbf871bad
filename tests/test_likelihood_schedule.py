"""`ss.choose_schedule`: the predicted cost of each likelihood schedule, and the choice."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import scoresde as ss
import scoresde._tuning.likelihood_schedule as ls

SDE = ss.VPSDE()


def _problem():
    data = ss.analytic.GaussianMixture(
        jnp.array([0.5, 0.5]),
        jnp.array([[-1.0, 0.0], [1.0, 0.5]]),
        jnp.stack([0.05 * jnp.eye(2), 0.3 * jnp.eye(2)]),
    )
    return ss.analytic.marginal_score(data, SDE), data.sample(jr.key(3), 24)


def test_expected_max_is_exact_on_the_empirical_law():
    # max of 2 draws from {1, 2, 3}: P = 1/9, 3/9, 5/9
    assert ls.expected_max([3, 1, 2], 2) == pytest.approx(22 / 9, rel=1e-12)
    assert ls.expected_max([3, 1, 2], 1) == pytest.approx(2.0, rel=1e-12)
    assert ls.expected_max([3, 1, 2], 200) == pytest.approx(3.0, rel=1e-12)
    rng = np.random.default_rng(0)
    values = rng.integers(40, 100, 50)
    draws = rng.choice(values, size=(100_000, 8)).max(axis=1)
    assert ls.expected_max(values, 8) == pytest.approx(draws.mean(), abs=4 * draws.std() / 316)


def test_predicted_evaluations_per_schedule():
    nfe = np.array([50.0, 60.0, 70.0, 100.0])
    assert ls.predicted_evaluations(ss.PerSample(), nfe, 64) == (ls.expected_max(nfe, 64), 64)
    evaluations, width = ls.predicted_evaluations(ss.Lanes(16), nfe, 64)
    assert width == 16
    assert evaluations == pytest.approx(64 * 70.0 / 16 + ls.expected_max(nfe, 16) / 2)
    # lanes at least as many as the samples: every sample at once, as PerSample
    assert ls.predicted_evaluations(ss.Lanes(64), nfe, 64) == (ls.expected_max(nfe, 64), 64)
    assert ls.predicted_evaluations(ss.SharedSteps(), nfe, 64, shared_nfe=77) == (77.0, 64)


@pytest.mark.parametrize(
    "seconds_of_width, expected",
    [(lambda w: 1e-3, ss.PerSample), (lambda w: 1e-5 * w, ss.Lanes)],
    ids=["flat cost (a wide device): per-sample", "cost linear in the width: lanes"],
)
def test_the_choice_follows_the_cost_of_a_width(monkeypatch, seconds_of_width, expected):
    """A device whose evaluation costs the same at every width favours the fewest (wide)
    evaluations, PerSample; one whose cost grows with the width favours Lanes."""
    score, x = _problem()

    def calibrate(schedule, run, repeats):  # the real solve, priced by the device above
        result = run()
        evaluations, width = ls.predicted_evaluations(
            schedule, np.asarray(result.nfe), result.nfe.shape[0], float(result.nfe[0])
        )
        return result, evaluations * seconds_of_width(width)

    monkeypatch.setattr(ls, "calibrate", calibrate)
    monkeypatch.setattr(ls, "evaluation_seconds", lambda *a: seconds_of_width(a[-2]))
    candidates = (ss.PerSample(), ss.Lanes(8))
    choice = ss.choose_schedule(SDE, score, x, batch_size=512, key=jr.key(0),
                                candidates=candidates, rtol=1e-4, atol=1e-4)  # fmt: skip
    assert isinstance(choice.schedule, expected)
    predicted = [row["predicted_seconds"] for row in choice.table]
    assert predicted == sorted(predicted)
    assert choice.table[0]["schedule"] == repr(choice.schedule)
    assert choice.pilot_nfe["calibration_batch"] == 24  # the pilot: already twice the lanes
    # the pilot's spread is what the per-sample rows pay for: its max above its mean
    assert choice.pilot_nfe["max"] > choice.pilot_nfe["mean"]


def test_choose_schedule_measures_and_reports():
    score, x = _problem()
    candidates = (ss.PerSample(), ss.Lanes(8), ss.SharedSteps())
    choice = ss.choose_schedule(
        SDE, score, x, batch_size=64, key=jr.key(0), candidates=candidates, repeats=1,
        rtol=1e-4, atol=1e-4,
    )  # fmt: skip
    assert choice.batch_size == 64
    assert {row["schedule"] for row in choice.table} == {repr(c) for c in candidates}
    assert all(row["seconds_per_evaluation"] > 0 for row in choice.table)
    # the calibration batch: the pilot's 24 rows (already twice the 8 lanes)
    assert choice.pilot_nfe["calibration_batch"] == 24
    pilot = ss.log_likelihood(SDE, score, x, key=jr.key(0), rtol=1e-4, atol=1e-4)
    assert choice.pilot_nfe["mean"] == pytest.approx(float(jnp.mean(pilot.nfe)))
    shared = ss.log_likelihood(
        SDE, score, x, key=jr.key(0), rtol=1e-4, atol=1e-4, schedule=ss.SharedSteps()
    )
    row = next(r for r in choice.table if r["schedule"] == "SharedSteps()")
    assert row["evaluations"] == float(shared.nfe[0])


def test_choose_schedule_errors():
    score, x = _problem()
    with pytest.raises(ValueError, match="set the schedule"):
        ss.choose_schedule(SDE, score, x, batch_size=64, key=jr.key(0), lanes=8)
    with pytest.raises(TypeError, match="candidates"):
        ss.choose_schedule(SDE, score, x, batch_size=64, key=jr.key(0), candidates=["lanes"])
    with pytest.raises(ValueError, match="batch_size"):
        ss.choose_schedule(SDE, score, x, batch_size=0, key=jr.key(0))
    with pytest.raises(ValueError, match=">= 2 rows"):
        ss.choose_schedule(SDE, score, x[:1], batch_size=64, key=jr.key(0))
