import os

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
