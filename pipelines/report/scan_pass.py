"""The report's one read of `scans`: exact counts, thumbnail candidates and a histogram sample.

At 20M rows every column read costs (DuckDB decodes ~20M values per column per pass; a plain group-by
over the verdict is ~3 s of CPU here), so :func:`full_pass` reads the big table once, in one
``GROUP BY source, verdict``:

- the counts by source and verdict, and per signal its range and number of measured values (exact);
- per group the ``k`` paths with the smallest ``hash(path)`` (a top-k inside the hash aggregate; merged
  across sources in Python by the same hash, so a verdict's sample is the one a ``min_by`` over the
  verdict's rows picks);
- the signal values of a deterministic 1-in-``every`` sample (``hash(phash) % every = 0``; ``every``
  keeps about ``SAMPLE_ROWS`` rows, 1, i.e. every row, for catalogs up to that size), binned with numpy
  into the fine bins of each signal and verdict category. A histogram is a shape: 250,000 values
  draw the same 40 bars as twenty million (~6,000 values a bar), while the counts the page prints
  (measured, rejected) are the exact ones. A second scan just for the histograms cost ~3 s of CPU.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas.tables import QUALITY_SIGNALS

SAMPLE_ROWS = 250_000  # rows the histograms are drawn from, at most about
FINE_BINS = 1000
PASSED, REJECTED_HERE, REJECTED_ELSEWHERE = "passed", "rejected by this signal", "rejected by another check"
_CATEGORY_CODES = (PASSED, REJECTED_ELSEWHERE, REJECTED_HERE)  # (verdict IS NOT NULL) + (verdict = this)


@dataclass
class ScanPass:
    counts: list[dict]  # {source, verdict, n}
    ranges: dict[str, tuple[float, float]]  # signal -> (min, max) of its measured values
    measured: dict[str, int]  # signal -> rows with a measured value
    every: int = 1  # the histogram sample is 1 in `every` rows
    fine: dict[str, tuple] = field(default_factory=dict)  # signal -> (lo, hi, {category: fine bin counts})
    candidates: dict[str | None, list[str]] = field(default_factory=dict)  # verdict -> up to k paths, by hash


def sample_every(total: int) -> int:
    return max(1, math.ceil(total / SAMPLE_ROWS))


def full_pass(catalog, k: int) -> ScanPass:
    """Counts, signal ranges, the histogram sample and ``k`` candidate paths per scan verdict: one scan."""
    every = sample_every(catalog.scalar("SELECT count(*) FROM scans") or 0)  # footers only
    # NaN is "not measured" (DuckDB sorts it above every number); a CASE is cheaper than three FILTERs
    stats = "".join(f', min({m}) AS "lo_{c}", max({m}) AS "hi_{c}", count({m}) AS "n_{c}", '
                    f'list("{c}") FILTER (WHERE sampled) AS "s_{c}"'
                    for c, m in ((c, f'CASE WHEN NOT isnan("{c}") THEN "{c}" END') for c in QUALITY_SIGNALS))
    sampled = "true" if every == 1 else f"hash(phash) % {every} = 0"
    table = catalog.query(f"SELECT source, verdict, count(*) AS n, min_by(path, hash(path), {int(k)}) AS paths"
                          f"{stats} FROM (SELECT *, {sampled} AS sampled FROM scan_verdicts) GROUP BY source, verdict")
    rows = table.drop_columns([f"s_{c}" for c in QUALITY_SIGNALS]).to_pylist()
    ranges, measured = {}, {}
    for c in QUALITY_SIGNALS:
        los = [r[f"lo_{c}"] for r in rows if r[f"lo_{c}"] is not None]
        his = [r[f"hi_{c}"] for r in rows if r[f"hi_{c}"] is not None]
        measured[c] = sum(r[f"n_{c}"] for r in rows)
        if los:
            ranges[c] = (float(min(los)), float(max(his)))
    out = ScanPass([{"source": r["source"], "verdict": r["verdict"], "n": r["n"]} for r in rows], ranges, measured,
                   every=every, fine=_fine_bins(table, [r["verdict"] for r in rows], ranges))
    paths = sorted({p for r in rows for p in r["paths"] or []})
    if paths:
        hashes = {r["p"]: r["h"] for r in catalog.query(
            "SELECT p, hash(p) AS h FROM (SELECT unnest($1) AS p)", [paths]).to_pylist()}
        by_verdict: dict[str | None, list[str]] = {}
        for r in rows:
            by_verdict.setdefault(r["verdict"], []).extend(r["paths"] or [])
        out.candidates = {v: sorted(ps, key=lambda p: (hashes[p], p))[:k] for v, ps in by_verdict.items()}
    return out


def _fine_bins(table: pa.Table, verdicts: list, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple]:
    """{signal: (lo, hi, {category: [count per fine bin]})} of the sampled values (a bounded array).

    Bins as SQL would count them: ``floor((x - lo) / width)`` in double precision, clamped.
    """
    out = {}
    for c, (lo, hi) in ranges.items():
        column = table.column(f"s_{c}").combine_chunks()
        group = pc.list_parent_indices(column).to_numpy()
        x = pc.list_flatten(column).cast(pa.float64()).fill_null(float("nan")).to_numpy()
        code = np.array([0 if v is None else 2 if v == f"low_quality:{c}" else 1 for v in verdicts], dtype=np.int64)
        keep = np.isfinite(x)
        width = (hi - lo) / FINE_BINS or 1.0
        bins = np.clip(np.floor((x[keep] - lo) / width), 0, FINE_BINS - 1).astype(np.int64)
        counts = np.bincount(code[group[keep]] * FINE_BINS + bins, minlength=3 * FINE_BINS).reshape(3, FINE_BINS)
        out[c] = (lo, hi, {_CATEGORY_CODES[i]: counts[i].tolist() for i in range(3) if counts[i].any()})
    return out
