"""Restoration-guided EDM sampling (Algorithm 1), CFG, and the σ parametrisation."""

import math

import pytest
import torch

from supir.model import SupirUNet
from supir.restore import make_denoiser
from supir.sampler import (
    SIGMA_MAX,
    SamplerConfig,
    cfg_combine,
    restoration_guided_sample,
    restoration_weight,
    sampling_sigmas,
    sigma_to_timestep,
)
from supir.tiny_sdxl import build_tiny_sdxl_pipeline


def gaussian_denoiser(x, sigma, control_scale):
    """The exact denoiser for N(0.3, 1) data: lets the sampler be checked without a network."""
    s2 = float(sigma) ** 2
    return (x + 0.3 * s2) / (1 + s2), None


def plain_edm_euler(denoiser, noise, steps):
    """Karras et al.'s Euler sampler, written independently of supir.sampler."""
    sigmas = sampling_sigmas(steps).tolist()
    x = noise * math.sqrt(1 + sigmas[0] ** 2)
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        denoised, _ = denoiser(x, torch.tensor(s), 1.0)
        x = x + (x - denoised) / s * (s_next - s)
    return x


def test_schedule_is_sdxl_discrete():
    sigmas = sampling_sigmas(100)
    assert abs(SIGMA_MAX - 14.6146) < 1e-3 and sigmas[0] == SIGMA_MAX
    assert sigmas[-1] == 0 and len(sigmas) == 101 and (sigmas[:-1] > sigmas[1:]).all()
    assert sigma_to_timestep(sigmas[:1]).item() == 999
    # sgm's roughly evenly spaced steps: 999, 989, ..., 9 for T = 100.
    assert sigma_to_timestep(sigmas[-2:-1]).item() == 9


def test_without_guidance_it_is_plain_edm_euler():
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    z_lq = torch.full_like(noise, 5.0)  # would dominate the result if guidance leaked in
    config = SamplerConfig(steps=25, cfg_scale=0.0, tau_r=None)
    out = restoration_guided_sample(gaussian_denoiser, z_lq, config, noise=noise)
    torch.testing.assert_close(out, plain_edm_euler(gaussian_denoiser, noise, 25), rtol=1e-6, atol=1e-6)


def test_restoration_weight_follows_the_formula():
    assert restoration_weight(SIGMA_MAX, 4.0) == 1.0
    for sigma, tau in [(7.0, 4.0), (1.0, 0.5), (0.3, 6.0)]:
        assert restoration_weight(sigma, tau) == pytest.approx((sigma / 14.6146) ** tau, rel=1e-4)
    # One guided step: ẑ is pulled toward z_LQ by exactly k_t.
    z_lq = torch.full((1, 4, 2, 2), 2.0)
    x = torch.zeros_like(z_lq)
    sigma, sigma_next = sampling_sigmas(10)[3].item(), sampling_sigmas(10)[4].item()
    from supir.sampler import restoration_guided_step

    config = SamplerConfig(steps=10, cfg_scale=0.0, tau_r=4.0)
    out = restoration_guided_step(gaussian_denoiser, x, sigma, sigma_next, z_lq, config)
    d_hat, _ = gaussian_denoiser(x, torch.tensor(sigma), 1.0)
    guided = d_hat + restoration_weight(sigma, 4.0) * (z_lq - d_hat)
    torch.testing.assert_close(out, x + (x - guided) / sigma * (sigma_next - sigma))


def test_cfg_zero_is_the_positive_prediction():
    pos, neg = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    assert torch.equal(cfg_combine(pos, neg, 0.0), pos)
    torch.testing.assert_close(cfg_combine(pos, neg, 7.5), pos + 7.5 * (pos - neg))


@pytest.fixture(scope="module")
def tiny_denoiser():
    pipe = build_tiny_sdxl_pipeline(seed=0)
    model = SupirUNet.from_unet(pipe.unet, (1, 1))
    with torch.no_grad():  # a "trained" model: non-zero connectors so the control path matters
        for p in model.trainable_parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    from supir.conditioning import SDXLParts

    parts = SDXLParts(
        pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2, pipe.tokenizer, pipe.tokenizer_2
    )
    z_lq = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    return model, parts, z_lq


def test_cfg_zero_with_the_model_equals_positive_only(tiny_denoiser):
    model, parts, z_lq = tiny_denoiser
    noise = torch.randn(z_lq.shape, generator=torch.Generator().manual_seed(2))
    config = SamplerConfig(steps=4, cfg_scale=0.0, tau_r=4.0)
    with_neg = make_denoiser(model, parts, z_lq, ["a cat"], "blur, low quality")
    pos_only = make_denoiser(model, parts, z_lq, ["a cat"], None)
    a = restoration_guided_sample(with_neg, z_lq, config, noise=noise)
    b = restoration_guided_sample(pos_only, z_lq, config, noise=noise)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    c = restoration_guided_sample(with_neg, z_lq, SamplerConfig(steps=4, cfg_scale=7.5), noise=noise)
    assert (c - a).abs().max() > 1e-3


def test_larger_tau_r_moves_the_result_away_from_the_lq_latent(tiny_denoiser):
    model, parts, z_lq = tiny_denoiser
    denoiser = make_denoiser(model, parts, z_lq, ["a cat"], None)
    distances = []
    for tau_r in (0.5, 2.0, 4.0, 8.0, None):
        config = SamplerConfig(steps=6, cfg_scale=0.0, tau_r=tau_r)
        out = restoration_guided_sample(denoiser, z_lq, config, generator=torch.Generator().manual_seed(3))
        distances.append((out - z_lq).pow(2).mean().sqrt().item())
    print("RMS distance to z_LQ for tau_r 0.5/2/4/8/off:", [round(d, 4) for d in distances])
    assert distances == sorted(distances) and distances[0] < 0.5 * distances[-1]


def test_churn_is_seeded():
    z_lq = torch.zeros(1, 4, 4, 4)
    config = SamplerConfig(steps=10, cfg_scale=0.0, tau_r=4.0, s_churn=5.0)
    runs = [
        restoration_guided_sample(gaussian_denoiser, z_lq, config, generator=torch.Generator().manual_seed(s))
        for s in (0, 0, 1)
    ]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_linear_cfg_schedule_runs_from_the_start_lambda_at_sigma_max_to_cfg_scale():
    seen = []

    def recording(x, sigma, control_scale):
        seen.append(float(sigma))
        return x * 0.5, x * 0.25  # pos − neg = x/4: the CFG term is proportional to λ

    from supir.sampler import restoration_guided_step

    x = torch.ones(1, 4, 2, 2)
    config = SamplerConfig(steps=10, cfg_scale=1.0, cfg_scale_start=7.5, tau_r=None)
    sigmas = sampling_sigmas(10).tolist()
    for s, s_next, lam in [(sigmas[0], sigmas[1], 7.5), (sigmas[-2], sigmas[-1], None)]:
        out = restoration_guided_step(recording, x, s, s_next, torch.zeros_like(x), config)
        lam = lam if lam is not None else 1.0 + 6.5 * s / SIGMA_MAX
        denoised = 0.5 + lam * 0.25
        torch.testing.assert_close(out, x + (x - denoised) / s * (s_next - s))
