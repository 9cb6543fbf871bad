"""`scoresde bench`: the quick run end to end, its JSON schema, and its error handling."""

import copy
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import jax.random as jr
import jsonschema
import numpy as np
import pytest
from helpers import record_figures, slow_except

from scoresde import cli
from scoresde._bench import measure, problems, report, solvers

# One worker for the whole module: the quick run below is a module fixture (~2 minutes), and
# under `--dist loadgroup` every worker that got one of its tests would run it again.
pytestmark = pytest.mark.xdist_group("bench")


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The smallest bench through the command line, in process: ring2d, Euler at 10 NFE, 64
    samples (seconds, not minutes). Its payload is the valid template the schema and report
    tests modify; the full quick run below is `slow` (`.ci/run` runs it)."""
    out = tmp_path_factory.mktemp("bench-small")
    argv = ["bench", "--quick", "--problems", "ring2d", "--samplers", "Euler", "--nfes", "10",
            "--num-samples", "64", "--out", str(out), "--cache", str(out / "cache")]  # fmt: skip
    assert cli.main(argv) == 0
    return out, json.loads((out / "bench.json").read_text())


def test_small_bench_writes_valid_json_table_and_plot(small_run):
    """The default run's check of what the quick run writes (schema, table, plot)."""
    out, payload = small_run
    jsonschema.validate(payload, report.schema())
    [prob] = payload["problems"]
    assert prob["name"] == "ring2d" and [r["status"] for r in prob["rows"]] == ["ok"]
    assert "| Euler |" in (out / "bench.md").read_text()
    assert (out / "work_precision_ring2d.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    "spread", slow_except([1.0, 1.5, 100.0], ["one-point", "within-2x", "decades"], ["within-2x"])
)
def test_every_work_precision_panel_has_titles_labels_and_ticks(small_run, tmp_path, spread):
    """Each of the three panels is titled, its axes labelled, and both axes carry at least two
    tick labels whatever the range of the values: one point, values within a factor 1.5 (no
    power of ten inside: the range that once left a panel without y labels), several decades."""
    _, payload = small_run
    prob = copy.deepcopy(payload["problems"][0])
    (row,) = prob["rows"]
    if spread != 1.0:
        prob["rows"].append({**row, "nfe_mean": 2 * row["nfe_mean"],
                             "wall_s": spread * row["wall_s"],
                             "err_ref": row["err_ref"] / spread,
                             "sliced_w2": row["sliced_w2"] * spread})  # fmt: skip
    with record_figures() as figures:
        assert report.plot(prob, tmp_path / "wp.png")
    (fig,) = figures
    assert fig["suptitle"].startswith("ring2d") and len(fig["axes"]) == 3
    for ax in fig["axes"]:
        assert ax["title"] and ax["xlabel"] and ax["ylabel"]
        assert len(ax["xticks"]) >= 2 and len(ax["yticks"]) >= 2, ax


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """`scoresde bench --quick` as a user runs it (a subprocess). Compilation dominates a quick
    run, so it sets JAX's own `JAX_DISABLE_MOST_OPTIMIZATIONS=1` (faster compiles, same results
    up to rounding; its wall times are not the ones to quote)."""
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scoresde",
            "bench",
            "--quick",
            "--out",
            str(out),
            "--cache",
            str(out / "cache"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| UniPC-3 |" in proc.stdout  # the Markdown table is printed
    return out, json.loads((out / "bench.json").read_text())


@pytest.mark.slow  # the quick run: minutes of compilation
def test_quick_bench_writes_valid_json_table_and_plots(quick_run):
    out, payload = quick_run
    jsonschema.validate(payload, report.schema())
    assert [p["name"] for p in payload["problems"]] == list(problems.QUICK_PROBLEMS)
    expected_rows = len(solvers.QUICK_SAMPLERS) - 1 + 0  # adaptive: one tolerance
    for prob in payload["problems"]:
        # every fixed-step sampler at both budgets, the adaptive one at its tolerance
        assert len(prob["rows"]) == 2 * expected_rows + 1
        assert all(r["status"] == "ok" for r in prob["rows"])
        assert (out / f"work_precision_{prob['name']}.png").stat().st_size > 10_000
    table = (out / "bench.md").read_text()
    for name in solvers.QUICK_SAMPLERS:
        assert name in table
    # the SW2 floor's spread over independent reference sets, and the values within it marked
    for prob in payload["problems"]:
        draws = prob["floors"]["sliced_w2_draws"]
        assert len(draws) == measure.FLOOR_DRAWS and len(set(draws)) == len(draws)
        top = report.floor_band(prob["floors"])[1]
        for r in prob["rows"]:
            marked = f"| {r['sliced_w2']:.3g} (at floor) |" in table
            assert marked == (r["sliced_w2"] <= top)
    assert "reference sets, independent draws)" in table


@pytest.mark.slow  # the quick run: minutes of compilation
def test_quick_bench_figures_are_consistent(quick_run):
    _, payload = quick_run
    ring = payload["problems"][0]
    by = {(r["sampler"], r["budget"]): r for r in ring["rows"]}
    for spec in solvers.get_samplers(solvers.QUICK_SAMPLERS):
        if spec.adaptive:
            continue
        lo, hi = by[(spec.name, 10)], by[(spec.name, 20)]
        assert lo["nfe_mean"] <= 10 and hi["nfe_mean"] <= 20  # budgets are respected exactly
        assert lo["nfe_mean"] < hi["nfe_mean"]
        if spec.deterministic:
            assert hi["err_ref"] < lo["err_ref"]  # more steps, closer to the reference solution
        else:
            assert lo["err_ref"] is None
    # exact score: a tight adaptive solve lands near the reference; the NLL matches the analytic
    assert by[("Tsit5 (adaptive)", 1e-3)]["err_ref"] < 0.01
    nll = ring["nll"]
    assert abs(nll["model"] - nll["exact"]) < 0.02
    # metrics of the exact-score problem sit near their floor at 20 NFE for a good solver
    assert by[("UniPC-3", 20)]["sliced_w2"] < 3 * ring["floors"]["sliced_w2"]


def test_schema_rejects_a_failed_solve_printed_as_a_number(small_run):
    _, payload = small_run
    bad = copy.deepcopy(payload)
    row = bad["problems"][0]["rows"][0]
    row["status"] = "failed: max_steps reached"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, report.schema())
    bad = copy.deepcopy(payload)
    bad["problems"][0]["rows"][0]["sliced_w2"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, report.schema())


def test_a_failing_sampler_is_a_status_not_a_number():
    ring = problems.make_problem("ring2d", num=16, key=jr.key(0), quick=True, cache=None)
    nan_score = lambda t, x: jnp.full_like(x, jnp.nan)
    broken = problems.Problem(**{**ring.__dict__, "score": nan_score})
    spec = solvers.get_samplers(["Euler"])[0]
    row = measure.run_sampler(
        spec,
        broken,
        10,
        key=jr.key(1),
        x_T=broken.noise(jr.key(2)),
        ref=np.zeros((16, 2)),
        bandwidth=1.0,
        repeats=1,
        metric_key=jr.key(3),
    )
    assert row["status"].startswith("failed: ")
    assert "sliced_w2" not in row and "nfe_mean" not in row


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--problems", "mnist"], "unknown problem"),
        (["--samplers", "RK4"], "unknown sampler"),
        (["--nfes", "1"], "NFE budgets"),
        (["--tolerances", "2"], "tolerances"),
        (["--num-samples", "1"], "num_samples"),
    ],
)
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, argv, message):
    assert cli.main(["bench", "--quick", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.parametrize(
    "name",  # Bosh3 (first-same-as-last) by default, the other costs in the slow run
    [pytest.param(n, marks=() if n == "Bosh3" else pytest.mark.slow)
     for n in ("Bosh3", "Reversible Heun (SDE)", "DPM-Solver-3", "ShARK")],
)  # fmt: skip
def test_budget_to_steps_uses_the_samplers_own_nfe_count(name):
    """The bench turns an NFE budget into steps with the library's evaluation cost, so the NFE
    a sampler reports is the predicted one and never exceeds the budget (Bosh3 is
    first-same-as-last: one evaluation at the start)."""
    ring = problems.make_problem("ring2d", num=4, key=jr.key(0), quick=True, cache=None)
    spec = solvers.get_samplers([name])[0]
    for budget in (10, 13):
        result = spec.run(ring, jr.key(1), ring.noise(jr.key(2)), budget)
        predicted = spec.evals_at_init + spec.steps_for(budget) * spec.evals_per_step + 1
        assert np.all(np.asarray(result.nfe) == predicted)
        assert predicted <= budget


@pytest.mark.slow
def test_python_api_returns_the_rows_and_writes_nothing_without_out(tmp_path, monkeypatch):
    import scoresde as ss

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="unknown problem"):
        ss.bench.run(problems=["mnist"])
    rows = ss.bench.run(
        problems="ring2d", samplers=["Euler"], budgets=[10], num_samples=64, quick=True
    )
    assert [(r["problem"], r["sampler"], r["budget"]) for r in rows] == [("ring2d", "Euler", 10)]
    assert rows[0]["status"] == "ok" and rows[0]["nfe_mean"] == 10
    assert list(tmp_path.iterdir()) == []
    assert "ring2d" in ss.bench.PROBLEMS and "UniPC-3" in ss.bench.SAMPLERS


def test_digit_rows_carry_the_digit_metrics_in_the_schema_and_the_table(small_run):
    """A digits problem (here with a stand-in score: a Gaussian fitted to the training digits)
    gets `scoresde.digit_metrics` in each row: Frechet beside its floor, class TV, confidence;
    the row validates against the schema and the Markdown report shows them."""
    import jsonschema

    import scoresde as ss

    y = ss.dequantize(None, ss.load_digits().train.reshape(1500, -1)).astype(jnp.float32)
    fitted = ss.analytic.Gaussian(y.mean(0), jnp.cov(y.T) + 1e-3 * jnp.eye(64))
    flat = ss.analytic.marginal_score(fitted, ss.VPSDE())
    score = lambda t, x: flat(t, x.reshape(64)).reshape(x.shape)
    test = jnp.asarray(2 * (ss.load_digits().test.astype(np.float32) + 0.5) / 256 - 1)
    digits = problems.Problem(
        name="digits-gauss", description="Gaussian stand-in", sde=ss.VPSDE(), score=score,
        data_shape=(1, 8, 8), reference=test[:64], reference_2=test[64:128], digits=True,
    )  # fmt: skip
    spec = solvers.get_samplers(["Euler"])[0]
    row = measure.run_sampler(
        spec, digits, 20, key=jr.key(1), x_T=digits.noise(jr.key(2)), ref=np.zeros((64, 64)),
        bandwidth=1.0, repeats=1, metric_key=jr.key(3),
    )  # fmt: skip
    q = row["digits"]
    assert q["frechet"] > q["frechet_floor"] > 0 and 0 <= q["class_tv"] <= 1
    # 95 % bootstrap intervals around each
    for name in ("frechet", "frechet_floor", "class_tv"):
        low, high = q[f"{name}_interval"]
        assert low <= q[name] <= high and low < high, name
    assert 0 < q["confidence"] < q["reference_confidence"] <= 1  # a Gaussian is not a digit
    row_schema = {**report.schema()["$defs"]["row_ok"], "$defs": report.schema()["$defs"]}
    jsonschema.validate(row, row_schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**row, "digits": {**q, "class_tv": 2.0}}, row_schema)
    plain = {**row}
    del plain["digits"]
    jsonschema.validate(plain, row_schema)  # other problems' rows have no digits entry
    payload = copy.deepcopy(small_run[1])
    payload["problems"][0]["rows"][0]["digits"] = q
    jsonschema.validate(payload, report.schema())
    table = report.markdown(payload)
    assert "Sample quality against the test digits" in table
    fr, fl, tv = q["frechet_interval"], q["frechet_floor_interval"], q["class_tv_interval"]
    assert (f"| {q['frechet']:.2f} [{fr[0]:.2f}, {fr[1]:.2f}] | {q['frechet_floor']:.2f} "
            f"[{fl[0]:.2f}, {fl[1]:.2f}] | {q['class_tv']:.3f} [{tv[0]:.3f}, {tv[1]:.3f}] |") in table  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**row, "digits": {**q, "frechet_interval": [1.0]}}, row_schema)
    assert "Sample quality" not in report.markdown(small_run[1])


def test_the_harness_imports_nothing_from_the_application():
    """`scoresde._bench` and `scoresde.bench` are a library: the command line (`scoresde._cli`)
    stays unloaded when they are imported, and no function imports a module of the package."""
    import ast
    import pathlib

    code = (
        "import sys, scoresde.bench, scoresde._bench.problems, scoresde._bench.suite; "
        "print(sorted(m for m in sys.modules if m.startswith('scoresde._cli')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    package = pathlib.Path(problems.__file__).parents[1]
    for folder in ("_bench", "_cli", "_training", "_inverse", "_metrics"):
        for path in (package / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    inner = isinstance(node, ast.ImportFrom) and node.level > 0
                    inner |= isinstance(node, ast.Import) and any(
                        a.name.startswith("scoresde") for a in node.names
                    )
                    assert not inner, f"{path.name}:{node.lineno} imports the package in a function"
            if folder == "_bench":
                assert "_cli" not in path.read_text(), f"{path.name} refers to scoresde._cli"
