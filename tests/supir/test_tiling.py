"""Tiled UNet denoising: one window is the untiled denoiser; overlapping windows blend without seams."""

import pytest
import torch

from supir.sampler import SamplerConfig, restoration_guided_sample
from supir.tiling import blend_weights, sliding_windows, tiled_denoiser


def local_denoiser(x, sigma, control_scale, window=None):
    """A position-dependent stand-in: a 3×3 blur (neighbours matter, so windows change the result)."""
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    return blurred / (1 + float(sigma) ** 2) ** 0.5, blurred * 0.5


def test_windows_cover_the_latent_and_end_flush():
    windows = sliding_windows(20, 13, tile=8, stride=4)
    covered = torch.zeros(20, 13)
    for top, bottom, left, right in windows:
        assert bottom - top == 8 and right - left == 8
        covered[top:bottom, left:right] = 1
    assert covered.all() and (12, 20, 5, 13) in windows
    assert sliding_windows(6, 6, tile=16, stride=8) == [(0, 6, 0, 6)]  # clipped to the latent


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_a_window_covering_the_latent_equals_untiled_sampling(blend):
    z = torch.randn(1, 4, 12, 10, generator=torch.Generator().manual_seed(0))
    config = SamplerConfig(steps=5, cfg_scale=2.0, tau_r=4.0, s_churn=2.0)
    whole = lambda x, s, c: local_denoiser(x, s, c)  # noqa: E731
    tiled = tiled_denoiser(local_denoiser, tile=16, stride=8, blend=blend)
    a = restoration_guided_sample(whole, z, config, generator=torch.Generator().manual_seed(1))
    b = restoration_guided_sample(tiled, z, config, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_overlaps_are_blended_smoothly(blend):
    """Each window answers its own constant: a hard seam would jump by 1; the blend ramps across the overlap."""
    windows = sliding_windows(8, 96, tile=32, stride=16)  # 5 windows along the width

    def constant_per_window(x, sigma, cs, window):
        return torch.full_like(x, float(windows.index(window))), None

    pos, _ = tiled_denoiser(constant_per_window, tile=32, stride=16, blend=blend)(
        torch.zeros(1, 4, 8, 96), torch.tensor(1.0), 1.0
    )
    row = pos[0, 0, 4]
    steps = row[1:] - row[:-1]
    assert row[0] == 0 and row[-1] == len(windows) - 1  # edges belong to one window only
    assert (steps >= -1e-6).all() and steps.max() < 0.125  # monotone, no jump of a whole tile value
    assert torch.equal(pos[0, 0], pos[0, 1])  # deterministic and the same in every channel
    # Deterministic: the same call twice gives the same bits.
    again, _ = tiled_denoiser(constant_per_window, 32, 16, blend)(
        torch.zeros(1, 4, 8, 96), torch.tensor(1.0), 1.0
    )
    assert torch.equal(pos, again)


def test_blend_weights_peak_in_the_centre_and_never_vanish():
    for kind in ("gaussian", "linear"):
        w = blend_weights(16, 16, kind)
        assert w.min() > 0 and w[7:9, 7:9].min() == w.max()
    with pytest.raises(ValueError, match="unknown blend"):
        blend_weights(4, 4, "box")
