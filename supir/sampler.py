"""The SDXL noise schedule in σ form, the ε-denoiser, and restoration-guided EDM sampling.

Training and sampling share one parametrisation (the one SDXL was trained with, as in sgm/SUPIR):
x = z + σ·ε with σ_t = sqrt((1 − ᾱ_t)/ᾱ_t) on SDXL's 1000-step scaled-linear schedule; the network
sees c_in·x = x/sqrt(σ²+1) at timestep t and predicts ε, so D(x; σ) = x − σ·ε̂ (c_skip = 1, c_out = −σ).

Algorithm 1 of the paper (restoration-guided sampling): an EDM Euler sampler with churn whose
prediction ẑ is pulled toward a target latent by k_t = (σ_t/σ_T)^τ_r, strongest at the start (low
frequencies) and vanishing at the end (details). The paper's target is z_LQ; the released code pulls
toward E(D(E_dr(x_LQ))) instead (`supir.restore_settings`).

One CFG convention in code, the paper's: z = z_pos + λ·(z_pos − z_neg), so λ = 0 is the positive
prediction alone. The released code (sgm's guiders) writes x_u + s·(x_c − x_u), the same line with
s = λ + 1: convert with `lambda_from_sgm_scale` / `sgm_scale_from_lambda`, never by hand. Its linear
CFG ramps s over σ̂ (the churned σ) from `cfg_scale_start` at σ_max to `cfg_scale` at σ → 0, as here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012  # SDXL's scaled-linear schedule
GUIDANCE_SIGMA_MIN = 0.05  # restoration guidance stops once the next σ is this small (reference code)


def sdxl_sigmas(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_start=BETA_START, beta_end=BETA_END):
    """σ_t for t = 0 … T−1 (ascending), float64."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


TRAIN_SIGMAS = sdxl_sigmas()
SIGMA_MAX = float(TRAIN_SIGMAS[-1])  # 14.6146 for SDXL


def sampling_sigmas(steps: int) -> torch.Tensor:
    """σ_T > … > σ_1 > 0 for `steps` steps: roughly evenly spaced training timesteps (incl. t = 999)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    idx = [int(v) for v in torch.linspace(NUM_TRAIN_TIMESTEPS - 1, 0, steps + 1, dtype=torch.float64)[:-1]]
    sigmas = TRAIN_SIGMAS[idx]
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigma_to_timestep(sigma: torch.Tensor) -> torch.Tensor:
    """The discrete training timestep whose σ is nearest (the network was only trained on those).

    Nearest in σ itself, as sgm's DiscreteDenoiser (`sigma_to_idx`): churned σ̂ off the grid map alike.
    """
    sigma = sigma.detach().to(torch.float64).reshape(-1, 1).cpu()
    return (sigma - TRAIN_SIGMAS.reshape(1, -1)).abs().argmin(dim=1)


def c_in(sigma: torch.Tensor) -> torch.Tensor:
    return 1.0 / (sigma**2 + 1.0) ** 0.5


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def eps_denoise(eps_model: Callable, x: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
    """D(x; σ) = x − σ_q·ε̂(c_in(σ_q)·x, t): the denoised estimate from an ε-prediction network.

    σ is first quantised to σ_q = σ_t of the nearest training timestep t (sgm's DiscreteDenoiser):
    the network only knows those noise levels, and c_in, c_out must agree with the t it is told.
    """
    t = sigma_to_timestep(sigma.expand(x.shape[0]))
    sigma_q = TRAIN_SIGMAS[t].to(x.device, torch.float32)
    eps = eps_model(x * append_dims(c_in(sigma_q), x.ndim), t.to(x.device), **cond).float()
    return x - append_dims(sigma_q, x.ndim) * eps


def restoration_weight(sigma: float, tau_r: float, sigma_max: float = SIGMA_MAX) -> float:
    """k_t = (σ_t/σ_T)^τ_r (Algorithm 1, line 5)."""
    return (sigma / sigma_max) ** tau_r


def lambda_from_sgm_scale(scale: float) -> float:
    """The released code's CFG scale s (x_u + s·(x_c − x_u)) as the paper's λ: λ = s − 1."""
    return scale - 1.0


def sgm_scale_from_lambda(lam: float) -> float:
    """The paper's λ as the released code's (and diffusers') guidance scale s = λ + 1."""
    return lam + 1.0


def cfg_combine(pos: torch.Tensor, neg: torch.Tensor | None, scale: float) -> torch.Tensor:
    """z_pos + λ·(z_pos − z_neg) (paper §3.2), λ = `scale`."""
    if neg is None or scale == 0:
        return pos
    return pos + scale * (pos - neg)


@dataclass
class SamplerConfig:
    """Defaults: the paper's T = 100, λ_cfg = 7.5, τ_r = 4 and plain EDM churn settings.

    CFG scales are the paper's λ (see the module docstring for the released code's s = λ + 1).
    """

    steps: int = 100
    cfg_scale: float = 7.5  # λ; with a ramp, λ at σ → 0
    cfg_scale_start: float | None = None  # set: λ linear in σ̂, this at σ_max, `cfg_scale` at 0
    tau_r: float | None = 4.0  # None disables restoration guidance
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = float("inf")
    s_noise: float = 1.0
    control_scale: float = 1.0
    control_scale_start: float | None = None  # set: control scale linear in σ, this at σ_T


def _linear_in_sigma(at_sigma_max: float, at_zero: float, sigma: float) -> float:
    return at_zero + (at_sigma_max - at_zero) * sigma / SIGMA_MAX


# denoiser(x, σ, control_scale) -> (denoised with the positive prompt, with the negative or None)
Denoiser = Callable[[torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor | None]]


def restoration_guided_sample(
    denoiser: Denoiser,
    z_target: torch.Tensor,
    config: SamplerConfig,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Algorithm 1: sample a latent of z_target's shape, guided toward z_target (the paper's z_LQ).

    Deterministic given the generator: the start noise is drawn first, then each step's churn noise.
    """
    sigmas = sampling_sigmas(config.steps).tolist()
    sigma_max = sigmas[0]
    if noise is None:
        noise = torch.randn(z_target.shape, generator=generator, dtype=torch.float32).to(z_target.device)
    x = noise * math.sqrt(1.0 + sigma_max**2)  # x_T = z + σ_T·ε with z of unit variance
    gamma_max = min(config.s_churn / config.steps, 2**0.5 - 1)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        x = restoration_guided_step(denoiser, x, sigma, sigma_next, z_target, config, gamma_max, generator)
    return x


def restoration_guided_step(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    z_target: torch.Tensor,
    config: SamplerConfig,
    gamma_max: float = 0.0,
    generator: torch.Generator | None = None,
    churn_noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One Euler step from σ_t to σ_{t−1} with churn, CFG and restoration guidance."""
    gamma = gamma_max if config.s_tmin <= sigma <= config.s_tmax else 0.0
    sigma_hat = sigma * (1.0 + gamma)
    if gamma > 0:  # EDM churn: add noise to climb from σ_t to σ̂_t
        if churn_noise is None:
            churn_noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device)
        x = x + churn_noise * config.s_noise * math.sqrt(sigma_hat**2 - sigma**2)
    control_scale = config.control_scale
    if config.control_scale_start is not None:
        control_scale = _linear_in_sigma(config.control_scale_start, config.control_scale, sigma)
    cfg_scale = config.cfg_scale
    if config.cfg_scale_start is not None:  # the released LinearCFG ramps over σ̂, control over σ
        cfg_scale = _linear_in_sigma(config.cfg_scale_start, config.cfg_scale, sigma_hat)
    pos, neg = denoiser(x, torch.tensor(sigma_hat), control_scale)
    denoised = cfg_combine(pos, neg, cfg_scale)
    if config.tau_r is not None and sigma_next > GUIDANCE_SIGMA_MIN:
        k = restoration_weight(sigma, config.tau_r)
        denoised = denoised + k * (z_target - denoised)  # ẑ + k_t (z_LQ − ẑ)
    d = (x - denoised) / sigma_hat
    return x + d * (sigma_next - sigma_hat)
