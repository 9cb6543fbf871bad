"""The classic mode-weight experiment of Song & Ermon (2019), with the exact score.

Data: p = 0.2 N((-5, -5), I) + 0.8 N((5, 5), I). From points drawn uniformly on [-8, 8]^2:

- plain (unadjusted) Langevin dynamics with the exact score of p stays in the basin it starts
  in, so it reports weights near 0.5 / 0.5, not 0.2 / 0.8: the score alone carries no
  information about the relative mass of well-separated modes;
- annealed Langevin dynamics (noise levels 20 -> 1, then a denoising step) mixes at the large
  noise levels and recovers about 0.2 / 0.8;
- so does the reverse-time SDE (predictor-corrector sampling, VP SDE, from the exact p_T).

    python examples/annealed_langevin.py            # about a minute on a laptop CPU
    python examples/annealed_langevin.py --smoke    # seconds: few samples and steps

Writes `annealed_langevin.png` to `--out` (default `scoresde-out`).
"""

import argparse
import pathlib

import jax.numpy as jnp
import jax.random as jr

import scoresde as ss

# --smoke: the same code path at toy sizes (too few samples to resolve the weights).
SMOKE = dict(num=256, langevin_steps=50, num_levels=3, steps_per_level=10, sde_steps=20)


def mixture():
    return ss.analytic.GaussianMixture(
        jnp.array([0.2, 0.8]), jnp.array([[-5.0, -5.0], [5.0, 5.0]]), jnp.stack([jnp.eye(2)] * 2)
    )


def weight_of_first_mode(x):
    """Fraction of samples on the (-5, -5) side of the line x + y = 0."""
    return float(jnp.mean(jnp.sum(x, axis=1) < 0))


def main(
    num: int = 4000,
    langevin_steps: int = 1000,
    langevin_step_size: float = 0.1,
    num_levels: int = 10,
    steps_per_level: int = 100,
    annealed_step_size: float = 0.1,
    sde_steps: int = 500,
    seed: int = 0,
    out: str | None = "annealed_langevin.png",
):
    """Run the three samplers; return their first-mode weights (and write a PNG to `out`)."""
    mix = mixture()
    key = jr.key(seed)
    k_init, k_ula, k_ald, k_sde = jr.split(key, 4)
    x_init = jr.uniform(k_init, (num, 2), minval=-8.0, maxval=8.0)

    ula = ss.run_langevin(
        ss.UnadjustedLangevin(mix.score, langevin_step_size),
        x_init,
        key=k_ula,
        num_steps=langevin_steps,
    )
    ncsn_sde = ss.EDMSDE(sigma_min=0.01, sigma_max=20.0)  # sigma(t) = t: NCSN's noise levels
    ald = ss.annealed_langevin(
        ncsn_sde,
        ss.analytic.marginal_score(mix, ncsn_sde),
        x_init,
        key=k_ald,
        sigmas=ss.geometric_sigmas(20.0, 1.0, num_levels),
        step_size=annealed_step_size,
        steps_per_level=steps_per_level,
    )
    # The reverse SDE starts from the exact p_T (the N(0, I) prior is off by alpha(1) ~ 7e-3 in
    # the means, which alone moves the weights by ~0.01).
    vp = ss.VPSDE()
    k_T, k_sde = jr.split(k_sde)
    rsde = ss.sample_pc(
        vp,
        ss.analytic.marginal_score(mix, vp),
        key=k_sde,
        shape=(num, 2),
        predictor=ss.ReverseDiffusion(),
        corrector=ss.LangevinCorrector(0.01, 1),
        steps=sde_steps,
        x_T=mix.marginal(vp, vp.T).sample(k_T, num),
    )
    results = {
        "langevin": weight_of_first_mode(ula.x),
        "annealed_langevin": weight_of_first_mode(ald.x),
        "reverse_sde": weight_of_first_mode(rsde.x),
        "exact": float(mix.weights[0]),
    }
    for name, w in results.items():
        print(f"{name:18s} weight of N((-5,-5), I): {w:.3f}   of N((5,5), I): {1 - w:.3f}")

    if out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        exact = mix.sample(jr.key(seed + 1), num)
        panels = [
            ("exact samples", exact, results["exact"]),
            ("Langevin", ula.x, results["langevin"]),
            ("annealed Langevin", ald.x, results["annealed_langevin"]),
            ("reverse SDE (PC)", rsde.x, results["reverse_sde"]),
        ]
        fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharex=True, sharey=True)
        for ax, (title, x, w) in zip(axes, panels, strict=True):
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3)
            ax.set_title(f"{title}\nweights {w:.2f} / {1 - w:.2f}")
            ax.set_xlim(-9, 9)
            ax.set_ylim(-9, 9)
            ax.set_aspect("equal")
        fig.tight_layout()
        fig.savefig(out, dpi=100)
        plt.close(fig)
        print(f"wrote {out}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=4000, help="number of samples")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a fast end-to-end check")
    parser.add_argument("--out", default="scoresde-out", help="folder for the PNG")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    main(out=str(out / "annealed_langevin.png"), **(SMOKE if args.smoke else dict(num=args.num)))
