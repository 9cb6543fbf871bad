import jax
import pytest
from hypothesis import HealthCheck, settings

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
