"""TrainConfig: presets, overrides, validation messages, JSON round trip, parameter counts."""
import pytest
import torch

from diffusion_tutorial.config import PRESETS, ConfigError, TrainConfig, get_config
from diffusion_tutorial.unet import UNet


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_are_valid(preset):
    config = get_config(preset)
    assert config.preset == preset
    assert config.steps > 0 and config.batch_size > 0


def test_quick_is_the_cpu_default():
    config = get_config()
    assert config.preset == "quick" and config.dataset == "mnist-sample"
    assert config.mixed_precision == "auto"


def test_overrides_and_unknown_names():
    assert get_config("tiny", steps=7, lr=3e-4).steps == 7
    with pytest.raises(ConfigError, match="'quick'"):
        get_config("quik")
    with pytest.raises(ConfigError, match="'batch_size'"):
        get_config("tiny", batchsize=4)
    with pytest.raises(ConfigError, match="'mnist'"):
        get_config("tiny", dataset="minst")


@pytest.mark.parametrize("field, value, words", [
    ("batch_size", 0, "batch_size must be a positive"),
    ("timesteps", 0, "timesteps must be a positive"),
    ("steps", -1, "steps must be >= 0"),
    ("beta_end", 1.5, "betas must lie in"),
    ("beta_start", 0.0, "betas must lie in"),
    ("schedule", "cosin", "did you mean 'cosine'"),
    ("sample_steps", 2000, "cannot exceed timesteps"),
    ("image_size", 30, "cannot be halved"),
])
def test_bad_values_give_clear_errors(field, value, words):
    with pytest.raises(ConfigError, match=words):
        get_config("quick", **{field: value})


def test_json_round_trip():
    config = get_config("cifar10", validate=False, steps=123, class_conditional=True)
    back = TrainConfig.from_json(config.to_json())
    assert back == config
    assert back.channel_mults == (1, 2, 2, 2) and isinstance(back.channel_mults, tuple)
    assert config.differences(back) == {}
    other = get_config("cifar10", validate=False, dropout=0.2, steps=5, class_conditional=True)
    assert set(config.differences(other)) == {"dropout"}   # steps may change on resume


def test_parameter_count_matches_the_built_model(capsys):
    config = get_config("tiny")
    model = UNet(**config.model_kwargs())
    expected = sum(p.numel() for p in model.parameters())
    assert config.count_parameters() == expected
    text = config.summary()
    assert f"{expected:,}" in text and f"{expected:,}" in capsys.readouterr().out


def test_cifar10_preset_is_the_ddpm_model_size():
    # Ho et al. 2020, appendix B: 35.7M parameters for the CIFAR-10 model.
    assert abs(get_config("cifar10").count_parameters() / 35.7e6 - 1) < 0.01


def test_class_conditional_uses_dataset_classes():
    config = get_config("tiny", class_conditional=True)
    assert config.num_classes == 10
    assert get_config("tiny").num_classes is None


def test_config_and_pretrained_build_the_same_diffusion():
    from diffusion_tutorial.pretrained import build_diffusion
    config = get_config("tiny", timesteps=40, beta_start=2e-4, beta_end=0.03, variance="beta_tilde")
    a = config.build_diffusion()
    b = build_diffusion({"schedule": "linear", "timesteps": 40, "variance": "beta_tilde",
                         "beta_start": 2e-4, "beta_end": 0.03})
    assert a.betas[0].item() == pytest.approx(2e-4) and a.betas[-1].item() == pytest.approx(0.03)
    for name in ("betas", "alphas_cumprod", "posterior_variance", "model_variance"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
