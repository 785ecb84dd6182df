"""Tiled denoising for latents larger than the GPU fits (the VAE tiles itself; this tiles the UNet).

The latent is covered by overlapping windows; the denoiser runs on each window with the matching
slice of its conditioning, and the predictions are blended with weights that fall off toward the
window edges, so no seam shows (MultiDiffusion, Bar-Tal et al. 2023; SUPIR's released
`TiledRestoreEDMSampler` does the same with a Gaussian window, 128×128 latents, stride 64; its
σ is a tenth of the side, which blends over a narrow band, so ours is a fifth).
Blending the denoised predictions D(x; σ) is the same as blending each window's Euler step: the step,
CFG and restoration guidance are all affine in D with weights that sum to one.
Windows and weights depend on sizes only: the result is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Window = tuple[int, int, int, int]  # (top, bottom, left, right) in latent cells


def sliding_windows(h: int, w: int, tile: int, stride: int) -> list[Window]:
    """Windows of `tile`² (clipped to the latent) every `stride`, plus one flush with the far edge."""
    if stride < 1 or tile < 1:
        raise ValueError(f"tile ({tile}) and stride ({stride}) must be ≥ 1")

    def starts(n: int, t: int) -> list[int]:
        t = min(t, n)
        out = list(range(0, n - t + 1, stride))
        if out[-1] != n - t:
            out.append(n - t)
        return out

    th, tw = min(tile, h), min(tile, w)
    return [(top, top + th, left, left + tw) for top in starts(h, tile) for left in starts(w, tile)]


def blend_weights(h: int, w: int, kind: str = "gaussian") -> torch.Tensor:
    """h×w window weights, largest at the centre: a Gaussian (σ = side / 5) or a linear tent."""

    def profile(n: int) -> torch.Tensor:
        pos = torch.arange(n, dtype=torch.float64)
        mid = (n - 1) / 2
        if kind == "gaussian":
            return torch.exp(-((pos - mid) ** 2) / (2 * (n / 5) ** 2))
        if kind == "linear":  # a tent, 1/n at the edges: at half-tile strides two tents sum to one
            return 1.0 - (pos - mid).abs() / (n / 2)
        raise ValueError(f"unknown blend {kind!r}: gaussian or linear")

    return torch.outer(profile(h), profile(w)).float()


# denoise_window(x_window, σ, control scale, window) -> (D with the prompts, D with the negative or None)
WindowDenoiser = Callable[
    [torch.Tensor, torch.Tensor, float, Window], tuple[torch.Tensor, torch.Tensor | None]
]


def tiled_denoiser(denoise_window: WindowDenoiser, tile: int, stride: int, blend: str = "gaussian"):
    """A sampler denoiser (x, σ, control scale) -> (pos, neg) that runs `denoise_window` per window."""

    def denoiser(x: torch.Tensor, sigma: torch.Tensor, control_scale: float):
        windows = sliding_windows(x.shape[-2], x.shape[-1], tile, stride)
        pos_sum, neg_sum = torch.zeros_like(x), None
        weight_sum = torch.zeros(x.shape[-2:], dtype=x.dtype, device=x.device)
        for win in windows:
            top, bottom, left, right = win
            weight = blend_weights(bottom - top, right - left, blend).to(x.device, x.dtype)
            pos, neg = denoise_window(x[..., top:bottom, left:right], sigma, control_scale, win)
            pos_sum[..., top:bottom, left:right] += pos * weight
            if neg is not None:
                neg_sum = torch.zeros_like(x) if neg_sum is None else neg_sum
                neg_sum[..., top:bottom, left:right] += neg * weight
            weight_sum[top:bottom, left:right] += weight
        return pos_sum / weight_sum, None if neg_sum is None else neg_sum / weight_sum

    return denoiser
