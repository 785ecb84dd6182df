"""Cheap quality signals on the analysis image, and the thresholds that turn them into a verdict.

`cheap_signals` runs once per image inside ingest on the reduced-size decode of
:func:`pipelines.ingest.decode.decode` (short side 512..1023 px, reduced by ``scale`` ∈ {1, 2, 4, 8}), so
it is a handful of whole-image OpenCV operations in float32 — no Python loops over pixels.

What each signal measures, and how it is made comparable across image sizes. The analysis image is
never reduced more than 2x (decode.MAX_ANALYSIS_SCALE), so its finest octave is the full-size image's
second octave at most: a blur or a 4x down-up applied at full size still empties it at 4096 px.

- ``sharpness``: the weaker of two fine-octave detail ratios, each "finest octave over the octave
  below" on the analysis luma and its exact 2x2 mean: (a) RMS of the Laplacian, (b) the 99.9th
  percentile of the Sobel gradient magnitude, times ``EDGE_TO_RMS`` so both share one threshold.
  Natural photos are close to scale-invariant (power spectrum ~ 1/f²), so a sharp photo scores about
  the same at every size and contrast, while blur and upscaling empty the finest octave first.
  (a) alone is fooled by the noise floor of a strongly blurred, smooth image (8-bit rounding and
  JPEG noise fill its finest octave); (b) reads only the strongest edges, where that noise is
  negligible, but saturates for mild blur (a sharp step and a 2 px wide edge differ by < 2x).
- ``noise_sigma``: Gaussian noise σ on 0..255 luma at FULL resolution, in the flattest part of the
  image: Immerkær's kernel (a difference of two Laplacians, blind to planes and ramps), its mean
  absolute response per 16x16 block (Immerkær's estimator, per block), and the 5th percentile of the
  blocks — a global median reads fine texture (grass, gravel) as noise. Multiplied by ``scale``
  because reducing by ``scale`` averages ``scale²`` pixels and divides white noise σ by ``scale``.
- ``jpeg_quality``: IJG quality 1..100 recovered from the quantisation tables (None when not JPEG).
- ``blockiness``: mean absolute luma step on the 8×8 JPEG block grid over the mean off the grid (1 =
  no blocking). The grid period on the analysis image is ``8 / scale``; the best phase is used so EXIF
  rotation or cropping does not hide it. None when ``scale`` is 8 (a block is one pixel then).
- ``colorfulness``: Hasler & Süsstrunk (2003) M on 0..255 RGB (0 = grey).
- ``clipping``: fraction of luma pixels ≤ 2 or ≥ 253 (blown highlights, crushed shadows).
- ``edge_density``: fraction of pixels of the luma reduced 2× whose Sobel gradient magnitude exceeds
  ``EDGE_THRESHOLD`` (texture richness / content clarity).
- ``flat_fraction``: fraction of the 16x16 blocks of the noise measure whose noise is below
  ``FLAT_SIGMA`` on the analysis image: vector art, gradients and renders have large areas with no
  sensor noise or texture at all; photographs almost never do (docs/quality.md has the rates).
Images under 16 px get NULL detail signals (nothing to judge), only colour and clipping.
"""

import math

import cv2
import numpy as np

from pipelines.ingest.thresholds import (  # noqa: F401 - re-exported: the signals and their verdict
    JUDGE_ORDER,
    SIGNALS_VERSION,
    Bounds,
    QualityThresholds,
    judge,
    judge_iqa,
    load_thresholds,
    migrate_thresholds,
    quality_reason_sql,
    thresholds_from_dict,
    thresholds_to_dict,
)
from supir.degradation.jpeg import estimate_jpeg_quality

_MIN_DETAIL_SIDE = 16  # below this the detail signals (sharpness, noise, edges, blocks) are NULL
EDGE_THRESHOLD = 24.0  # Sobel magnitude (scaled so a luma step of height A gives A) counted as an edge
_MEAN_ABS_TO_SIGMA = math.sqrt(math.pi / 2) / 6.0  # Immerkær's kernel has L2 norm 6; E|N(0,1)| = sqrt(2/pi)
_NOISE_BLOCK = 16  # block side of the noise measure (analysis pixels)
_NOISE_QUANTILE = 0.05  # noise is read in the flattest 5 % of the blocks
_QUANTILE_BIAS = 0.87  # that quantile of the blocks of pure white noise, in units of its sigma (measured)
FLAT_SIGMA = 0.15  # a block with less noise than this (analysis luma) is flat: no sensor noise, no texture
EDGE_QUANTILE = 0.999  # the strongest edges: 0.1 % of the pixels
EDGE_TO_RMS = 0.68  # puts the edge ratio on the Laplacian ratio's scale (their thresholds: 0.66 and 0.45)
_SECOND_DIFF = np.array([1, -2, 1], dtype=np.float32)  # Immerkær's kernel is its outer product
_CLIPPED = np.array([1] * 3 + [0] * 250 + [1] * 3, dtype=np.uint8)  # luma <= 2 or >= 253
_OPPONENT = np.array([[1.0, -1.0, 0.0], [0.5, 0.5, -1.0]], dtype=np.float32)  # rg, yb from RGB
_OPPONENT_BGR = np.ascontiguousarray(_OPPONENT[:, ::-1])  # the same from BGR

def _phase_ratio(profile: np.ndarray, period: int) -> float:
    """Mean of the strongest grid phase over the mean of the other phases (1 = no grid)."""
    n = len(profile) // period * period
    per_phase = profile[:n].reshape(-1, period).mean(axis=0)
    k = int(np.argmax(per_phase))
    others = (per_phase.sum() - per_phase[k]) / (period - 1)
    return float(per_phase[k] / max(others, 1e-6))


def _quantile_u8(values: np.ndarray, q: float) -> float:
    """Quantile ``q`` of non-negative values (saturated to 0..255) from a histogram, interpolated in its bin.

    A 256-bin histogram costs a fraction of a sort on a megapixel.
    """
    hist = cv2.calcHist([cv2.convertScaleAbs(values)], [0], None, [256], [0, 256]).ravel()
    cum = np.cumsum(hist)
    rank = q * values.size
    k = int(np.searchsorted(cum, rank))
    if k >= len(hist):
        return 255.0
    below = cum[k - 1] if k else 0.0
    # Bin k holds the integer k, i.e. the interval [k - 0.5, k + 0.5) of the underlying continuous value.
    return float(max(0.0, k - 0.5 + (rank - below) / max(hist[k], 1.0)))


def _gradient(luma: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude, scaled so an ideal step of height A gives A / 2 (its peak per pixel)."""
    gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    return cv2.magnitude(gx, gy)


def _block_noise(luma8: np.ndarray) -> np.ndarray:
    """Immerkær noise σ (analysis luma) of every 16x16 block: his mean |response| per block."""
    response = cv2.sepFilter2D(luma8, cv2.CV_16S, _SECOND_DIFF, _SECOND_DIFF)
    h, w = response.shape
    hb, wb = h // _NOISE_BLOCK, w // _NOISE_BLOCK
    crop = np.abs(response[: hb * _NOISE_BLOCK, : wb * _NOISE_BLOCK].astype(np.float32))
    # An integer-factor area resize is the block mean (OpenCV's fast path); float, or it rounds.
    means = cv2.resize(crop, (wb, hb), interpolation=cv2.INTER_AREA)
    return means.ravel() * _MEAN_ABS_TO_SIGMA


def analysis_luma(image: np.ndarray, order: str = "RGB") -> np.ndarray:
    """8-bit luma (BT.601, OpenCV's weights) of an RGB or BGR analysis image."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY if order == "RGB" else cv2.COLOR_BGR2GRAY)


def cheap_signals(
    image: np.ndarray, scale: int, qtables: dict | None, order: str = "RGB", luma8: np.ndarray | None = None
) -> dict[str, float | None]:
    """The eight cheap quality signals of one analysis image (HxWx3 uint8, reduced by ``scale``).

    ``order`` is the channel order ("RGB", or "BGR" as OpenCV decodes: no swap needed); ``luma8`` may
    pass the luma already computed (:func:`analysis_luma`).
    """
    if luma8 is None:
        luma8 = analysis_luma(image, order)
    h, w = luma8.shape
    colour = _colour_and_clipping(image, luma8, order)
    jpeg_quality = estimate_jpeg_quality(qtables) if qtables else None
    if min(h, w) < _MIN_DETAIL_SIDE:  # (ingest's --min-side allows it) too few pixels for detail measures
        return {"sharpness": None, "noise_sigma": None, "jpeg_quality": jpeg_quality, "blockiness": None,
                "edge_density": None, "flat_fraction": None, **colour}

    # sharpness: finest octave over the octave below, on the analysis luma and its exact 2x2 mean (an
    # area resize by a non-integer factor, 851 -> 425 px, takes a general path that costs 10x more).
    even = luma8[: h // 2 * 2, : w // 2 * 2]
    half = cv2.resize(even.astype(np.float32), (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    fine = cv2.norm(cv2.Laplacian(luma8, cv2.CV_16S), cv2.NORM_L2) / math.sqrt(h * w)
    coarse = cv2.norm(cv2.Laplacian(half, cv2.CV_32F), cv2.NORM_L2) / math.sqrt(half.size)
    rms_ratio = fine / coarse if coarse > 1e-6 else 0.0
    edges_fine = _quantile_u8(_gradient(luma8), EDGE_QUANTILE)
    half_gradient = _gradient(half)
    edges_coarse = _quantile_u8(half_gradient, EDGE_QUANTILE)
    edge_ratio = edges_fine / max(edges_coarse, 1.0)  # below 1 level/px there is no edge to read
    sharpness = float(min(rms_ratio, EDGE_TO_RMS * edge_ratio))

    # noise, in the flattest blocks; back to full-resolution sigma. flat_fraction from the same blocks.
    blocks = _block_noise(luma8)
    noise_sigma = float(np.partition(blocks, int(_NOISE_QUANTILE * (blocks.size - 1)))[
        int(_NOISE_QUANTILE * (blocks.size - 1))]) * scale / _QUANTILE_BIAS
    flat_fraction = float(np.count_nonzero(blocks < FLAT_SIGMA)) / blocks.size

    # edges: Sobel magnitude above a fixed contrast, on the half-scale luma: structure rather than
    # pixel noise, at a quarter of the cost. (_gradient gives A / 2 for a step of A: compare with half.)
    edge_density = float(np.count_nonzero(half_gradient > EDGE_THRESHOLD / 2)) / half.size

    # blockiness on the (8 / scale)-pixel grid that the JPEG blocks occupy in the analysis image.
    period = 8 // scale if scale <= 4 else 1
    blockiness = None
    if period >= 2 and w > 4 * period and h > 4 * period:
        dx = cv2.reduce(cv2.absdiff(luma8[:, 1:], luma8[:, :-1]), 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F)
        dy = cv2.reduce(cv2.absdiff(luma8[1:, :], luma8[:-1, :]), 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F)
        blockiness = 0.5 * (_phase_ratio(dx.ravel(), period) + _phase_ratio(dy.ravel(), period))

    return {
        "sharpness": sharpness,
        "noise_sigma": float(noise_sigma),
        "jpeg_quality": jpeg_quality,
        "blockiness": blockiness,
        "edge_density": edge_density,
        "flat_fraction": flat_fraction,
        **colour,
    }


def _colour_and_clipping(image: np.ndarray, luma8: np.ndarray, order: str = "RGB") -> dict[str, float]:
    h, w = luma8.shape
    # colourfulness (Hasler & Süsstrunk 2003) on every 4th pixel: image statistics, not detail.
    sample = cv2.resize(image, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_NEAREST)
    opponent = cv2.transform(sample.astype(np.float32), _OPPONENT if order == "RGB" else _OPPONENT_BGR)
    mean, std = (v.ravel() for v in cv2.meanStdDev(opponent))
    colorfulness = math.hypot(std[0], std[1]) + 0.3 * math.hypot(mean[0], mean[1])
    clipping = cv2.countNonZero(cv2.LUT(luma8, _CLIPPED)) / luma8.size
    return {"colorfulness": float(colorfulness), "clipping": float(clipping)}
