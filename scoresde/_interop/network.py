r"""[`Network`][scoresde.interop.Network]: a function from elsewhere, in its own input convention,
as the network of one of this package's parametrisations.

The parametrisation (the output side: [`scoresde.EpsPrediction`][], [`scoresde.X0Prediction`][],
[`scoresde.VPrediction`][], [`scoresde.EDMPreconditioning`][], [`scoresde.DirectScore`][]) turns
the output into a score; the [`AbstractTimeInput`][scoresde.interop.AbstractTimeInput] value (the
input side) says what the function takes as its time. Together,
`ss.EpsPrediction(ss.interop.Network(fn, ss.interop.DDPMIndex()), sde)` is a `score(t, x)`.
"""

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp

from .._parametrisation import AbstractForeignNetwork
from .._sde import AbstractSDE
from .time_input import AbstractTimeInput, CNoise


class Network(AbstractForeignNetwork):
    r"""`fn(time_input, x)` on ONE sample, wrapped for a parametrisation.

    Called by the parametrisation at diffusion time $t$ with the sample $x$, it returns
    `fn(time(sde, t), x_in)` (or `fn(time(sde, t), x_in, label)` with a label), where `x_in` is

    - with `scaled_input=True` (default): the parametrisation's input
      $x / \sqrt{\sigma^2 + \alpha^2\sigma_d^2}$ (for a VP SDE with $\sigma_d = 1$, $x$ itself;
      for [`scoresde.EDMPreconditioning`][], EDM's $c_{in}\,x/\alpha$);
    - with `scaled_input=False`: $x$ unchanged (a k-diffusion denoiser $D(x, \sigma)$ on a VE
      SDE, a score network of a VE SDE that takes $x_t$).

    **Arguments:**

    - `fn`: a callable `fn(time_input, x)` returning an array of `x`'s shape (an Equinox module
      keeps its parameters in the pytree; a Flax/Haiku `apply` closes over its parameters,
      which JAX then treats as constants).
    - `time`: an [`AbstractTimeInput`][scoresde.interop.AbstractTimeInput]; default
      [`CNoise`][scoresde.interop.CNoise].
    - `scaled_input`: see above.
    """

    fn: Callable
    time: AbstractTimeInput = CNoise()
    scaled_input: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn must be callable; got {type(self.fn).__name__}.")
        if not isinstance(self.time, AbstractTimeInput):
            raise TypeError(
                "time must be an AbstractTimeInput (ss.interop.Time(), Sigma(), LogSigma(), "
                f"CNoise(), DDPMIndex()); got {self.time!r}."
            )
        if not isinstance(self.scaled_input, bool):
            raise TypeError(f"scaled_input must be a bool; got {self.scaled_input!r}.")

    def at(self, sde: AbstractSDE, t, x, x_in, label=None):
        tin = self.time(sde, t)
        inp = x_in if self.scaled_input else x
        out = self.fn(tin, inp) if label is None else self.fn(tin, inp, label)
        return jnp.asarray(out)
