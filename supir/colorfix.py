"""Colour correction after decoding: keep the sample's details, take the low frequencies from a reference.

Diffusion samples drift in colour and tone; the released SUPIR pipeline therefore replaces the
sample's coarsest wavelet band with that of the reference (the E_dr-cleaned LQ, D(E_dr(x_LQ))).
The decomposition is an à-trous ("with holes") wavelet: five 3×3 binomial blurs with dilation
1, 2, 4, 8, 16 and replicate padding; high = Σ (level − blur(level)), low = the last blur. The method
comes from StableSR's colour fix (Wang et al. 2023), which SUPIR's release uses; AdaIN (per-channel
mean/std transfer, Huang & Belongie 2017) is the other option it offers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WAVELET_LEVELS = 5
_BINOMIAL_3X3 = ((0.0625, 0.125, 0.0625), (0.125, 0.25, 0.125), (0.0625, 0.125, 0.0625))


def wavelet_blur(image: torch.Tensor, dilation: int) -> torch.Tensor:
    """B×C×H×W binomial 3×3 blur with holes of `dilation`, replicate-padded (same size out)."""
    c = image.shape[1]
    kernel = torch.tensor(_BINOMIAL_3X3, dtype=image.dtype, device=image.device)[None, None].repeat(
        c, 1, 1, 1
    )
    padded = F.pad(image, (dilation,) * 4, mode="replicate")
    return F.conv2d(padded, kernel, groups=c, dilation=dilation)


def wavelet_decomposition(image: torch.Tensor, levels: int = WAVELET_LEVELS):
    """(high, low): the sum of the `levels` detail bands and the residual low-frequency band."""
    high = torch.zeros_like(image)
    for i in range(levels):
        low = wavelet_blur(image, 2**i)
        high = high + (image - low)
        image = low
    return high, low


def wavelet_color_fix(sample: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The sample's detail bands + the reference's low band (images of one size, any range)."""
    high, _ = wavelet_decomposition(sample)
    _, low = wavelet_decomposition(reference)
    return high + low


def adain_color_fix(sample: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-channel mean and standard deviation of the reference (unbiased variance + eps, as released)."""
    b, c = sample.shape[:2]

    def stats(t):
        flat = t.reshape(b, c, -1)
        return flat.mean(-1).reshape(b, c, 1, 1), (flat.var(-1) + eps).sqrt().reshape(b, c, 1, 1)

    (m_s, s_s), (m_r, s_r) = stats(sample), stats(reference)
    return (sample - m_s) / s_s * s_r + m_r


COLOR_FIXES = {"wavelet": wavelet_color_fix, "adain": adain_color_fix}
