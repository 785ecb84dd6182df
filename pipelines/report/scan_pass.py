"""The report's two reads of `scans`: one exact pass for counts and thumbnails, one sample for histograms.

At 20M rows every column read costs (DuckDB decodes ~20M values per column per pass), so the report
reads the big table as few times as possible:

1. :func:`full_pass`, exact, one ``GROUP BY source, verdict``: the counts by source and verdict, the
   range and the number of measured values of every signal, and per group the ``k`` paths with the
   smallest ``hash(path)`` (a top-k inside the hash aggregate; merged across sources in Python by the
   same hash, so a verdict's sample is the same as one ``min_by`` over the verdict's rows).
2. :func:`sampled_fine_counts`: the fine histogram bins of every signal split by verdict category, over
   the rows with ``hash(phash) % every = 0`` (``every`` keeps about ``SAMPLE_ROWS`` rows; 1, i.e. every
   row, for catalogs up to that size). A histogram is a shape: 250,000 values draw the same 40 bars
   as twenty million (~6,000 values a bar), while the counts the page prints (measured, rejected) come from the exact pass.
   The sample is deterministic (a hash of the stored perceptual hash, not a random draw), and its
   key is an integer (category * FINE_BINS + bin), which DuckDB aggregates far faster than the verdict
   string.
"""

import math
from dataclasses import dataclass, field

from schemas.tables import QUALITY_SIGNALS

SAMPLE_ROWS = 250_000  # rows the histograms are drawn from, at most about
FINE_BINS = 1000
PASSED, REJECTED_HERE, REJECTED_ELSEWHERE = "passed", "rejected by this signal", "rejected by another check"
_CATEGORY_CODES = (PASSED, REJECTED_ELSEWHERE, REJECTED_HERE)  # (verdict IS NOT NULL) + (verdict = this)


def finite(c: str) -> str:
    return f'"{c}" IS NOT NULL AND NOT isnan("{c}")'


@dataclass
class ScanPass:
    counts: list[dict]  # {source, verdict, n}
    ranges: dict[str, tuple[float, float]]  # signal -> (min, max) of its measured values
    measured: dict[str, int]  # signal -> rows with a measured value
    candidates: dict[str | None, list[str]] = field(default_factory=dict)  # verdict -> up to k paths, by hash

    @property
    def total(self) -> int:
        return sum(r["n"] for r in self.counts)


def full_pass(catalog, k: int) -> ScanPass:
    """Counts, signal ranges and ``k`` hash-ordered candidate paths per scan verdict, in one scan."""
    # NaN is "not measured" (DuckDB sorts it above every number); a CASE is cheaper than three FILTERs
    stats = "".join(f', min({m}) AS "lo_{c}", max({m}) AS "hi_{c}", count({m}) AS "n_{c}"'
                    for c, m in ((c, f'CASE WHEN NOT isnan("{c}") THEN "{c}" END') for c in QUALITY_SIGNALS))
    rows = catalog.query(f"SELECT source, verdict, count(*) AS n, min_by(path, hash(path), {int(k)}) AS paths"
                         f"{stats} FROM scan_verdicts GROUP BY source, verdict").to_pylist()
    ranges, measured = {}, {}
    for c in QUALITY_SIGNALS:
        los = [r[f"lo_{c}"] for r in rows if r[f"lo_{c}"] is not None]
        his = [r[f"hi_{c}"] for r in rows if r[f"hi_{c}"] is not None]
        measured[c] = sum(r[f"n_{c}"] for r in rows)
        if los:
            ranges[c] = (float(min(los)), float(max(his)))
    out = ScanPass([{"source": r["source"], "verdict": r["verdict"], "n": r["n"]} for r in rows], ranges, measured)
    paths = sorted({p for r in rows for p in r["paths"] or []})
    if paths:
        hashes = {r["p"]: r["h"] for r in catalog.query(
            "SELECT p, hash(p) AS h FROM (SELECT unnest($1) AS p)", [paths]).to_pylist()}
        by_verdict: dict[str | None, list[str]] = {}
        for r in rows:
            by_verdict.setdefault(r["verdict"], []).extend(r["paths"] or [])
        out.candidates = {v: sorted(ps, key=lambda p: (hashes[p], p))[:k] for v, ps in by_verdict.items()}
    return out


def sample_every(total: int) -> int:
    return max(1, math.ceil(total / SAMPLE_ROWS))


def sampled_fine_counts(catalog, ranges: dict[str, tuple[float, float]], every: int) -> dict[str, tuple]:
    """{signal: (lo, hi, {category: [count per fine bin]})} over the deterministic 1-in-``every`` sample."""
    if not ranges:
        return {}
    keys = []
    for c, (lo, hi) in ranges.items():
        width = (hi - lo) / FINE_BINS or 1.0
        category = f"((verdict IS NOT NULL)::INTEGER + (verdict IS NOT DISTINCT FROM 'low_quality:{c}')::INTEGER)"
        keys.append(f'CASE WHEN {finite(c)} THEN least(greatest(floor(("{c}"::DOUBLE - {lo!r}) / {width!r}), 0), '
                    f'{FINE_BINS - 1})::INTEGER + {FINE_BINS} * {category} END AS "k_{c}"')
    where = "" if every == 1 else f" WHERE hash(phash) % {int(every)} = 0"
    sets = ", ".join(f'("k_{c}")' for c in ranges)
    flags = "".join(f', grouping("k_{c}") AS "g_{c}"' for c in ranges)
    sql = (f"SELECT {', '.join(f'k_{c}' for c in ranges)}{flags}, count(*) AS n FROM (SELECT {', '.join(keys)} "
           f"FROM scan_verdicts{where}) GROUP BY GROUPING SETS ({sets})")
    out = {c: (lo, hi, {}) for c, (lo, hi) in ranges.items()}
    for r in catalog.query(sql).to_pylist():
        c = next(c for c in ranges if r[f"g_{c}"] == 0)
        key = r[f"k_{c}"]
        if key is not None:  # NULL: not measured
            out[c][2].setdefault(_CATEGORY_CODES[key // FINE_BINS], [0] * FINE_BINS)[key % FINE_BINS] += r["n"]
    return out
