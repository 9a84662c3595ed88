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
    ("seed", 2**64, r"seed must be an integer in \[-2\*\*63, 2\*\*63\)"),
    ("data_dir", " ", "data_dir is empty"),
    ("run_dir", "", "run_dir is empty"),
])
def test_bad_values_give_clear_errors(field, value, words):
    with pytest.raises(ConfigError, match=words):
        get_config("quick", **{field: value})


@pytest.mark.parametrize("field, interval", [
    ("lr", "(0, inf)"), ("weight_decay", "[0, inf)"), ("grad_clip", "[0, inf)"),
    ("dropout", "[0, 1)"), ("p_uncond", "[0, 1]"), ("ema_decay", "[0, 1)"), ("min_snr_gamma", "(0, inf)"),
])
def test_every_float_field_must_be_finite_and_in_its_interval(field, interval):
    """nan, +-inf and values just outside the interval are refused with the interval named;
    the ends the interval includes are accepted."""
    low, high = interval[1:-1].split(", ")
    outside = [float("nan"), float("inf"), float("-inf"), float(low) - 1e-9]
    if high != "inf":
        outside.append(float(high) + 1e-9)
    for value in outside + ([float(low)] if interval[0] == "(" else []) + \
            ([float(high)] if interval[-1] == ")" and high != "inf" else []):
        with pytest.raises(ConfigError, match=rf"{field} must be a finite number in \{interval[0]}"
                                              rf"{low}, {high}\{interval[-1]}, got"):
            get_config("tiny", **{field: value})
    if interval[0] == "[":
        assert getattr(get_config("tiny", **{field: float(low)}), field) == float(low)
    if interval[-1] == "]":
        assert getattr(get_config("tiny", **{field: float(high)}), field) == float(high)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 0.0, 1.0, -0.01])
@pytest.mark.parametrize("field", ["beta_start", "beta_end"])
def test_betas_must_be_finite_and_inside_zero_one(field, value):
    with pytest.raises(ConfigError, match=r"betas must lie in \(0, 1\)"):
        get_config("tiny", **{field: value})


@pytest.mark.parametrize("field, value, words", [
    ("lr", "1e-3", "lr must be a number, got '1e-3' (str)"),
    ("steps", 10.5, "steps must be an integer, got 10.5 (float)"),
    ("batch_size", True, "batch_size must be an integer, got True (bool)"),
    ("class_conditional", "yes", "class_conditional must be true or false"),
    ("image_size", 8.0, "image_size must be an integer or null"),
    ("dataset", 3, "dataset must be a string"),
])
def test_a_hand_edited_value_of_the_wrong_kind_is_named(field, value, words):
    """config.json can be edited by hand: a value of the wrong kind is named, not a bare
    TypeError from deep inside training."""
    config = TrainConfig.from_dict({**get_config("tiny").to_dict(), field: value})
    with pytest.raises(ConfigError) as err:
        config.validate()
    assert words in str(err.value)


def test_an_unknown_device_is_named():
    with pytest.raises(ConfigError, match="unknown device 'gpu': use auto, cpu, cuda"):
        get_config("tiny", device="gpu")
    assert get_config("tiny", device="cuda:1").device == "cuda:1"   # parsed, not required here


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
