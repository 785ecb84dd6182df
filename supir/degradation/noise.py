"""Noise fields of the CPU backend: Gaussian, and Poisson (shot) noise by table inversion.

The reference's Poisson noise quantises the image to 8-bit levels ℓ and draws Poisson(ℓ·vals/255)
per pixel, where ``vals`` (a power of two ≤ 256) depends only on how many distinct levels occur.
So the rate takes at most 256 values for a given ``vals``, and there are only 9 possible ``vals``:
we tabulate each level's CDF once per process and draw by inverting it (a uniform per pixel, a
guide table to jump near the answer, a few vectorised steps to finish). That is an exact Poisson
sampler, about twice as fast as numpy's per-element algorithm on these images.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special


def distinct_level_photons(levels: np.ndarray) -> int:
    """The reference's ``vals``: 2^ceil(log2(number of distinct 8-bit levels))."""
    distinct = int(np.count_nonzero(np.bincount(levels.ravel(), minlength=256)))
    return 2 ** math.ceil(math.log2(max(distinct, 1)))


@functools.lru_cache(maxsize=9)
def _poisson_tables(vals: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """For 32-bit uniform integers r: CDF thresholds T[ℓ·K + k] = round(2³² · P(Poisson(ℓ·vals/255) ≤ k))
    (so X = min{k : r < T[k]}), and a guide G[(ℓ << b) | (r >> (32 − b))] = ℓ·K + the smallest k
    that any r in that bucket can map to."""
    rate = np.arange(256) * (vals / 255.0)
    k_max = int(rate[-1] + 12 * math.sqrt(rate[-1]) + 24)  # the tail beyond holds < 1e-16 of the mass
    cdf = special.pdtr(np.arange(k_max)[None, :], rate[:, None])
    thresholds = np.rint(cdf * 2.0**32).astype(np.int64)
    thresholds[:, -1] = 1 << 32  # every r < 2³² stops here
    bits = int(math.ceil(math.log2(2 * k_max)))  # ~2 buckets per value: ~1 refinement step on average
    starts = np.arange(1 << bits, dtype=np.int64) << (32 - bits)
    guide = np.stack([np.searchsorted(row, starts, side="right") for row in thresholds]).astype(np.int32)
    guide += (np.arange(256, dtype=np.int32) * k_max)[:, None]
    return thresholds.ravel(), guide.ravel(), k_max, bits


def poisson_counts(levels: np.ndarray, vals: int, rng: np.random.Generator) -> np.ndarray:
    """Poisson(levels·vals/255) draws (float32, shape of ``levels``) by inverse-CDF sampling.

    Uniforms are 32-bit integers, so probabilities are resolved to 2⁻³², far below what the
    8-bit output can show."""
    thresholds, guide, k_max, bits = _poisson_tables(vals)
    lv = levels.ravel().astype(np.uint32)
    r = rng.integers(0, 1 << 32, size=lv.size, dtype=np.uint32)
    flat = guide[(lv << np.uint32(bits)) | (r >> np.uint32(32 - bits))]
    # the answer is the first k with r < T[k]; the guide entry is never past it, and one step
    # finishes almost every draw
    active = np.flatnonzero(thresholds[flat] <= r)
    flat[active] += 1
    active = active[thresholds[flat[active]] <= r[active]]
    if active.size:  # the few left (mostly the lowest bucket, which spans the lower tail): bisect
        lo, ra = flat[active], r[active]
        hi = (lo // np.int32(k_max) + 1) * np.int32(k_max) - 1  # the row's last entry, T = 2³²
        while True:
            open_ = hi - lo > 1
            if not open_.any():
                break
            mid = (lo + hi) // 2
            above = thresholds[mid] > ra
            hi = np.where(above, mid, hi)
            lo = np.where(above, lo, mid)
        flat[active] = hi
    flat -= lv.astype(np.int32) * np.int32(k_max)
    return flat.astype(np.float32).reshape(levels.shape)


def poisson_noise(img: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Shot noise as the reference: scale · (Poisson(ℓ·vals/255)/vals − ℓ/255), ℓ = round(255·img)."""
    levels = np.rint(img * 255).clip(0, 255).astype(np.uint8)
    vals = distinct_level_photons(levels)
    noise = poisson_counts(levels, vals, rng)
    noise *= np.float32(1 / vals)
    noise -= levels * np.float32(1 / 255)
    noise *= np.float32(scale)
    return noise


def gaussian_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """sigma/255 · N(0, 1) in float32 (the reference drew float64 and cast)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise *= np.float32(sigma / 255.0)
    return noise
