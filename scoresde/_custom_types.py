"""Type aliases shared by the package (shapes are documentation, checked by jaxtyping)."""

from collections.abc import Callable
from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Scalar: TypeAlias = Float[ArrayLike, ""]
Sample: TypeAlias = Float[Array, "*data"]
Batch: TypeAlias = Float[Array, "batch *data"]
Key: TypeAlias = PRNGKeyArray
ScoreFn: TypeAlias = Callable[[Scalar, Sample], Sample]
"""`score(t, x)` on one unbatched sample `x` and a scalar time `t`."""
