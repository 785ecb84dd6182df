"""`apply_batch_torch`: the torch operations of the degradation (CPU in tests, GPU in the trainer).

`orders.degrade` walks the recipe, as for the CPU backend; what the operations do differently and why:
- JPEG is a torch re-implementation of baseline libjpeg (4:2:0, the Annex K tables of `jpeg.py`
  scaled and clamped to [1, 255] as libjpeg does, float DCT, integer rounding of every stored value,
  triangle chroma up-sampling). libjpeg's fixed-point DCT and colour maths round differently, so outputs are close
  but not bit-equal to the CPU backend (PSNR measured in ``docs/degradation.md``).
- Noise comes from a torch generator seeded with the recipe's noise seed: same distribution as the
  CPU backend, different realisation. Gray noise is drawn per image (the reference drew one field
  for the whole batch).
- area/bilinear/bicubic resizes are ``F.interpolate`` (the reference's own GPU path); bilinear and
  bicubic equal OpenCV's, 'area' is adaptive pooling where OpenCV averages exact pixel areas.
- Blurs: on CPU through ``torch.fft`` (torch's depthwise convolutions are slow there), on GPU as
  (separable) convolutions; both equal cv2.filter2D with reflect-101 borders.
Samples are degraded one after another: after the first resize every sample has its own size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from schemas.errors import ConfigError, InputImageError
from supir.degradation import jpeg as jpeg_tables
from supir.degradation import kernels, orders
from supir.degradation.recipe import Noise, Recipe

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as cv2.COLOR_BGR2GRAY


def _dct_matrix(device) -> torch.Tensor:
    # orthonormal DCT-II: the JPEG FDCT F(u,v) = ¼C(u)C(v)ΣΣ f cos cos is D f Dᵀ with this D
    n = torch.arange(8, dtype=torch.float64)
    d = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=torch.float32)


def _blocks(plane: torch.Tensor) -> torch.Tensor:
    h, w = plane.shape
    return plane.view(h // 8, 8, w // 8, 8).permute(0, 2, 1, 3)


def _unblocks(blocks: torch.Tensor) -> torch.Tensor:
    bh, bw = blocks.shape[:2]
    return blocks.permute(0, 2, 1, 3).reshape(bh * 8, bw * 8)


def _code_plane(plane: torch.Tensor, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Level shift, 8x8 DCT, quantise (integer), de-quantise, inverse DCT: one JPEG component."""
    b = _blocks(plane - 128.0)
    coef = torch.round((d @ b @ d.T) / q) * q
    return _unblocks(d.T @ coef @ d) + 128.0


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG round trip of one 1x3xHxW RGB image in [0, 1] at an integer quality (4:2:0)."""
    _, _, h, w = x.shape
    u = torch.round(x.clamp(0, 1) * 255.0)
    # the encoder replicates the last row/column up to whole 16x16 MCUs
    u = F.pad(u, (0, (-w) % 16, 0, (-h) % 16), mode="replicate")[0]
    r, g, b = u[0], u[1], u[2]
    y = torch.round(0.299 * r + 0.587 * g + 0.114 * b)
    cb = torch.round(-0.168736 * r - 0.331264 * g + 0.5 * b + 128.0)
    cr = torch.round(0.5 * r - 0.418688 * g - 0.081312 * b + 128.0)
    chroma = torch.round(F.avg_pool2d(torch.stack([cb, cr])[None], 2))[0]
    d = _dct_matrix(x.device)
    ql, qc = (torch.as_tensor(t, dtype=torch.float32, device=x.device) for t in jpeg_tables.quant_tables(quality))
    y = _code_plane(y, ql, d).round().clamp(0, 255)
    # the 16x16 MCU padding makes the half-size chroma planes whole 8x8 blocks
    c = torch.stack([_code_plane(chroma[i], qc, d) for i in range(2)]).round().clamp(0, 255)
    # decoder "fancy" up-sampling = triangle filter = bilinear, half-pixel centres, edge clamp
    c = F.interpolate(c[None], scale_factor=2, mode="bilinear", align_corners=False)[0]
    cb, cr = c[0] - 128.0, c[1] - 128.0
    rgb = torch.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb])
    rgb = torch.round(rgb).clamp(0, 255)[:, :h, :w]
    return (rgb / 255.0)[None]


# ----------------------------------------------------------------------------------- steps
def _reflect_index(n: int, p: int, device) -> torch.Tensor:
    # reflect-101 indices for any pad (also pad >= n, where F.pad(mode="reflect") refuses)
    i = np.arange(-p, n + p)
    if n == 1:
        return torch.zeros(len(i), dtype=torch.long, device=device)
    period = 2 * (n - 1)
    i = np.abs(i) % period
    i = np.where(i >= n, period - i, i)
    return torch.as_tensor(i, device=device)


def reflect_pad(x: torch.Tensor, p: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if p < h and p < w:
        return F.pad(x, (p, p, p, p), mode="reflect")
    x = x.index_select(-2, _reflect_index(h, p, x.device))
    return x.index_select(-1, _reflect_index(w, p, x.device))


def filter2d(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """Correlate each channel of 1xCxHxW with a k x k kernel, reflect-101 border (= cv2.filter2D)."""
    c, k = x.shape[1], kernel.shape[0]
    weight = torch.as_tensor(kernel, dtype=x.dtype, device=x.device).expand(c, 1, k, k)
    return F.conv2d(reflect_pad(x, k // 2), weight, groups=c)


def sep_filter2d(x: torch.Tensor, g: np.ndarray) -> torch.Tensor:
    c, k = x.shape[1], len(g)
    gt = torch.as_tensor(g, dtype=x.dtype, device=x.device)
    x = reflect_pad(x, k // 2)
    x = F.conv2d(x, gt.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, gt.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: FFT sizes with a large prime factor are several times slower."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def fft_filter2d(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """`filter2d` through a real FFT (float32 error ~1e-6). On CPU torch's depthwise convolutions are
    slow (a 21x21 one costs ~7x the FFT), so the CPU path filters every kernel this way."""
    k = kernel.shape[0]
    p = k // 2
    padded = reflect_pad(x, p)
    size = (_fast_len(padded.shape[-2]), _fast_len(padded.shape[-1]))
    weight = torch.as_tensor(kernel[::-1, ::-1].copy(), dtype=x.dtype, device=x.device)
    spectrum = torch.fft.rfft2(padded, s=size) * torch.fft.rfft2(weight, s=size)
    out = torch.fft.irfft2(spectrum, s=size)
    # circular convolution of the zero-extended input: from index 2p on, nothing has wrapped around
    h, w = x.shape[-2:]
    return out[..., 2 * p : 2 * p + h, 2 * p : 2 * p + w]


def blur(x: torch.Tensor, spec: kernels.KernelSpec) -> torch.Tensor:
    if x.device.type == "cpu":
        return fft_filter2d(x, kernels.build(spec))
    if spec.separable:
        return sep_filter2d(x, kernels.gaussian_1d(spec.size, spec.sigma_x))
    return filter2d(x, kernels.build(spec))


def resize(x: torch.Tensor, h: int, w: int, mode: str) -> torch.Tensor:
    if mode == "area":
        return F.interpolate(x, size=(h, w), mode="area")
    return F.interpolate(x, size=(h, w), mode=mode, align_corners=False)


def usm_sharpen(x: torch.Tensor, weight: float, radius: int, threshold: float) -> torch.Tensor:
    radius += radius % 2 == 0
    sigma = 0.3 * ((radius - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for GaussianBlur(ksize, 0)
    ax = np.arange(radius) - radius // 2
    g = np.exp(-0.5 * (ax / sigma) ** 2)
    g /= g.sum()
    if x.device.type == "cpu":  # see fft_filter2d
        gauss = lambda y: fft_filter2d(y, np.outer(g, g))  # noqa: E731
    else:
        gauss = lambda y: sep_filter2d(y, g)  # noqa: E731
    residual = x - gauss(x)
    mask = (residual.abs() * 255 > threshold).to(x.dtype)
    soft = gauss(mask)
    sharp = (x + weight * residual).clamp(0, 1)
    return x + soft * (sharp - x)


def add_noise(x: torch.Tensor, noise: Noise) -> torch.Tensor:
    g = torch.Generator(device=x.device)
    g.manual_seed(noise.seed)
    _, _, h, w = x.shape
    if noise.kind == "gaussian":
        n = torch.randn((1, 1 if noise.gray else 3, h, w), generator=g, device=x.device, dtype=x.dtype)
        n = n * (noise.level / 255.0)
    else:
        base = x
        if noise.gray:
            wts = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            base = (x * wts).sum(1, keepdim=True)
        levels = torch.round(base * 255).clamp(0, 255)
        # 2^ceil(log2(#distinct 8-bit levels)) "photons" per unit, computed without a device sync
        distinct = (torch.bincount(levels.flatten().long(), minlength=256) > 0).sum().clamp(min=1)
        vals = torch.exp2(torch.ceil(torch.log2(distinct.to(x.dtype))))
        clean = levels / 255.0
        n = (torch.poisson(clean * vals, generator=g) / vals - clean) * noise.level
    return (x + n).clamp(0, 1)


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


OPS = orders.Ops(
    size=lambda x: tuple(x.shape[-2:]), usm_sharpen=usm_sharpen, blur=blur, resize=resize, add_noise=add_noise,
    jpeg=jpeg, quantise=_quantise,
)


@torch.no_grad()
def apply_batch_torch(recipes: list[Recipe], gt: torch.Tensor) -> torch.Tensor:
    """Degrade a batch: ``gt`` Bx3xHxW float in [0, 1] (RGB; Bx1xHxW gray is promoted), one recipe
    per sample. Returns the LQ batch, float in [0, 1] on the 8-bit grid, on ``gt``'s device."""
    if not isinstance(gt, torch.Tensor) or gt.ndim != 4 or gt.shape[1] not in (1, 3):
        shape = tuple(gt.shape) if isinstance(gt, torch.Tensor) else type(gt).__name__
        raise InputImageError(f"the GT batch must be a Bx3xHxW (or Bx1xHxW) tensor, got {shape}")
    if not gt.is_floating_point():
        raise InputImageError(f"the GT batch must be float in [0, 1], got {gt.dtype}")
    if len(recipes) != gt.shape[0]:
        raise ConfigError(f"{len(recipes)} recipes for a batch of {gt.shape[0]} images")
    if len({(r.scale, r.lq_size) for r in recipes}) > 1:
        raise ConfigError("every recipe of a batch must share scale and lq_size (one config per batch)")
    if gt.shape[1] == 1:
        gt = gt.expand(-1, 3, -1, -1)
    if recipes:
        orders.check_gt_size(recipes[0], *gt.shape[-2:])
    x = gt.float()
    return torch.cat([orders.degrade(OPS, recipe, x[i : i + 1]) for i, recipe in enumerate(recipes)])
