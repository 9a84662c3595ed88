"""diffusion_tutorial: denoising diffusion models from first principles.

The public API that the book, the exercises and users import. Time indices are 0-based
tensor indices (index i is paper time t = i + 1); see :mod:`diffusion_tutorial.schedules`.
"""
from .utils import get_device, set_seed, quick_mode
from .schedules import (linear_beta_schedule, cosine_beta_schedule, cosine_alphas_cumprod,
                        make_betas, alphas_cumprod_from_betas, snr)
from .diffusion import GaussianDiffusion, extract, normal_kl
from .samplers import ddpm_sample, ddim_sample, ddim_timesteps, sample
from .unet import UNet, count_parameters
from .mlp import MLPDenoiser
from . import checks
from .config import TrainConfig, get_config, PRESETS, ConfigError
from .ema import EMA
from .checkpoint import save_checkpoint, load_checkpoint, CheckpointError
from .train import (train, load_run, sample_images, TrainResult, TrainingDiverged,
                    TrainingInterrupted)
from .data import (DATASETS, get_dataset, to_model_range, from_model_range, make_dataloader,
                   infinite_batches, DatasetUnavailableError, CorruptDataError)
from .toy import two_moons, GaussianMixture, count_modes, mode_counts
from .plotting import (image_grid, show_images, save_grid, plot_forward_strip, plot_trajectory,
                       plot_loss, plot_schedules, plot_points, animate_trajectory, animate_points)
from .vae import VAE, vae_loss, kl_divergence, train_vae
from .latent import LatentDiffusion, encode_dataset, latent_scale_factor, measure_speedup
from .train_memory import train_eps_model
from .score import (model_score, gaussian_score, langevin_sample, annealed_langevin_sample,
                    diffusion_noise_levels)
from .gan import train_gan, GANResult
from .classifier import MNISTClassifier, load_classifier
from .metrics import (evaluate_samples, frechet_distance, fid_from_features, confident_share,
                      class_entropy, real_vs_real_fid)
from .pretrained import load_pretrained, ChecksumError

__version__ = "0.1.0"
