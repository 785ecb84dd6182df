"""Which copy of a near-duplicate group to keep: a full-reference comparison at a common scale.

Ranking copies by their own signals cannot be right: blur lowers the noise estimate, noise raises
every detail measure, and a stored sharpness is relative to each file's own size. Two copies of one
picture, however, can be compared pixel for pixel (the residual is what one copy has that the
other lacks), which is what full-reference IQA does (Wang et al., "Image quality assessment: from
error visibility to structural similarity", IEEE TIP 2004). The pairwise rule, in order:

1. a model metric (``ingest --metric``), when both copies were scored: the higher score wins;
2. different framing (a crop: aspect ratios differ by more than 1 %, or 32x32 thumbnails differ by
   more than 3 luma levels in median): the copy with more pixels wins;
3. both copies are area-resized to the smaller one's size. If they agree there (RMS residual < 1
   luma level) they are the same picture: more pixels, then the less compressed file, then the finer
   detail wins;
4. a file compressed much harder (IJG quality lower by 20 or more; lossless counts as 101) loses;
5. otherwise the copy with more fine texture (median block Laplacian RMS) is either the original of a smoothed copy
   (blur, denoise, JPEG, down-up: the residual is the lost detail, so its energy follows the edges
   of the smoother copy, and is ~0 where it is flat) or a noisy copy of the other (the residual is
   noise, as strong in flat blocks as in textured ones). That ratio decides, except that a uniform
   residual weaker than photographic grain (4 levels; ingest's noise threshold is about 5) is grain
   that a denoiser removed: the unprocessed copy is kept.

The group's ranking is a round robin of these comparisons (Copeland's method: most wins first;
pixels, lossless-ness and image_id break ties), so it is total and does not depend on input order.
"""

from dataclasses import dataclass

import cv2
import numpy as np

_SAME_PICTURE_RMS = 1.0  # luma levels: below this the two copies are one picture at the common size
_COMPRESSION_GAP = 20.0  # IJG quality points: a copy compressed this much harder loses outright
_GRAIN_SIGMA = 4.0  # luma levels: a uniform residual weaker than this is grain a denoiser removed
_FLAT_TO_TEXTURED = 0.5  # residual in flat over textured blocks below which the residual is lost detail
_THUMB = 32  # side of the thumbnails that tell a crop or a shift from a same-framed copy
_SAME_FRAMING_DIFF = 3.0  # median |difference| of the thumbnails (luma levels; robust to clipped noise)
_BLOCK = 16  # side of the blocks the local energies are averaged over (common-scale pixels)
_LOSSLESS = 101.0


@dataclass(frozen=True)
class Copy:
    """One member of a group: its identity, size, compression and (optional) model score."""

    image_id: str
    width: int
    height: int
    jpeg_quality: float | None = None  # None: not a JPEG (lossless for this purpose)
    score: float | None = None  # model metric, oriented so that higher is better

    @property
    def quality(self) -> float:
        return _LOSSLESS if self.jpeg_quality is None else float(self.jpeg_quality)


def _block_mean(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // _BLOCK * _BLOCK, x.shape[1] // _BLOCK * _BLOCK
    return cv2.resize(x[:h, :w], (w // _BLOCK, h // _BLOCK), interpolation=cv2.INTER_AREA).ravel()


def _gradient(luma: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    return cv2.magnitude(gx, gy)


def _residual_is_structure(residual: np.ndarray, content: np.ndarray) -> bool:
    """True when the residual is lost detail (small where the smoother copy is flat), not added noise.

    Added noise is as strong in the flattest fifth of the blocks as in the most textured fifth; what a
    blur, a denoiser, JPEG or a down-up removes is detail, so in flat blocks the residual is ~0.
    "Flat" is read on the two copies' mean, smoothed (σ 2 px) so pixel noise does not count as texture.
    """
    energy = np.sqrt(_block_mean(residual * residual))
    edges = _block_mean(_gradient(cv2.GaussianBlur(content, (0, 0), 2.0)))  # content, not pixel noise
    if energy.size < 10:
        return False
    order = np.argsort(edges, kind="stable")
    fifth = max(1, energy.size // 5)
    flat, textured = energy[order[:fifth]].mean(), energy[order[-fifth:]].mean()
    # a uniform residual weaker than grain is what a denoiser removes from a photo, not added noise
    return flat < _FLAT_TO_TEXTURED * textured or flat < _GRAIN_SIGMA


def _texture(luma: np.ndarray) -> float:
    """Median over blocks of the Laplacian RMS: fine texture, not the few strongest edges (which an
    edge-preserving denoiser keeps, or even steepens, while it flattens everything else)."""
    lap = cv2.Laplacian(luma, cv2.CV_32F)
    return float(np.median(np.sqrt(_block_mean(lap * lap))))


def _same_framing(a: Copy, b: Copy, luma_a: np.ndarray, luma_b: np.ndarray) -> bool:
    if abs(a.width / a.height - b.width / b.height) > 0.01 * (a.width / a.height):
        return False
    ta, tb = (cv2.resize(x.astype(np.float32), (_THUMB, _THUMB), interpolation=cv2.INTER_AREA) for x in (luma_a, luma_b))
    return float(np.median(np.abs(ta - tb))) <= _SAME_FRAMING_DIFF


def compare(a: Copy, b: Copy, luma_a: np.ndarray, luma_b: np.ndarray) -> int:
    """+1 if ``a`` is the better copy, -1 if ``b`` is, 0 if they cannot be told apart. Antisymmetric."""
    if a.score is not None and b.score is not None and a.score != b.score:
        return 1 if a.score > b.score else -1
    pixels_a, pixels_b = a.width * a.height, b.width * b.height
    if not _same_framing(a, b, luma_a, luma_b):
        return int(np.sign(pixels_a - pixels_b))
    size = min((luma_a.shape[1], luma_a.shape[0]), (luma_b.shape[1], luma_b.shape[0]))
    fa = cv2.resize(luma_a.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    fb = cv2.resize(luma_b.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    residual = fa - fb
    detail_a, detail_b = _texture(fa), _texture(fb)
    if float(np.sqrt(np.mean(residual * residual))) < _SAME_PICTURE_RMS:
        return (int(np.sign(pixels_a - pixels_b)) or int(np.sign(a.quality - b.quality))
                or int(np.sign(detail_a - detail_b)))
    if abs(a.quality - b.quality) >= _COMPRESSION_GAP:
        return 1 if a.quality > b.quality else -1
    if detail_a == detail_b:
        return 0
    a_is_finer = detail_a > detail_b
    lost_detail = _residual_is_structure(residual, 0.5 * (fa + fb))
    # the finer copy wins when the other lost detail; the smoother one wins when the finer added noise
    return 1 if a_is_finer == lost_detail else -1


def rank_group(copies: list[Copy], lumas: list[np.ndarray]) -> list[int]:
    """Indices of ``copies`` best first: Copeland's round robin of :func:`compare`."""
    n = len(copies)
    wins = np.zeros(n)
    for i in range(n):
        for j in range(i + 1, n):
            c = compare(copies[i], copies[j], lumas[i], lumas[j])
            wins[i] += c > 0
            wins[j] += c < 0
    key = [(-wins[i], -copies[i].width * copies[i].height, -copies[i].quality, copies[i].image_id) for i in range(n)]
    return sorted(range(n), key=key.__getitem__)
