"""Exact and near-duplicate detection.

Exact duplicates share an ``image_id`` (SHA-256 of the bytes). Near duplicates share a 64-bit DCT
perceptual hash within a Hamming distance. The pair search is multi-index hashing (Norouzi et al.,
"Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012): the 64 bits are cut into ``m``
substrings; two codes within distance ``d`` agree within ``d // m`` bits on at least one substring
(pigeonhole), so probing each substring's neighbours in a sorted index finds every pair without an
O(n²) scan. The substring width follows log2(n), so buckets stay small at 20M images.
"""

from itertools import combinations

import cv2
import numpy as np


def phash(rgb: np.ndarray) -> int:
    """64-bit perceptual hash: top-left 8×8 DCT coefficients of a 32×32 luma, thresholded at the median."""
    return phash_luma(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def phash_luma(gray: np.ndarray) -> int:
    """:func:`phash` of an 8-bit luma image (ingest passes the luma its quality signals use)."""
    while min(gray.shape) >= 128:  # Gaussian pyramid first: a fractional area resize of the full
        gray = cv2.pyrDown(gray)  # analysis image costs ~10x more (same hash up to a bit or two)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low)
    return int(np.packbits(bits).view(">u8")[0])


def _substrings(n: int, max_distance: int) -> list[tuple[int, int]]:
    """(shift, width) of each substring: width ≈ log2(n), at least 8 and at most 22 bits."""
    width = int(np.clip(np.ceil(np.log2(max(n, 2))), 8, 26))
    m = max(64 // width, 3)  # at least 3 substrings so none is wider than 22 bits
    m = min(m, max(max_distance + 1, 3))  # more than d+1 substrings only adds work
    bounds = np.linspace(0, 64, m + 1).astype(int)
    return [(int(lo), int(hi - lo)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _flip_masks(width: int, radius: int) -> np.ndarray:
    masks = [0]
    for r in range(1, radius + 1):
        for bits in combinations(range(width), r):
            masks.append(sum(1 << b for b in bits))
    return np.array(masks, dtype=np.uint64)


class _BucketTable:
    """One substring's index: entries sorted by their substring key, a dense start/count per key.

    There are at least 3 substrings, so none is wider than 22 bits: at most 4M buckets, O(1) probes.
    ``owners`` says which code each entry stands for (default: entry i is code i).
    """

    def __init__(self, shift: int, width: int, keys: np.ndarray, owners: np.ndarray | None = None):
        self.shift, self.width = shift, width
        order = np.argsort(keys, kind="stable")
        order = order if owners is None else owners[order]
        self.order = order.astype(np.int64 if len(keys) >= 1 << 31 else np.int32)
        self.counts = np.bincount(keys.astype(np.int64), minlength=1 << width)
        self.starts = np.cumsum(self.counts) - self.counts

    @classmethod
    def of_codes(cls, codes: np.ndarray, shift: int, width: int) -> "_BucketTable":
        return cls(shift, width, substring_keys(codes, shift, width))

    def keys(self, codes: np.ndarray) -> np.ndarray:
        return substring_keys(codes, self.shift, self.width)


def substring_keys(codes: np.ndarray, shift: int, width: int) -> np.ndarray:
    """The ``width`` bits of each 64-bit code from bit ``shift`` up: the key of its bucket."""
    return (codes >> np.uint64(shift)) & np.uint64((1 << width) - 1)


def _probe(table: _BucketTable, codes: np.ndarray, queries: np.ndarray, max_distance: int, radius: int,
           upper: bool, chunk: int) -> list[np.ndarray]:
    """(query index, code index) pairs within ``max_distance`` that share ``table``'s substring up to
    ``radius`` flipped bits; with ``upper`` only pairs with query index < code index (a self join)."""
    found = []
    query_keys = table.keys(queries)
    for flip in _flip_masks(table.width, radius):
        for start in range(0, len(queries), chunk):
            probe = (query_keys[start:start + chunk] ^ flip).astype(np.int64)
            counts = table.counts[probe]
            hit = np.flatnonzero(counts)  # only these probes find entries (few, for a small table)
            if not len(hit):
                continue
            query, probe, counts = hit + start, probe[hit], counts[hit]
            q = np.repeat(query, counts)
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            cand = table.order[np.repeat(table.starts[probe], counts) + offsets].astype(np.int64)
            if upper:
                keep = q < cand
                q, cand = q[keep], cand[keep]
            close = np.bitwise_count(queries[q] ^ codes[cand]) <= max_distance
            if close.any():
                found.append(np.stack([q[close], cand[close]], axis=1))
    return found


def near_duplicate_pairs(codes: np.ndarray, max_distance: int, chunk: int = 1 << 20) -> np.ndarray:
    """All index pairs (i < j) with popcount(codes[i] ^ codes[j]) ≤ max_distance, as an (k, 2) array."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    n = len(codes)
    if n < 2:
        return np.empty((0, 2), dtype=np.int64)
    found = []
    subs = _substrings(n, max_distance)
    radius = max_distance // len(subs)
    for shift, width in subs:  # one substring's table at a time: the memory of one index
        found += _probe(_BucketTable.of_codes(codes, shift, width), codes, codes, max_distance, radius, True, chunk)
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(found), axis=0)


_DIRECT_QUERIES = 8


def within_distance(codes: np.ndarray, queries: np.ndarray, max_distance: int, chunk: int = 1 << 20) -> np.ndarray:
    """Mask over ``codes``: within ``max_distance`` of at least one of ``queries``.

    The same multi-index hashing as :func:`near_duplicate_pairs`, turned around for a few queries
    against many codes (a top-up's new hashes against the whole catalog): the bit flips go on the
    query side, so the only tables are over the queries' flipped substrings, and the codes stream
    through them in chunks. Memory grows with the queries, not with the catalog.
    """
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    queries = np.unique(np.asarray(queries, dtype=np.uint64))
    mask = np.zeros(len(codes), dtype=bool)
    if not len(queries) or not len(codes) or max_distance < 0:
        return mask
    if len(queries) <= _DIRECT_QUERIES:  # a BFS's last steps: one popcount per code and query is cheaper
        for start in range(0, len(codes), chunk):
            block = codes[start:start + chunk]
            mask[start:start + chunk] = np.logical_or.reduce(
                [np.bitwise_count(block ^ q) <= max_distance for q in queries])
        return mask
    subs = _substrings(len(codes), max_distance)  # as the full pass would index these codes
    radius = max_distance // len(subs)
    for shift, width in subs:
        flips = _flip_masks(width, radius)
        keys = (substring_keys(queries, shift, width)[:, None] ^ flips[None, :]).ravel()
        table = _BucketTable(shift, width, keys, np.repeat(np.arange(len(queries)), len(flips)))
        present = table.counts > 0  # 1 byte a bucket: the lookup every code pays stays in cache
        for start in range(0, len(codes), chunk):
            block = codes[start:start + chunk]
            hit = np.flatnonzero(present[table.keys(block).astype(np.intp)])
            if len(hit):
                for pairs in _probe(table, queries, block[hit], max_distance, 0, False, chunk):
                    mask[start + hit[pairs[:, 0]]] = True
    return mask


def resolve_near_duplicates(codes: np.ndarray, max_distance: int) -> np.ndarray:
    """Greedy near-duplicate resolution over codes given in rank order (index 0 = best copy).

    A copy is kept unless it lies within ``max_distance`` of a better copy that was kept; it then
    points at the best such copy. Returns an (k, 2) array of (duplicate index, kept index). Depends
    only on the codes and their ranking, never on how the work was split.
    """
    pairs = near_duplicate_pairs(codes, max_distance) if max_distance >= 0 else np.empty((0, 2), np.int64)
    if not len(pairs):
        return np.empty((0, 2), dtype=np.int64)
    neighbours: dict[int, list[int]] = {}
    for i, j in pairs.tolist():  # i < j: i is the better-ranked copy
        neighbours.setdefault(j, []).append(i)
    dropped: list[tuple[int, int]] = []
    rejected: set[int] = set()
    for j in sorted(neighbours):
        kept_better = [i for i in neighbours[j] if i not in rejected]
        if kept_better:
            dropped.append((j, min(kept_better)))
            rejected.add(j)
    return np.array(dropped, dtype=np.int64).reshape(-1, 2)
