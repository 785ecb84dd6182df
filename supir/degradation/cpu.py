"""The numpy + OpenCV operations of the degradation (`apply`: one uint8 image at a time, the shard stage).

`orders.degrade` walks the recipe; this module only says how each step is done on a float32 BGR
HxWx3 array in [0, 1] (OpenCV's JPEG codec expects BGR, so converting once at each end is cheaper
than at every JPEG). Where it departs from the reference code it is on purpose:
- blur with the kernel at its true size (7..21), not zero-padded to 21x21 (same sums, fewer
  multiplications), isotropic Gaussians as two 1-D passes, large non-separable kernels by FFT;
- Poisson noise by CDF-table inversion (`noise.py`), its "number of distinct levels" from a 256-bin
  histogram instead of np.unique;
- noise is drawn in float32 from the recipe's own generator; gray noise is per image;
- JPEG is real libjpeg (OpenCV) at an integer quality.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.fft

from schemas.errors import InputImageError
from supir.degradation import kernels, orders
from supir.degradation import noise as noise_fields
from supir.degradation.recipe import Noise, Recipe

INTERPOLATION = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
BORDER = cv2.BORDER_REFLECT_101  # = torch's "reflect" padding used by the reference's filter2D


# ------------------------------------------------------------------------------- input checks
def as_rgb_uint8(gt: np.ndarray) -> np.ndarray:
    """Validate a GT image: HxWx3 (or HxW / HxWx1 gray, promoted to 3 channels) uint8."""
    if not isinstance(gt, np.ndarray):
        raise InputImageError(f"the GT must be a numpy array, got {type(gt).__name__}")
    if gt.dtype != np.uint8:
        raise InputImageError(f"the GT must be uint8 (8-bit), got {gt.dtype}; convert it first")
    if gt.ndim == 3 and gt.shape[2] == 1:
        gt = gt[:, :, 0]
    if gt.ndim == 2:
        gt = np.repeat(gt[:, :, None], 3, axis=2)
    if gt.ndim != 3 or gt.shape[2] != 3:
        raise InputImageError(
            f"the GT must be HxWx3 RGB or HxW gray, got shape {gt.shape}"
            + ("; drop or composite the alpha channel first" if gt.ndim == 3 and gt.shape[2] == 4 else "")
        )
    return gt


# --------------------------------------------------------------------------------- the steps
def usm_sharpen(img: np.ndarray, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> np.ndarray:
    """Unsharp masking as Real-ESRGAN's ``gt_usm``: sharpen where |I - blur(I)| > threshold/255,
    blended through a blurred mask so the sharpened regions have soft edges. float32 in [0, 1]."""
    radius += radius % 2 == 0
    residual = img - cv2.GaussianBlur(img, (radius, radius), 0, borderType=BORDER)
    mask = (np.abs(residual) * 255 > threshold).astype(np.float32)
    soft = cv2.GaussianBlur(mask, (radius, radius), 0, borderType=BORDER)
    residual *= np.float32(weight)
    residual += img
    sharp = np.clip(residual, 0, 1, out=residual)
    sharp -= img  # I + soft (sharp - I), in place
    sharp *= soft
    sharp += img
    return sharp


def usm_sharpen_uint8(gt: np.ndarray, weight: float = 0.5, radius: int = 50, threshold: float = 10.0) -> np.ndarray:
    """`usm_sharpen` on a uint8 RGB image (e.g. to store the sharpened GT next to its LQ)."""
    x = usm_sharpen(gt.astype(np.float32) * np.float32(1 / 255), weight, radius, threshold)
    return to_uint8(x)


# Above this size a non-separable kernel is cheaper through the FFT (OpenCV's own DFT path is slower).
FFT_MIN_KERNEL = 13


def blur(img: np.ndarray, spec: kernels.KernelSpec) -> np.ndarray:
    if spec.separable:
        g = kernels.gaussian_1d(spec.size, spec.sigma_x).astype(np.float32)
        return cv2.sepFilter2D(img, -1, g, g, borderType=BORDER)
    kernel = kernels.build(spec).astype(np.float32)
    if spec.size >= FFT_MIN_KERNEL and min(img.shape[:2]) > spec.size:
        return fft_filter2d(img, kernel)
    return cv2.filter2D(img, -1, kernel, borderType=BORDER)


def fft_filter2d(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D(img, -1, kernel, BORDER_REFLECT_101) through a float32 real FFT (error ~1e-7)."""
    p = kernel.shape[0] // 2
    padded = cv2.copyMakeBorder(img, p, p, p, p, BORDER)
    shape = (scipy.fft.next_fast_len(padded.shape[0], True), scipy.fft.next_fast_len(padded.shape[1], True))
    spectrum = scipy.fft.rfft2(padded, s=shape, axes=(0, 1))
    # correlation = convolution with the flipped kernel; the full convolution is offset by 2p
    spectrum *= kernel_spectrum(kernel[::-1, ::-1], shape)[:, :, None]
    out = scipy.fft.irfft2(spectrum, s=shape, axes=(0, 1))
    h, w = img.shape[:2]
    return np.ascontiguousarray(out[2 * p : 2 * p + h, 2 * p : 2 * p + w])


def kernel_spectrum(kernel: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``scipy.fft.rfft2(kernel, s=shape)``, the same values, at ~60 % of its cost: the row transforms
    run on the kernel's own rows only (the zero rows of the padding transform to zeros), then the
    column transforms on the padded height."""
    rows = scipy.fft.rfft(kernel, n=shape[1], axis=1)
    return scipy.fft.fft(rows, n=shape[0], axis=0)


def resize(img: np.ndarray, h: int, w: int, mode: str) -> np.ndarray:
    return cv2.resize(img, (w, h), interpolation=INTERPOLATION[mode])


def add_noise(img: np.ndarray, noise: Noise) -> np.ndarray:
    """Gaussian or Poisson noise, then clip to [0, 1]."""
    rng = np.random.default_rng(noise.seed)
    h, w = img.shape[:2]
    if noise.kind == "gaussian":
        n = noise_fields.gaussian_noise((h, w, 1) if noise.gray else (h, w, 3), noise.level, rng)
    else:
        base = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[:, :, None] if noise.gray else img
        n = noise_fields.poisson_noise(base, noise.level, rng)
    out = np.add(n, img, out=n) if n.shape == img.shape else n + img  # gray: one field, 3 channels
    return np.clip(out, 0, 1, out=out)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Round [0, 1] float32 to uint8 (saturating, round half to even like the reference's round())."""
    return cv2.convertScaleAbs(np.clip(img, 0, 1), alpha=255.0)


def quantise(img: np.ndarray) -> np.ndarray:
    """The LQ onto the 8-bit grid as uint8 (a later resize back to the GT size stays in uint8)."""
    return img if img.dtype == np.uint8 else to_uint8(img)


def encode_jpeg(bgr: np.ndarray, quality: int) -> np.ndarray:
    """libjpeg (via OpenCV) baseline JPEG bytes of a uint8 BGR image, 4:2:0 chroma."""
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV only fails here on an empty image
        raise InputImageError("JPEG encoding failed")
    return buf


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Real libjpeg round trip of a float32 BGR image in [0, 1] at an integer quality."""
    out = cv2.imdecode(encode_jpeg(to_uint8(img), quality), cv2.IMREAD_COLOR).astype(np.float32)
    out *= np.float32(1 / 255)
    return out


OPS = orders.Ops(
    size=lambda img: img.shape[:2], usm_sharpen=usm_sharpen, blur=blur, resize=resize, add_noise=add_noise,
    jpeg=jpeg, quantise=quantise,
)


def apply(recipe: Recipe, gt: np.ndarray) -> np.ndarray:
    """Degrade one uint8 RGB GT by ``recipe``: the LQ as uint8 RGB, at GT/scale (or GT size when
    ``recipe.lq_size == "gt"``). Deterministic: the same (recipe, gt) gives the same bytes."""
    gt = as_rgb_uint8(gt)
    orders.check_gt_size(recipe, *gt.shape[:2])
    img = cv2.cvtColor(gt, cv2.COLOR_RGB2BGR).astype(np.float32)
    img *= np.float32(1 / 255)
    return cv2.cvtColor(orders.degrade(OPS, recipe, img), cv2.COLOR_BGR2RGB)
