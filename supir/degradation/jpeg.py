"""The IJG (libjpeg) quantisation tables: JPEG spec (ITU T.81) Annex K, scaled by quality as libjpeg does.

One definition for every user of "JPEG quality": the torch backend quantises with these tables, the
tests read OpenCV's output back against them, and ingest's quality signal inverts them to estimate
the quality of a file. numpy only, so importing it costs nothing.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

# Annex K, tables K.1 (luminance) and K.2 (chrominance): the quality-50 tables, natural (row-major) order
LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.int64,
).reshape(8, 8)  # fmt: skip
CHROMA = np.array(
    [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
     24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32,
    dtype=np.int64,
).reshape(8, 8)  # fmt: skip

QUALITIES = np.arange(1, 101)  # the qualities libjpeg accepts (others are clamped into this range)


def quality_scaling(quality: np.ndarray | int) -> np.ndarray:
    """libjpeg's ``jpeg_quality_scaling``: the percentage the quality-50 tables are scaled by."""
    q = np.clip(np.asarray(quality, dtype=np.int64), 1, 100)
    return np.where(q < 50, 5000 // q, 200 - 2 * q)


def scaled(base: np.ndarray, quality: np.ndarray | int) -> np.ndarray:
    """libjpeg's ``jpeg_add_quant_table`` with ``force_baseline``: (base * scale + 50) // 100, clamped
    to [1, 255]. A scalar quality gives base's shape; an array of N qualities gives (N, *base.shape)."""
    factor = quality_scaling(quality)
    factor = factor.reshape(factor.shape + (1,) * base.ndim)
    return np.clip((base * factor + 50) // 100, 1, 255)


def quant_tables(quality: int) -> tuple[np.ndarray, np.ndarray]:
    """(luma, chroma) 8x8 int64 tables that libjpeg (and so OpenCV's ``imencode``) writes at ``quality``."""
    return scaled(LUMA, quality), scaled(CHROMA, quality)


# Every quality's tables, flattened: row q - 1 is quality q (what a quality estimator searches).
LUMA_BY_QUALITY = scaled(LUMA.reshape(64), QUALITIES)  # (100, 64)
CHROMA_BY_QUALITY = scaled(CHROMA.reshape(64), QUALITIES)  # (100, 64)


# Zigzag scan position -> natural index (older Pillow returned tables in zigzag order).
_ZIGZAG = np.array(
    [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
     14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39,
     46, 53, 60, 61, 54, 47, 55, 62, 63]
)  # fmt: skip


def estimate_jpeg_quality(qtables: dict) -> float:
    """IJG quality (1..100) whose scaled tables best match ``qtables`` (table id -> 64 values).

    Inverts libjpeg's scaling like ImageMagick's estimator, but by the least absolute deviation in log
    space over every quality, so non-IJG tables (cameras, Photoshop) still get the nearest IJG equivalent.
    Accepts natural or zigzag order (whichever fits better).
    """
    if not qtables:
        raise ValueError("no quantisation tables")
    # Files from one camera or encoder share their tables: the search runs once per distinct set.
    return _estimate(tuple(tuple(int(v) for v in np.asarray(qtables[i]).reshape(-1)[:64]) for i in sorted(qtables)))


@lru_cache(maxsize=256)
def _estimate(tables: tuple[tuple[int, ...], ...]) -> float:
    observed = [np.asarray(t, dtype=np.float64) for t in tables]
    references = [LUMA_BY_QUALITY] + [CHROMA_BY_QUALITY] * (len(observed) - 1)
    best_err, best_q = math.inf, 50.0
    for order in (None, _ZIGZAG):
        err = np.zeros(len(QUALITIES))
        for table, ref in zip(observed, references):
            natural = table if order is None else _reorder_zigzag(table)
            err += np.abs(np.log(ref) - np.log(np.maximum(natural, 1))[None, :]).sum(axis=1)
        q = int(np.argmin(err))
        if err[q] < best_err:
            best_err, best_q = float(err[q]), float(QUALITIES[q])
    return best_q


def _reorder_zigzag(table: np.ndarray) -> np.ndarray:
    natural = np.empty(64)
    natural[_ZIGZAG] = table
    return natural
