"""The paper's test protocol and its Table 1 degradations, deterministic per (seed, image).

SUPIR §4.1: "We resize the short side of the input image to 1024 and crop a 1024×1024 sub-image for
testing, and then resize it back to the original size after restoration." Table 1 then degrades the
1024² GT crop in five ways (following [45, 97]): SR ×4, SR ×8, blur σ=2 + SR ×4, SR ×4 + noise σ=40,
blur σ=2 + SR ×4 + noise σ=20 + JPEG q=50. Each is one order of the classical model
D = [(y ⊛ k)↓s + n]_JPEG, built here as a `supir.degradation` :class:`Recipe` (no second order, no
final sinc) and walked with the engine's own CPU operations (`supir.degradation.cpu`): isotropic
Gaussian blur (21×21), OpenCV bicubic downsampling (no anti-alias prefilter; the blur presets have
their own), Gaussian noise in 8-bit levels from the recipe's seed, real libjpeg at an integer quality.
The JPEG preset keeps its JPEG bytes, so its LQ file is the very JPEG (quantisation tables readable).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from schemas.errors import ConfigError
from schemas.runs import derive_seed

TEST_SIZE = 1024  # the paper's test crop side
BLUR_KERNEL_SIZE = 21  # Real-ESRGAN's largest kernel: a σ=2 Gaussian is cut at 5σ
DOWN_MODE = "bicubic"


@dataclass(frozen=True)
class Table1Degradation:
    """One row group of Table 1: (blur σ) → ↓scale → (+ noise σ) → (JPEG quality)."""

    name: str
    label: str  # Table 1's wording
    scale: int
    blur_sigma: float | None = None
    noise_sigma: float | None = None  # in 8-bit levels
    jpeg_quality: int | None = None


DEGRADATIONS: dict[str, Table1Degradation] = {
    d.name: d
    for d in (
        Table1Degradation("sr4", "Single: SR (×4)", 4),
        Table1Degradation("sr8", "Single: SR (×8)", 8),
        Table1Degradation("blur2_sr4", "Mixture: Blur (σ=2) + SR (×4)", 4, blur_sigma=2.0),
        Table1Degradation("sr4_noise40", "Mixture: SR (×4) + Noise (σ=40)", 4, noise_sigma=40.0),
        Table1Degradation("blur2_sr4_noise20_jpeg50", "Mixture: Blur (σ=2) + SR (×4) + Noise (σ=20) + JPEG (q=50)",
                          4, blur_sigma=2.0, noise_sigma=20.0, jpeg_quality=50),
    )
}  # fmt: skip
REAL = "real"  # real-image mode: the input is the LQ, nothing is synthesised


def parse_degradations(text: str) -> list[Table1Degradation]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown or not names:
        raise ConfigError(f"unknown degradation {', '.join(unknown) or '(none)'}; choose from {', '.join(DEGRADATIONS)}")
    return [DEGRADATIONS[n] for n in dict.fromkeys(names)]


def recipe(d: Table1Degradation, seed: int, image: str):
    """The degradation engine's record of ``d`` on one image; its noise seed is a function of
    (seed, image, degradation) only, so every method and every run sees the same LQ."""
    from supir.degradation import KernelSpec, Noise, Order, Recipe, Resize

    kernel = None
    if d.blur_sigma:
        kernel = KernelSpec("iso", BLUR_KERNEL_SIZE, d.blur_sigma, d.blur_sigma)
    noise = Noise("gaussian", float(d.noise_sigma or 0.0), False, derive_seed(seed, f"{image}:{d.name}"))
    first = Order(kernel=kernel, resize=Resize("down", 1.0 / d.scale, DOWN_MODE), noise=noise,
                  jpeg_quality=d.jpeg_quality)
    return Recipe(scale=d.scale, lq_size="scaled", resize_back_mode=DOWN_MODE, gt_usm=False, usm_weight=0.5,
                  usm_radius=50, usm_threshold=10.0, first=first, second=None, final=None)  # fmt: skip


def degrade(d: Table1Degradation, gt: np.ndarray, seed: int, image: str) -> tuple[np.ndarray, bytes | None]:
    """(LQ uint8 RGB at GT/scale, its JPEG bytes for a JPEG preset else None).

    The steps are `supir.degradation.orders.first_order`'s, with the engine's CPU ops; the JPEG is
    encoded once and its decode is the LQ, so the bytes and the pixels agree exactly (equal to
    ``supir.degradation.apply(recipe(...), gt)``, tested).
    """
    import cv2

    from supir.degradation import cpu, orders

    r = recipe(d, seed, image)
    gt = cpu.as_rgb_uint8(gt)
    orders.check_gt_size(r, *gt.shape[:2])
    img = cv2.cvtColor(gt, cv2.COLOR_RGB2BGR).astype(np.float32) * np.float32(1 / 255)
    img = orders.blur(cpu.OPS, img, r.first.kernel)
    h, w = img.shape[:2]
    img = orders.resize(cpu.OPS, img, max(1, int(h * r.first.resize.scale)), max(1, int(w * r.first.resize.scale)),
                        r.first.resize.mode)  # fmt: skip
    img = cpu.add_noise(img, r.first.noise)
    data = None
    if r.first.jpeg_quality is not None:
        data = cpu.encode_jpeg(cpu.to_uint8(img), r.first.jpeg_quality).tobytes()
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    else:
        bgr = cpu.to_uint8(img)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), data


def protocol_crop(image: Image.Image, size: int = TEST_SIZE) -> tuple[Image.Image, tuple[int, int]]:
    """(short side resized to ``size`` and centre-cropped to size², the crop's size in the original
    image's pixels) — the second is what a result is resized back to."""
    w, h = image.size
    factor = size / min(w, h)
    resized = image if factor == 1 else image.resize(
        (max(size, round(w * factor)), max(size, round(h * factor))), Image.Resampling.BICUBIC
    )
    rw, rh = resized.size
    left, top = (rw - size) // 2, (rh - size) // 2
    crop = resized.crop((left, top, left + size, top + size))
    back = max(1, round(size / factor))
    return crop, (back, back)

