import os
from pathlib import Path

import jax
import pytest
from hypothesis import HealthCheck, settings


def pytest_configure(config):
    """The default run (`-m 'not slow'`) and the smoke run (`-m smoke`) are dominated by XLA
    compile time (hundreds of small programs, each run briefly): skipping the backend's
    optimisation passes cuts it by about a fifth. The `slow` tests (long training and sampling
    runs) keep the optimised code. Set here, before any test module initialises jax's backend;
    a user's own XLA_FLAGS are kept (and may override this one), and the documentation's blocks
    run with them alone (tests/test_doc_snippets.py)."""
    os.environ.setdefault("SCORESDE_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
    markexpr = config.getoption("markexpr", "") or ""
    if "not slow" in markexpr or markexpr.strip() == "smoke":
        flags = "--xla_backend_optimization_level=0 " + os.environ["SCORESDE_USER_XLA_FLAGS"]
        os.environ["XLA_FLAGS"] = flags


# `pytest -m smoke`: about a minute on 2 cores; one fast check each of the oracles, sampling
# (PF-ODE and reverse SDE), likelihood, training losses, Langevin and the command line.
SMOKE = (
    "tests/test_analytic.py::test_gaussian_log_prob_matches_scipy",
    "tests/test_analytic.py::test_mixture_sample_moments",
    "tests/test_sde.py::test_marginal_at_zero_is_the_data[vp]",
    "tests/test_sample.py::test_pf_ode_matches_exact_gaussian_flow[vp]",
    "tests/test_sample.py::test_reverse_sde_reproduces_gaussian_moments[euler]",
    "tests/test_likelihood_shared.py::test_shared_matches_analytic_vp_mixtures",
    "tests/test_losses.py::test_dsm_loss_value_with_the_exact_score",
    "tests/test_langevin.py::test_mala_leaves_a_gaussian_invariant",
    "tests/test_cli.py::test_help_shows_every_default_and_one_output_root[sample]",
)


def slow_by_time() -> list[str]:
    """The test ids of tests/slow_by_time.txt: moved from the default run to `slow` for time
    (their measured seconds and the run they were measured in are in the file)."""
    lines = Path(__file__).with_name("slow_by_time.txt").read_text().splitlines()
    return [line.split()[1] for line in lines if line.strip() and not line.startswith("#")]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    """Mark the `SMOKE` tests, and the tests of `slow_by_time()` slow. In a smoke run, a listed
    test missing from its collected file (renamed, or its id changed) is an error rather than a
    silently smaller subset."""
    collected = {item.nodeid: item for item in items}
    for nodeid in slow_by_time():
        if nodeid in collected:
            collected[nodeid].add_marker(pytest.mark.slow)
    if "smoke" in (config.getoption("markexpr", "") or ""):
        files = {nodeid.split("::")[0] for nodeid in collected}
        missing = [t for t in SMOKE if t.split("::")[0] in files and t not in collected]
        if missing:
            raise pytest.UsageError(f"tests/conftest.py SMOKE names missing tests: {missing}")
    for nodeid in SMOKE:
        if nodeid in collected:
            collected[nodeid].add_marker(pytest.mark.smoke)


jax.config.update("jax_numpy_rank_promotion", "raise")
# Mixed-dtype arithmetic must be explicit: no silent float32 -> float64 promotion (or back).
jax.config.update("jax_numpy_dtype_promotion", "strict")

# The `x64` fixture only switches a global flag, which is the same for every example.
settings.register_profile(
    "scoresde", deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
settings.load_profile("scoresde")


@pytest.fixture
def x64():
    """Run the test with float64 enabled (restored afterwards)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
