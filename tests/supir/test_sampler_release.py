"""The sampler against the released SUPIR sampler (sgm's RestoreEDMSampler, LinearCFG, DiscreteDenoiser).

`tests/fixtures/supir_official_sampler/official_sampler.pt` holds outputs of the official code run on
a made-up ε-network (`stub_eps` below, written identically there): the network is a stand-in, the
sampler math (schedule, σ quantisation, churn, CFG ramp, restoration guidance, Euler step) is what is
compared. How the fixture was made: that folder's README.
"""

import dataclasses
from pathlib import Path

import pytest
import torch

from supir.restore_settings import SETTINGS
from supir.sampler import (
    SIGMA_MAX,
    SamplerConfig,
    cfg_combine,
    eps_denoise,
    lambda_from_sgm_scale,
    restoration_guided_sample,
    restoration_guided_step,
    sampling_sigmas,
    sgm_scale_from_lambda,
)

FIXTURE = Path(__file__).parents[1] / "fixtures" / "supir_official_sampler" / "official_sampler.pt"
BIAS = {"pos": 0.3, "neg": -0.2}  # the fixture's text branches: cond 0.3, uncond -0.2


@pytest.fixture(scope="module")
def official():
    return torch.load(FIXTURE, weights_only=True)


def stub_eps(x_in, t, bias, control_scale):
    t = t.to(x_in.dtype).view(-1, 1, 1, 1)
    return torch.tanh(0.8 * x_in + 0.002 * t + bias) * (0.9 + 0.1 * control_scale) + 0.05 * torch.roll(
        x_in, 1, -1
    )


def stub_denoiser(x, sigma, control_scale):
    pos = eps_denoise(lambda xi, t: stub_eps(xi, t, BIAS["pos"], control_scale), x, sigma)
    neg = eps_denoise(lambda xi, t: stub_eps(xi, t, BIAS["neg"], control_scale), x, sigma)
    return pos, neg


CASES = {
    "release": dataclasses.replace(SETTINGS["release"].sampler, steps=4),
    "release_guided": dataclasses.replace(SETTINGS["release"].sampler, steps=4, tau_r=4.0),
    "paper": dataclasses.replace(SETTINGS["paper"].sampler, steps=4),
}


def test_schedule_equals_sgm_legacy_ddpm_discretization(official):
    for n in (4, 50, 100):
        torch.testing.assert_close(sampling_sigmas(n).float(), official[f"sigmas_{n}"], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_step_with_fixed_noise_equals_the_official_sampler(official, case):
    config = dataclasses.replace(CASES[case], control_scale=0.8)
    sigmas = sampling_sigmas(4).tolist()
    gamma_max = min(config.s_churn / config.steps, 2**0.5 - 1)
    out = restoration_guided_step(
        stub_denoiser, official[f"{case}_step_x"], sigmas[1], sigmas[2], official["x_center"], config,
        gamma_max, churn_noise=official[f"{case}_step_eps"],
    )  # fmt: skip
    torch.testing.assert_close(out, official[f"{case}_step_out"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_four_step_trajectory_with_the_official_seed_equals_the_official_sampler(official, case):
    """Same seed, same draws (start noise, then one churn draw per step), same result.

    The tolerance is float32 rounding (sgm keeps σ in float32, we in float64) amplified by CFG: up to
    2e-4 after four steps at the paper's s = 8.5.
    """
    out = restoration_guided_sample(
        stub_denoiser, official["x_center"], CASES[case], generator=torch.Generator().manual_seed(1234)
    )
    torch.testing.assert_close(out, official[f"{case}_out"], rtol=1e-3, atol=5e-4)
    if case != "paper":  # the stub's draws matter: another seed gives another sample
        other = restoration_guided_sample(
            stub_denoiser, official["x_center"], CASES[case], generator=torch.Generator().manual_seed(1)
        )
        assert (other - official[f"{case}_out"]).abs().max() > 1e-2


def test_release_settings_are_test_py_defaults():
    s = SETTINGS["release"].sampler
    assert (s.steps, s.s_churn, s.s_noise, s.tau_r, s.control_scale) == (50, 5.0, 1.01, None, 1.0)
    # test.py: --s_cfg 4.0 with --linear_CFG from --spt_linear_CFG 1.0, in sgm's s = λ + 1.
    assert (sgm_scale_from_lambda(s.cfg_scale), sgm_scale_from_lambda(s.cfg_scale_start)) == (4.0, 1.0)
    g = SETTINGS["release-gradio"].sampler  # gradio "Quality": s 7.5 from 4.0, S_noise 1.003
    assert (sgm_scale_from_lambda(g.cfg_scale), sgm_scale_from_lambda(g.cfg_scale_start), g.s_noise) == (
        7.5,
        4.0,
        1.003,
    )
    assert lambda_from_sgm_scale(sgm_scale_from_lambda(7.5)) == 7.5


def test_release_cfg_and_ramp_equal_the_released_formula():
    """x_u + s(σ̂)·(x_c − x_u), s(σ̂) = (s_start − s_end)·σ̂/σ_max + s_end, s from 1 (σ_max) to 4 (σ → 0)."""
    config = dataclasses.replace(SETTINGS["release"].sampler, steps=10)
    x_c, x_u = torch.full((1, 4, 2, 2), 0.5), torch.full((1, 4, 2, 2), 0.25)
    x = torch.ones(1, 4, 2, 2)
    sigmas = sampling_sigmas(10).tolist()
    gamma = min(config.s_churn / config.steps, 2**0.5 - 1)
    assert gamma == pytest.approx(2**0.5 - 1)  # min(5/10, √2 − 1)
    for i in (0, 4, 9):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        sigma_hat = sigma * (1 + gamma)
        noise = torch.zeros_like(x)  # churn noise 0: the step is then deterministic
        out = restoration_guided_step(
            lambda *_: (x_c, x_u), x, sigma, sigma_next, x, config, gamma, churn_noise=noise
        )
        s = (1.0 - 4.0) * sigma_hat / SIGMA_MAX + 4.0
        denoised = x_u + s * (x_c - x_u)
        torch.testing.assert_close(out, x + (x - denoised) / sigma_hat * (sigma_next - sigma_hat))
    torch.testing.assert_close(cfg_combine(x_c, x_u, 3.0), x_u + 4.0 * (x_c - x_u))


def test_churn_noise_is_scaled_by_s_noise():
    config = SamplerConfig(steps=4, cfg_scale=0.0, tau_r=None, s_churn=5.0, s_noise=1.01)
    x, eps = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    sigma, sigma_next = sampling_sigmas(4).tolist()[1:3]
    gamma = 2**0.5 - 1  # min(5/4, √2 − 1)
    seen = []

    def record(x_in, sigma_hat, cs):
        seen.append(x_in.clone())
        return torch.zeros_like(x_in), None

    restoration_guided_step(record, x, sigma, sigma_next, x, config, gamma, churn_noise=eps)
    sigma_hat = sigma * (1 + gamma)
    torch.testing.assert_close(seen[0], eps * 1.01 * (sigma_hat**2 - sigma**2) ** 0.5)
