"""Training configuration: one dataclass, four presets, validation and JSON round trip.

``get_config("quick")`` is the default of ``python -m diffusion_tutorial train``: a small
UNet on the offline ``mnist-sample`` digits that gives recognizable digits on a laptop CPU
(its measured training time and sample quality are on the book's Benchmarks page, "Time
to quality"). ``"tiny"`` is for tests, ``"full"`` trains on MNIST with a GPU, and
``"cifar10"`` is the 35.7M-parameter model of the DDPM paper (Ho et al. 2020, appendix B).
Any field can be overridden: ``get_config("quick", steps=500)``. Chapter: Training.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

import torch

from .data import DATASETS, DatasetInfo
from .diffusion import GaussianDiffusion
from .parameterization import PREDICTIONS, WEIGHTINGS
from .precision import COMPILE_MODES, PRECISIONS
from .schedules import SCHEDULES
from .unet import UNet

LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says what to change."""


# The interval each float field must lie in ("inf" only as an open end: values must be finite).
FLOAT_RANGES = {"lr": "(0, inf)", "weight_decay": "[0, inf)", "grad_clip": "[0, inf)",
                "dropout": "[0, 1)", "p_uncond": "[0, 1]", "ema_decay": "[0, 1)",
                "beta_start": "(0, 1)", "beta_end": "(0, 1)", "min_snr_gamma": "(0, inf)"}
FLOAT_HINTS = {"lr": " (DDPM uses 2e-4)", "grad_clip": " (0 turns clipping off)",
               "ema_decay": " (e.g. 0.995, or 0.9999 for long runs)"}


def _inside(value: float, interval: str) -> bool:
    """Whether ``value`` lies in an interval written like ``"[0, 1)"`` or ``"(0, inf)"``."""
    low, high = (float(v) for v in interval[1:-1].split(","))
    above = value >= low if interval[0] == "[" else value > low
    below = value <= high if interval[-1] == "]" else value < high
    return above and below


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def closest(name: str, choices) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty string."""
    match = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.4)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as ``config.json`` with every checkpoint."""

    # ---- data
    dataset: str = "mnist-sample"
    data_dir: str = "data"
    image_size: Optional[int] = None      # None: the dataset's own size; else resized to it
    # ---- model (UNet)
    base_channels: int = 32
    channel_mults: tuple = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple = ()
    dropout: float = 0.0
    class_conditional: bool = False
    p_uncond: float = 0.1                 # label dropped to the null class (classifier-free guidance)
    groups: int = 8                       # GroupNorm groups
    num_heads: int = 4                    # attention heads
    # ---- diffusion
    timesteps: int = 1000
    schedule: str = "linear"
    variance: str = "beta"
    beta_start: float = 1e-4              # linear schedule only (DDPM: 1e-4 .. 0.02)
    beta_end: float = 0.02
    prediction: str = "eps"               # what the UNet outputs: "eps", "x0" or "v"
    loss_weighting: str = "simple"        # or "min_snr" (with min_snr_gamma), "elbo"
    min_snr_gamma: float = 5.0
    # ---- optimisation
    batch_size: int = 64                  # per process
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "constant"         # or "cosine": decays to 0 at `steps` after warm-up
    steps: int = 2000
    grad_clip: float = 1.0                # 0 disables clipping
    ema_decay: float = 0.995
    ema_warmup: bool = True
    mixed_precision: str = "auto"         # auto|bf16|fp16|no; auto: bf16 on CUDA >= 8.0, fp16 +
                                          # GradScaler on older CUDA, fp32 on CPU/MPS (precision.py)
    compile: Optional[bool] = None        # torch.compile the network; None: on CUDA only
    compile_mode: str = "default"         # or "reduce-overhead" (CUDA graphs), "max-autotune"
    channels_last: Optional[bool] = None  # NHWC memory layout; None: on CUDA only
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    # ---- logging and output
    log_every: int = 50
    sample_every: int = 500               # 0: only at the end
    checkpoint_every: int = 500           # 0: only at the end
    n_samples: int = 64
    sample_steps: int = 50                # sampler steps for the grids written while training
    run_dir: str = "runs/quick"
    preset: str = "quick"

    # Fields that may change between a checkpoint and its resumed run.
    RESUMABLE_CHANGES = ("steps", "data_dir", "device", "num_workers", "log_every",
                         "sample_every", "checkpoint_every", "n_samples", "sample_steps",
                         "run_dir", "preset", "mixed_precision", "compile", "compile_mode",
                         "channels_last")

    def __post_init__(self) -> None:
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)

    # ------------------------------------------------------------------ derived values
    @property
    def dataset_info(self) -> DatasetInfo:
        return DATASETS[self.dataset]

    @property
    def num_classes(self) -> Optional[int]:
        return self.dataset_info.num_classes if self.class_conditional else None

    @property
    def channels(self) -> int:
        return self.dataset_info.channels

    @property
    def resolution(self) -> int:
        return self.image_size or self.dataset_info.image_size

    # ------------------------------------------------------------------ builders
    def model_kwargs(self) -> dict:
        return dict(in_channels=self.channels, base_channels=self.base_channels,
                    channel_mults=self.channel_mults, num_res_blocks=self.num_res_blocks,
                    attention_resolutions=self.attention_resolutions,
                    image_size=self.resolution, dropout=self.dropout,
                    num_classes=self.num_classes, groups=self.groups, num_heads=self.num_heads)

    def build_model(self, device=None) -> UNet:
        """The UNet this config describes (errors for sizes it cannot halve come from it)."""
        try:
            with device if device is not None else contextlib.nullcontext():
                return UNet(**self.model_kwargs())
        except (ValueError, AssertionError) as err:
            raise ConfigError(f"the UNet cannot be built for this config: {err}") from None

    def build_diffusion(self) -> GaussianDiffusion:
        """The :class:`GaussianDiffusion` this config describes."""
        return GaussianDiffusion(schedule=self.schedule, timesteps=self.timesteps,
                                 variance=self.variance, beta_start=self.beta_start,
                                 beta_end=self.beta_end, prediction=self.prediction,
                                 loss_weighting=self.loss_weighting, min_snr_gamma=self.min_snr_gamma)

    def count_parameters(self) -> int:
        """Number of trainable UNet parameters (built on the meta device: no memory used)."""
        model = self.build_model(torch.device("meta"))
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ checks
    def validate(self, check_model: bool = True) -> "TrainConfig":
        """Raise :class:`ConfigError` with a message that says what to change."""
        self._check_types()
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}{closest(self.dataset, DATASETS)}; "
                              f"choose one of: {', '.join(DATASETS)}.")
        positive = ("batch_size", "timesteps", "base_channels", "num_res_blocks", "n_samples",
                    "sample_steps", "log_every")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("steps", "warmup_steps", "sample_every", "checkpoint_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}.")
        if not self.channel_mults or min(self.channel_mults) <= 0:
            raise ConfigError(f"channel_mults must be positive integers, got {self.channel_mults}.")
        if self.image_size is not None and self.image_size <= 0:
            raise ConfigError(f"image_size must be positive, got {self.image_size}.")
        for name, interval in FLOAT_RANGES.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and _inside(value, interval)):
                if name.startswith("beta_"):
                    raise ConfigError(f"betas must lie in (0, 1): got beta_start={self.beta_start}, "
                                      f"beta_end={self.beta_end}.")
                raise ConfigError(f"{name} must be a finite number in {interval}, got {value}"
                                  f"{FLOAT_HINTS.get(name, '')}.")
        if not -2**63 <= self.seed < 2**63:
            raise ConfigError(f"seed must be an integer in [-2**63, 2**63), got {self.seed}.")
        for name in ("data_dir", "run_dir"):
            if not getattr(self, name).strip():
                raise ConfigError(f"{name} is empty (an unset shell variable?): give a folder name.")
        try:
            torch.device("cpu" if self.device == "auto" else self.device)
        except (RuntimeError, ValueError):
            raise ConfigError(f"unknown device {self.device!r}: use auto, cpu, cuda, cuda:N "
                              "or mps.") from None
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}{closest(self.schedule, SCHEDULES)}; "
                              f"choose one of: {', '.join(SCHEDULES)}.")
        if self.variance not in ("beta", "beta_tilde"):
            raise ConfigError(f"variance must be 'beta' or 'beta_tilde', got {self.variance!r}.")
        for name, value, choices in (("prediction", self.prediction, PREDICTIONS),
                                     ("loss_weighting", self.loss_weighting, WEIGHTINGS)):
            if value not in choices:
                raise ConfigError(f"unknown {name} {value!r}{closest(value, choices)}; choose one of: "
                                  f"{', '.join(choices)}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"unknown lr_schedule {self.lr_schedule!r}"
                              f"{closest(self.lr_schedule, LR_SCHEDULES)}; choose one of: "
                              f"{', '.join(LR_SCHEDULES)}.")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"mixed_precision must be one of {', '.join(PRECISIONS)}, "
                              f"got {self.mixed_precision!r}.")
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, "
                              f"got {self.compile_mode!r}{closest(self.compile_mode, COMPILE_MODES)}.")
        for name in ("compile", "channels_last"):
            if getattr(self, name) not in (None, True, False):
                raise ConfigError(f"{name} must be true, false or null (auto), got {getattr(self, name)!r}.")
        if self.sample_steps > self.timesteps:
            raise ConfigError(f"sample_steps ({self.sample_steps}) cannot exceed timesteps "
                              f"({self.timesteps}).")
        if check_model:
            self.count_parameters()
        return self

    def _check_types(self) -> None:
        """Each field holds its kind of value (a hand-edited config.json may not)."""
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if f.name == "image_size":
                ok, kind = value is None or _is_int(value), "an integer or null"
            elif isinstance(default, bool):
                ok, kind = isinstance(value, bool), "true or false"
            elif isinstance(default, int):
                ok, kind = _is_int(value), "an integer"
            elif isinstance(default, float):
                ok, kind = _is_int(value) or isinstance(value, float), "a number"
            elif isinstance(default, str):
                ok, kind = isinstance(value, str), "a string"
            else:
                continue                  # the tuples: __post_init__ turns them into ints
            if not ok:
                raise ConfigError(f"{f.name} must be {kind}, got {value!r} "
                                  f"({type(value).__name__}).")

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}{closest(unknown[0], names)}.")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def differences(self, other: "TrainConfig", ignore=RESUMABLE_CHANGES) -> dict:
        """``{field: (self_value, other_value)}`` for fields that differ (ignoring ``ignore``)."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b.get(k)}

    def summary(self, file=None) -> str:
        """Print (and return) the config, grouped, with the model's parameter count."""
        try:
            params = f"{self.count_parameters():,}"
        except Exception as err:  # noqa: BLE001 - a summary must not fail
            params = f"unknown ({err})"
        lines = [f"TrainConfig (preset {self.preset!r})"]
        for f in fields(self):
            lines.append(f"  {f.name:<22} {getattr(self, f.name)!r}")
        lines.append(f"  {'UNet parameters':<22} {params}")
        text = "\n".join(lines)
        print(text, file=file)
        return text


PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests and CI: 8x8 digits, a ~42k-parameter UNet, a few dozen steps.
    "tiny": dict(dataset="mnist-sample", image_size=8, base_channels=8, channel_mults=(1, 2),
                 num_res_blocks=1, attention_resolutions=(), timesteps=100, batch_size=16,
                 lr=1e-3, warmup_steps=5, steps=30, ema_decay=0.9, log_every=5,
                 sample_every=0, checkpoint_every=10, n_samples=16, sample_steps=10,
                 run_dir="runs/tiny"),
    # The CLI default: mnist-sample on a CPU (timings: the Benchmarks page). A ~0.7M-parameter
    # UNet (16/32/64 channels, attention at 7x7), a quarter of the 32/64/128 one's parameters;
    # 2,500 steps at batch 64 are ~35 passes over the 4,500 digits.
    "quick": dict(dataset="mnist-sample", base_channels=16, channel_mults=(1, 2, 4),
                  num_res_blocks=1, attention_resolutions=(7,), timesteps=1000, batch_size=64,
                  lr=1e-3, warmup_steps=100, steps=2500, ema_decay=0.995,
                  log_every=50, sample_every=500, checkpoint_every=500, n_samples=64, sample_steps=20,
                  run_dir="runs/quick"),
    # MNIST on one GPU: ~6M parameters, attention at 7x7.
    "full": dict(dataset="mnist", base_channels=64, channel_mults=(1, 2, 2),
                 num_res_blocks=2, attention_resolutions=(7,), dropout=0.1, timesteps=1000,
                 batch_size=128, lr=2e-4, warmup_steps=1000, steps=30000, ema_decay=0.9999,
                 log_every=100, sample_every=5000, checkpoint_every=5000, n_samples=64,
                 sample_steps=100, num_workers=2, run_dir="runs/full"),
    # DDPM CIFAR-10 (Ho et al. 2020, appendix B): 35.7M parameters, 800k steps there.
    "cifar10": dict(dataset="cifar10", base_channels=128, channel_mults=(1, 2, 2, 2),
                    num_res_blocks=2, attention_resolutions=(16,), dropout=0.1, groups=32,
                    num_heads=1, timesteps=1000, batch_size=128, lr=2e-4, warmup_steps=5000,
                    steps=800_000, grad_clip=1.0,
                    ema_decay=0.9999, log_every=100, sample_every=10000,
                    checkpoint_every=10000, n_samples=64, sample_steps=100, num_workers=4,
                    run_dir="runs/cifar10"),
}


def get_config(preset: str = "quick", validate: bool = True, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a preset name with field ``overrides``.

    >>> get_config("quick", steps=500).steps
    500
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}{closest(preset, PRESETS)}; "
                          f"choose one of: {', '.join(PRESETS)}.")
    values = {"preset": preset, **PRESETS[preset]}
    names = {f.name for f in fields(TrainConfig)}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"unknown config field {key!r}{closest(key, names)}.")
        if value is not None:
            values[key] = value
    config = TrainConfig(**values)
    return config.validate() if validate else config
