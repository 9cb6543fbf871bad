"""`ss.interop.from_diffusers` against diffusers itself.

The `interop`-marked tests build small random-weight `UNet2DModel`s in torch, save them with a
scheduler config, read them back without torch and compare: the U-Net's output, the score of
each `prediction_type`, the betas, and a DDIM run. They need `torch` and `diffusers`
(`pip install -e '.[interop]'`) and are skipped without them; run them with
`pytest -m interop tests/test_interop_diffusers.py`. The config-error tests need neither.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import scoresde as ss

# Small configurations spanning the supported space (a google/ddpm-cifar10-32-like one first).
CONFIGS = {
    "ddpm_cifar_like": dict(
        sample_size=16,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2,
        norm_num_groups=8,
        attention_head_dim=None,
        flip_sin_to_cos=False,
        freq_shift=1,
        downsample_padding=0,
        norm_eps=1e-6,
    ),
    "no_attention": dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        add_attention=False,
        flip_sin_to_cos=True,
        freq_shift=0,
    ),
    "scale_shift_heads": dict(
        sample_size=(16, 8),
        block_out_channels=(16, 32),
        down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=8,
        resnet_time_scale_shift="scale_shift",
        center_input_sample=True,
        mid_block_scale_factor=1.5,
        time_embedding_dim=40,
        downsample_padding=1,
    ),
    "no_mid_three_layers": dict(
        sample_size=8,
        block_out_channels=(8, 16),
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"),
        layers_per_block=3,
        norm_num_groups=2,
        attn_norm_num_groups=4,
        attention_head_dim=4,
        mid_block_type=None,
        freq_shift=0.5,
    ),
}
SCHEDULER = {"_class_name": "DDIMScheduler", "num_train_timesteps": 1000}


@pytest.fixture(scope="module")
def torch_diffusers():
    torch = pytest.importorskip("torch", reason="the interop tests compare against torch")
    diffusers = pytest.importorskip(
        "diffusers", reason="the interop tests compare against diffusers"
    )
    pytest.importorskip("safetensors", reason="from_diffusers reads safetensors")
    return torch, diffusers


def _save(torch, diffusers, path, config, scheduler=SCHEDULER, seed=0):
    """A random-weight UNet2DModel (every parameter perturbed, so none is left at its zero or
    unit initialisation) saved with `scheduler`; returns the torch model."""
    torch.manual_seed(seed)
    model = diffusers.UNet2DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.save_pretrained(path)
    (path / "scheduler_config.json").write_text(json.dumps(scheduler))
    return model


def _rel_err(got, want):
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


@pytest.mark.interop
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unet_matches_diffusers(torch_diffusers, tmp_path, name):
    torch, diffusers = torch_diffusers
    model = _save(torch, diffusers, tmp_path, CONFIGS[name])
    trained = ss.interop.from_diffusers(tmp_path)
    unet = trained.model.net.fn
    shape = trained.data_shape
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    timesteps = np.array([0.0, 17.25, 999.0], np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x), torch.from_numpy(timesteps)).sample.numpy()
    got = jax.vmap(unet)(jnp.asarray(timesteps), jnp.asarray(x))
    assert got.dtype == jnp.float32 and got.shape == want.shape
    assert _rel_err(got, want) <= 1e-4
    # negative control: another timestep changes the output far beyond the tolerance
    shifted = jax.vmap(unet)(jnp.asarray(timesteps + 1), jnp.asarray(x))
    assert _rel_err(shifted, want) > 1e-3


@pytest.mark.interop
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_score_and_schedule_match_diffusers(
    torch_diffusers, tmp_path, x64, prediction_type, beta_schedule
):
    """On the grid t = (n + 1)/N: alpha(t)^2 is diffusers' alphas_cumprod[n], and the score is
    what diffusers' output means under its prediction_type."""
    torch, diffusers = torch_diffusers
    scheduler = {
        **SCHEDULER,
        "beta_schedule": beta_schedule,
        "beta_start": 0.00085 if beta_schedule == "scaled_linear" else 0.0001,
        "beta_end": 0.012 if beta_schedule == "scaled_linear" else 0.02,
        "prediction_type": prediction_type,
    }
    model = _save(torch, diffusers, tmp_path, CONFIGS["no_attention"], scheduler)
    trained = ss.interop.from_diffusers(tmp_path)
    ref = diffusers.DDIMScheduler.from_pretrained(tmp_path)
    # Reference: the float64 cumprod of diffusers' own (float32) betas. Ours are the same
    # betas up to one float32 ulp each (torch's float32 linspace rounds differently from
    # NumPy's), so |d ln alpha_bar_n| <= sum_{i <= n} ulp(beta_i) / (1 - beta_i).
    betas = ref.betas.double().numpy()
    acp = np.cumprod(1 - betas)
    n = np.array([0, 250, 999])
    bound = np.cumsum(np.spacing(ref.betas.numpy()).astype(np.float64) / (1 - betas))[n]
    t = (n + 1) / 1000.0
    alpha, sigma = jax.vmap(trained.sde.marginal)(jnp.asarray(t))
    assert np.all(np.abs(np.log(np.asarray(alpha) ** 2 / acp[n])) <= 1.01 * bound)
    assert np.all(np.abs(np.asarray(sigma) ** 2 - (1 - acp[n])) <= 1.01 * bound * acp[n])
    x = np.random.default_rng(2).standard_normal((3, *trained.data_shape))
    with torch.no_grad():
        out = model(torch.from_numpy(x).float(), torch.from_numpy(n)).sample.double().numpy()
    a = np.sqrt(acp[n])[:, None, None, None]
    s = np.sqrt(1 - acp[n])[:, None, None, None]
    eps = {"epsilon": out, "v_prediction": a * out + s * x, "sample": (x - a * out) / s}
    want = -eps[prediction_type] / s
    got = jax.vmap(trained.score)(jnp.asarray(t), jnp.asarray(x))
    assert _rel_err(got, want) <= 1e-4


@pytest.mark.interop
def test_ddim_matches_diffusers(torch_diffusers, tmp_path, x64):
    """diffusers' DDIMScheduler loop (eta = 0, no clipping, trailing spacing, 10 steps) and
    ss.sample_ode with ss.DDIM on ss.interop.DiffusersScheduler.ddim_times, from the same
    latents. Timestep n is t = (n + 1)/N; the last step goes to alphas_cumprod[0] (t = 1/N)."""
    torch, diffusers = torch_diffusers
    scheduler = {
        **SCHEDULER,
        "timestep_spacing": "trailing",
        "clip_sample": False,
        "set_alpha_to_one": False,
    }
    model = _save(torch, diffusers, tmp_path, CONFIGS["ddpm_cifar_like"], scheduler)
    trained = ss.interop.from_diffusers(tmp_path)
    steps = 10
    ref = diffusers.DDIMScheduler.from_pretrained(tmp_path)
    ref.set_timesteps(steps)
    latents = np.random.default_rng(3).standard_normal((2, *trained.data_shape)).astype(np.float32)
    x = torch.from_numpy(latents)
    with torch.no_grad():
        for n in ref.timesteps:
            x = ref.step(model(x, n).sample, n, x, eta=0.0).prev_sample
    want = x.double().numpy()
    times, denoise = trained.config.scheduler.ddim_times(steps)
    np.testing.assert_array_equal((times[:-1] * 1000).round() - 1, ref.timesteps.numpy())
    result = ss.sample_ode(
        trained.sde,
        trained.score,
        key=jax.random.key(0),
        shape=latents.shape,
        solver=ss.DDIM(),
        grid=jnp.asarray(times),
        denoise=denoise,
        x_T=jnp.asarray(latents, jnp.float64),
    )
    assert int(result.nfe[0]) == steps
    # Both runs evaluate the same float32 network, whose two implementations agree to at most
    # 1e-5 relative per call (test_unet_matches_diffusers; 1.1e-5 measured for this config),
    # diffusers' loop in float32 and ours in float64. The DDIM update is linear in the state
    # and in the network output, so the per-call differences add up over the 10 steps: at most
    # 10 x 1e-5 = 1e-4 relative to the final sample (measured: 9e-6).
    err = _rel_err(result.x, want)
    assert err <= 1e-4, err
    # negative control: one step fewer is far off
    short = ss.sample_ode(
        trained.sde,
        trained.score,
        key=jax.random.key(0),
        shape=latents.shape,
        solver=ss.DDIM(),
        grid=jnp.asarray(np.delete(times, 1)),
        x_T=jnp.asarray(latents, jnp.float64),
    )
    assert _rel_err(short.x, want) > 1e-2


@pytest.mark.interop
def test_pipeline_folder_and_deprecated_attention_names(torch_diffusers, tmp_path):
    """A DDPMPipeline.save_pretrained folder (unet/ + scheduler/) is read; so are weights saved
    under the pre-0.14 attention names (query/key/value/proj_attn)."""
    torch, diffusers = torch_diffusers
    from safetensors.numpy import load_file, save_file

    model = _save(torch, diffusers, tmp_path / "m", CONFIGS["ddpm_cifar_like"])
    pipe = diffusers.DDPMPipeline(unet=model, scheduler=diffusers.DDPMScheduler())
    pipe.save_pretrained(tmp_path / "pipe")
    trained = ss.interop.from_diffusers(tmp_path / "pipe")
    assert trained.data_shape == (3, 16, 16)
    assert isinstance(trained.model, ss.EpsPrediction)
    assert trained.levels is None and trained.score is trained.model
    assert isinstance(trained.config, ss.interop.DiffusersConfig)
    with pytest.raises(ValueError, match="unconditional"):
        trained.guided(3, 2.0)
    weights = tmp_path / "m" / "diffusion_pytorch_model.safetensors"
    renames = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for name, value in load_file(weights).items():
        for new, dep in renames.items():
            name = name.replace(f".{new}.", f".{dep}.")
        old[name] = value
    assert any(".query." in k for k in old)
    save_file(old, weights)
    x = np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(x), 5).sample.numpy()
    got = jax.vmap(ss.interop.from_diffusers(tmp_path / "m").model.net.fn)(
        jnp.array([5.0]), jnp.asarray(x)
    )
    assert _rel_err(got, want) <= 1e-4


# --- errors: no torch needed (configs written by hand) -------------------------------------

GOOD_UNET = {
    "_class_name": "UNet2DModel",
    "sample_size": 8,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
}
BAD_UNET = {
    "unknown key": ({"cross_attention_dim": 64}, "cross_attention_dim"),
    "class name": ({"_class_name": "UNet2DConditionModel"}, "UNet2DConditionModel"),
    "fourier embedding": ({"time_embedding_type": "fourier"}, "time_embedding_type"),
    "learned embedding": ({"time_embedding_type": "learned"}, "time_embedding_type"),
    "activation": ({"act_fn": "gelu"}, "act_fn"),
    "class embedding": ({"class_embed_type": "timestep"}, "class_embed_type"),
    "class count": ({"num_class_embeds": 10}, "num_class_embeds"),
    "resnet downsampling": ({"downsample_type": "resnet"}, "downsample_type"),
    "resnet upsampling": ({"upsample_type": "resnet"}, "upsample_type"),
    "spatial norm": ({"resnet_time_scale_shift": "spatial"}, "resnet_time_scale_shift"),
    "mid block": ({"mid_block_type": "UNetMidBlock2DCrossAttn"}, "mid_block_type"),
    "down block": (
        {"down_block_types": ["DownBlock2D", "SkipDownBlock2D"]},
        "SkipDownBlock2D",
    ),
    "up block": ({"up_block_types": ["AttnSkipUpBlock2D", "UpBlock2D"]}, "AttnSkipUpBlock2D"),
    "lengths": ({"block_out_channels": [8, 16, 16]}, "same length"),
    "learned variance": ({"out_channels": 6}, "out_channels"),
    "no sample size": ({"sample_size": None}, "sample_size"),
    "odd sample size": ({"sample_size": 7}, "sample_size"),
    "groups": ({"norm_num_groups": 3}, "norm_num_groups"),
}
GOOD_SCHEDULER = {"_class_name": "DDPMScheduler", "num_train_timesteps": 1000}
BAD_SCHEDULER = {
    "unknown key": ({"use_karras_sigmas": True}, "use_karras_sigmas"),
    "class name": ({"_class_name": "EulerDiscreteScheduler"}, "EulerDiscreteScheduler"),
    "beta schedule": ({"beta_schedule": "sigmoid"}, "beta_schedule"),
    "prediction type": ({"prediction_type": "flow"}, "prediction_type"),
    "learned variance": ({"variance_type": "learned_range"}, "variance_type"),
    "zero snr": ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    "trained betas": ({"trained_betas": [0.1, 0.2]}, "trained_betas"),
}


def _write(path, unet, scheduler):
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(unet))
    (path / "scheduler_config.json").write_text(json.dumps(scheduler))
    return path


@pytest.mark.parametrize("case", sorted(BAD_UNET))
def test_unsupported_unet_config_is_named(tmp_path, case):
    change, named = BAD_UNET[case]
    path = _write(tmp_path / "m", {**GOOD_UNET, **change}, GOOD_SCHEDULER)
    with pytest.raises(ValueError, match=named):
        ss.interop.from_diffusers(path)


@pytest.mark.parametrize("case", sorted(BAD_SCHEDULER))
def test_unsupported_scheduler_config_is_named(tmp_path, case):
    change, named = BAD_SCHEDULER[case]
    path = _write(tmp_path / "m", GOOD_UNET, {**GOOD_SCHEDULER, **change})
    with pytest.raises(ValueError, match=named):
        ss.interop.from_diffusers(path)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ss.interop.from_diffusers(tmp_path / "nowhere")
    path = _write(tmp_path / "m", GOOD_UNET, GOOD_SCHEDULER)
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        ss.interop.from_diffusers(path)
    (path / "scheduler_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        ss.interop.from_diffusers(path)


def test_weights_checked_against_the_config(tmp_path):
    """A missing weight, a wrong shape and an extra weight are each named."""
    safetensors = pytest.importorskip("safetensors.numpy", reason="needs safetensors")
    path = _write(
        tmp_path / "m",
        {
            **GOOD_UNET,
            "down_block_types": ["DownBlock2D"] * 2,
            "up_block_types": ["UpBlock2D"] * 2,
            "add_attention": False,
        },
        GOOD_SCHEDULER,
    )
    file = path / "diffusion_pytorch_model.safetensors"
    safetensors.save_file({"conv_in.weight": np.zeros((8, 3, 3, 3), np.float32)}, file)
    with pytest.raises(ValueError, match="conv_in.bias"):
        ss.interop.from_diffusers(path)
    safetensors.save_file({"conv_in.weight": np.zeros((8, 3, 5, 5), np.float32)}, file)
    with pytest.raises(ValueError, match=r"conv_in.weight.*\(8, 3, 5, 5\)"):
        ss.interop.from_diffusers(path)


def test_ddim_times_only_for_a_consistent_chain():
    sched = ss.interop.DiffusersScheduler(
        "DDIMScheduler", (0.01,) * 1000, "epsilon", "trailing", 0, True
    )
    times, denoise = sched.ddim_times(10)
    np.testing.assert_allclose(times, np.arange(1000, 0, -100) / 1000)
    assert denoise
    np.testing.assert_array_equal(sched.timesteps(4), [999, 749, 499, 249])
    with pytest.raises(ValueError, match="apart"):
        sched.ddim_times(30)
    leading = ss.interop.DiffusersScheduler(
        "DDIMScheduler", (0.01,) * 1000, "epsilon", "leading", 1, False
    )
    np.testing.assert_array_equal(leading.timesteps(4), [751, 501, 251, 1])
    with pytest.raises(ValueError, match="starts at timestep 751"):
        leading.ddim_times(4)
