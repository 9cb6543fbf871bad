r"""Linear SDEs $dx = f(t)\,x\,dt + g(t)\,dw$ and their Gaussian transition kernels.

Every SDE here has $x_t \mid x_0 \sim N(\alpha(t) x_0, \sigma(t)^2 I)$ with
$\alpha' = f\alpha$ and $(\sigma^2)' = 2 f \sigma^2 + g^2$. Methods act on ONE unbatched sample;
batches go through `jax.vmap`. All formulas are written to stay accurate near $t = 0$
(`expm1`, `log1p`, no $\log 0$).

- `base`: `AbstractSDE`, the interface, and `check_sde_and_score`;
- `variance_preserving`: `VPSDE`, `SubVPSDE` (linear rate, on their own clock $[0, T]$);
- `variance_exploding`: `VESDE` (on its own clock), `EDMSDE`;
- `cosine`: `CosineVPSDE`; `ddpm`: `DDPMSDE` (a discrete table);
- `custom`: `CustomVPSDE`, a VP SDE from any integrated rate $B(t)$.
"""

from .base import (
    _LOG_2PI as _LOG_2PI,
    AbstractSDE as AbstractSDE,
    check_sde_and_score as check_sde_and_score,
)
from .cosine import CosineVPSDE as CosineVPSDE
from .custom import CustomVPSDE as CustomVPSDE
from .ddpm import DDPMSDE as DDPMSDE, _BetaTable as _BetaTable
from .variance_exploding import EDMSDE as EDMSDE, VESDE as VESDE
from .variance_preserving import (
    VPSDE as VPSDE,
    SubVPSDE as SubVPSDE,
    _BetaSchedule as _BetaSchedule,
    _check_betas as _check_betas,
    vp_log_snr_from_log_std as vp_log_snr_from_log_std,
)

_vp_log_snr_from_log_std = vp_log_snr_from_log_std  # its name before the split
