"""scoresde: score-based generative modelling with SDEs on JAX."""

from . import analytic as analytic
from ._brownian import BatchBrownianPath as BatchBrownianPath
from ._grid import time_grid as time_grid
from ._sample import (
    SampleResult as SampleResult,
    sample_ode as sample_ode,
    sample_sde as sample_sde,
)
from ._sde import (
    AbstractSDE as AbstractSDE,
    EDMSDE as EDMSDE,
    SubVPSDE as SubVPSDE,
    VESDE as VESDE,
    VPSDE as VPSDE,
)
from ._terms import (
    forward_terms as forward_terms,
    probability_flow_term as probability_flow_term,
    reverse_terms as reverse_terms,
)

__version__ = "0.1.0"
