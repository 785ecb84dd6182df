"""Colour fix: equals the released wavelet / AdaIN formulas (official outputs in the fixture)."""

from pathlib import Path

import torch

from supir.colorfix import adain_color_fix, wavelet_color_fix, wavelet_decomposition

FIXTURE = Path(__file__).parents[1] / "fixtures" / "supir_official_sampler" / "official_sampler.pt"


def test_wavelet_and_adain_equal_the_official_colour_fix():
    fx = torch.load(FIXTURE, weights_only=True)
    content, style = fx["colorfix_content"], fx["colorfix_style"]
    torch.testing.assert_close(wavelet_color_fix(content, style), fx["wavelet_out"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(adain_color_fix(content, style), fx["adain_out"], rtol=1e-5, atol=1e-5)


def test_wavelet_fix_keeps_details_and_takes_the_reference_colour():
    g = torch.Generator().manual_seed(0)
    detail = torch.rand(1, 3, 64, 64, generator=g) * 0.2
    sample = detail + torch.tensor([0.6, -0.4, 0.1]).view(1, 3, 1, 1)  # colour cast
    reference = detail.flip(-1) * 0 + torch.tensor([-0.1, 0.2, 0.0]).view(1, 3, 1, 1)
    fixed = wavelet_color_fix(sample, reference)
    torch.testing.assert_close(fixed.mean((2, 3)), reference.mean((2, 3)), atol=2e-2, rtol=0)
    high, low = wavelet_decomposition(sample)
    torch.testing.assert_close(high + low, sample, atol=1e-5, rtol=0)  # the bands add up to the image
    assert (fixed - fixed.mean((2, 3), keepdim=True)).std() > 0.5 * (detail - detail.mean()).std()
