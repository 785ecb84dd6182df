"""The high-order degradation process, walked once for every backend (Real-ESRGAN §3.2, Fig. 2).

Real-ESRGAN degrades a GT y by applying the classical model D = [(y ⊛ k)↓r + n]_JPEG twice
(x = D₂(D₁(y)), Eq. 2) and ends with a sinc filter (§3.3) placed before or after the last JPEG.
`degrade` is that order of steps, read from a sampled `Recipe`; the pixel operations come from an
`Ops` — numpy/OpenCV in `cpu.py` (real libjpeg, the shard stage) and torch in `torch_backend.py`
(batched, the trainer). So a change to the recipe's structure is made here, once, and both
backends follow; a backend only decides how to blur, resize, add noise and JPEG-compress.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schemas.errors import InputImageError
from supir.degradation.kernels import KernelSpec
from supir.degradation.recipe import Final, Noise, Order, Recipe

Image = Any  # a backend's image type: float32 HxWx3 BGR array (cpu), 1x3xHxW RGB tensor (torch)


@dataclass(frozen=True)
class Ops:
    """The pixel operations of one backend. Images are float in [0, 1] between steps."""

    size: Callable[[Image], tuple[int, int]]  # (height, width)
    usm_sharpen: Callable[[Image, float, int, float], Image]  # (img, weight, radius, threshold)
    blur: Callable[[Image, KernelSpec], Image]  # correlation, reflect-101 border; never a delta
    resize: Callable[[Image, int, int, str], Image]  # (img, h, w, mode); mode: area|bilinear|bicubic
    add_noise: Callable[[Image, Noise], Image]  # noise drawn from noise.seed, then clip to [0, 1]
    jpeg: Callable[[Image, int], Image]  # baseline JPEG round trip at an integer quality
    # onto the 8-bit grid, clamp(round(255 x), 0, 255) / 255 (cpu: as uint8, which its resize keeps)
    quantise: Callable[[Image], Image]


def blur(ops: Ops, img: Image, spec: KernelSpec | None) -> Image:
    """Skipped blurs (None) and the final step's 21x21 pulse (delta) leave the image as it is."""
    if spec is None or spec.kind == "delta":
        return img
    return ops.blur(img, spec)


def resize(ops: Ops, img: Image, h: int, w: int, mode: str) -> Image:
    return img if ops.size(img) == (h, w) else ops.resize(img, h, w, mode)


def first_order(ops: Ops, img: Image, order: Order) -> Image:
    """Blur, resize relative to the input size, noise, JPEG (each as sampled)."""
    img = blur(ops, img, order.kernel)
    h, w = ops.size(img)
    r = order.resize
    img = resize(ops, img, max(1, int(h * r.scale)), max(1, int(w * r.scale)), r.mode)
    img = ops.add_noise(img, order.noise)
    if order.jpeg_quality is not None:
        img = ops.jpeg(img, order.jpeg_quality)
    return img


def second_order(ops: Ops, img: Image, order: Order, h_lq: float, w_lq: float) -> Image:
    """Blur, resize relative to the (fractional) LQ size GT/scale as the reference (int(H / scale * s)),
    noise. Its JPEG belongs to the final step."""
    img = blur(ops, img, order.kernel)
    r = order.resize
    img = resize(ops, img, max(1, int(h_lq * r.scale)), max(1, int(w_lq * r.scale)), r.mode)
    return ops.add_noise(img, order.noise)


def final_step(ops: Ops, img: Image, final: Final, h_lq: int, w_lq: int) -> Image:
    """[resize to GT/scale + sinc] then JPEG, or JPEG then [resize + sinc]. Sinc, JPEG, resize would
    twist lines (Real-ESRGAN's note), so it is never drawn."""

    def resize_and_sinc(x):
        return blur(ops, resize(ops, x, h_lq, w_lq, final.resize_mode), final.sinc)

    if final.sinc_first:
        return ops.jpeg(resize_and_sinc(img), final.jpeg_quality)
    return resize_and_sinc(ops.jpeg(img, final.jpeg_quality))


def degrade(ops: Ops, recipe: Recipe, gt: Image) -> Image:
    """The LQ of one GT (float in [0, 1]) on the 8-bit grid: at GT/scale, or back at the GT size
    when ``recipe.lq_size == "gt"`` (SUPIR trains on same-size pairs)."""
    h, w = ops.size(gt)
    h_lq, w_lq = max(1, h // recipe.scale), max(1, w // recipe.scale)
    img = gt
    if recipe.gt_usm:
        img = ops.usm_sharpen(img, recipe.usm_weight, recipe.usm_radius, recipe.usm_threshold)
    img = first_order(ops, img, recipe.first)
    if recipe.second is not None:
        img = second_order(ops, img, recipe.second, h / recipe.scale, w / recipe.scale)
        img = final_step(ops, img, recipe.final, h_lq, w_lq)
    else:  # a single order (DiffBIR): straight to the LQ size
        img = resize(ops, img, h_lq, w_lq, recipe.resize_back_mode)
    img = ops.quantise(img)
    if recipe.lq_size == "gt":
        img = ops.quantise(resize(ops, img, h, w, recipe.resize_back_mode))
    return img


def check_gt_size(recipe: Recipe, h: int, w: int) -> None:
    """Refuse GTs the recipe cannot degrade meaningfully (smaller than the scale or ``min_gt_side``) or
    that would exhaust memory (over ``max_gt_pixels``), before any work."""
    min_side = max(recipe.min_gt_side, recipe.scale)
    if min(h, w) < min_side:
        raise InputImageError(f"the GT is {w}x{h}, smaller than the minimum side {min_side} px")
    if h * w > recipe.max_gt_pixels:
        raise InputImageError(
            f"the GT is {w}x{h} = {h * w} px, over max_gt_pixels={recipe.max_gt_pixels}; crop it first "
            "(training degrades 512x512 crops) or raise max_gt_pixels"
        )


def lq_shape(recipe: Recipe, h: int, w: int) -> tuple[int, int]:
    """(height, width) of the LQ that `degrade` returns for an h x w GT."""
    if recipe.lq_size == "gt":
        return h, w
    return max(1, h // recipe.scale), max(1, w // recipe.scale)
