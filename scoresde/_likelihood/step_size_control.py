r"""Step-size control of the augmented likelihood ODE: error norms and controllers.

The state is $[x, \delta]$ with $\delta$ holding one estimate per probe; the norms below bound
the error of $x$ and of the probe MEAN $\bar\delta$ (the reported quantity), per sample or, for
`SharedSteps`, over the whole batch; `NatsController` bounds $\bar\delta$'s error alone, in nats.
"""

import diffrax as dfx
import jax
import jax.numpy as jnp


def pid_controller(stepsize_controller, rtol, atol, norm=None):
    """`stepsize_controller` if given, else `diffrax.PIDController(rtol, atol)` with `norm`."""
    if stepsize_controller is not None:
        return stepsize_controller
    if norm is None:
        return dfx.PIDController(rtol=rtol, atol=atol)
    return dfx.PIDController(rtol=rtol, atol=atol, norm=norm)


def augmented_rms(scaled_error):
    r"""RMS of the scaled errors of $x$'s entries and of the MEAN over the probes of $\delta$.

    The result uses $\bar\delta$, not each probe's $\delta_j$, so that is what the step-size
    control bounds: with one estimate this is the plain RMS norm; with $n$ it does not spend steps
    on per-probe errors that average out (fewer steps with many probes). Written so that its
    gradient at an exactly zero error is finite.
    """
    x_err, delta_err = scaled_error
    squares = jnp.sum(jnp.abs(x_err) ** 2) + jnp.abs(jnp.mean(delta_err)) ** 2
    mean = squares / (x_err.size + 1)
    positive = mean > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, mean, 1.0)), 0.0)


class NatsController(dfx.PIDController):
    r"""`diffrax.PIDController` that controls $\delta$'s error alone, in nats.

    The error norm is $|\bar\delta_{\rm err}| / \text{nats\_tol}$: the embedded error
    estimate of the probe-mean $\delta$, absolute, per sample. $x$ is excluded (its errors reach
    $\delta$ through the divergence, which the estimate sees); measured against weighting $x$ in,
    at equal solver error: `benchmarks/likelihood_nats.py`. Diffrax's own code does the rest
    (acceptance, the I-controller's factor, clipping): `adapt_step_size` only rescales $\delta$'s
    error by the `atol + rtol * |y|` that diffrax then divides by, and zeroes $x$'s.
    """

    nats_tol: float | jax.Array = 1e-2

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        x_err, d_err = y_error
        d_y = jnp.maximum(jnp.abs(y0[1]), jnp.abs(y1_candidate[1]))
        d_y = jnp.where(jnp.isnan(d_y), jnp.abs(y0[1]), d_y)
        d_err = d_err * ((self.atol + d_y * self.rtol) / self.nats_tol)
        return super().adapt_step_size(
            t0, t1, y0, y1_candidate, args, (x_err, d_err), error_order, state
        )


def delta_norm(scaled_error):
    r"""$|\bar\delta_{\rm err}|$ in units of `nats_tol` (see `NatsController`); a NaN or inf in
    $x$'s error still rejects the step."""
    x_err, delta_err = scaled_error
    bad = ~jnp.all(jnp.isfinite(x_err))
    return jnp.where(bad, jnp.inf, jnp.abs(jnp.mean(delta_err)))


def shared_rms(scaled_error):
    r"""`augmented_rms` over a whole batch: the RMS over every entry of $x$ and each sample's
    probe-mean $\delta$ (scipy's one norm for the flattened batch)."""
    x_err, delta_err = scaled_error
    squares = jnp.sum(jnp.abs(x_err) ** 2) + jnp.sum(jnp.abs(jnp.mean(delta_err, axis=1)) ** 2)
    mean = squares / (x_err.size + delta_err.shape[0])
    positive = mean > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, mean, 1.0)), 0.0)


def shared_delta_norm(scaled_error):
    r"""`delta_norm` over a whole batch: the RMS over samples of $|\bar\delta_{\rm err}|$ in
    units of `nats_tol`."""
    x_err, delta_err = scaled_error
    bad = ~jnp.all(jnp.isfinite(x_err))
    mean = jnp.mean(jnp.abs(jnp.mean(delta_err, axis=1)) ** 2)
    positive = mean > 0
    rms = jnp.where(positive, jnp.sqrt(jnp.where(positive, mean, 1.0)), 0.0)
    return jnp.where(bad, jnp.inf, rms)
