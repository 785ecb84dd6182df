"""The report's numbers, aggregated inside DuckDB so a 20M-row catalog never reaches Python.

Every function here returns a few thousand values at most. `scans` is read by :mod:`scan_pass` (one
exact pass, one sample); the small tables' histograms cost two passes: min and max per column, then one
``GROUPING SETS`` query that counts ``FINE_BINS`` bins per column and group. The page shows ``HIST_BINS`` bars between the 0.1 % and 99.9 % points (read off the fine bins) widened
to include the thresholds, so one outlier cannot squeeze everything into a single bar; values outside
land in the edge bars. Rebinning is by fine-bin centre, so a bar edge is exact to 1/1000 of the range.
"""

import json
import math
from dataclasses import dataclass

from catalogs.catalog import Catalog
from pipelines.ingest.thresholds import Bounds
from pipelines.report import scan_pass
from pipelines.report.scan_pass import FINE_BINS, PASSED, REJECTED_ELSEWHERE, REJECTED_HERE
from schemas.tables import QUALITY_SIGNALS

HIST_BINS = 40  # bars on the page
# Histogram categories, in stacking order: how the catalog judged the images in each bar.
CATEGORIES = (PASSED, REJECTED_HERE, REJECTED_ELSEWHERE)
__all__ = ["FINE_BINS", "REJECTED_ELSEWHERE"]  # re-exported: the tests and the page name them from here

_DECISION_COUNTS_SQL = "SELECT source, reason, count(*) AS n FROM decisions GROUP BY ALL"


# The accepted range of one signal as the catalog stores it: ingest's own type, so the page judges
# exactly as ingest does (None: that side is not checked).
Bound = Bounds


@dataclass(frozen=True)
class Histogram:
    name: str  # a signal of QUALITY_SIGNALS or "iqa_<metric>"
    lo: float
    hi: float
    counts: dict[str, list[int]]  # category -> count per bin
    bound: Bound
    unit: str = "images"  # what the bars count
    every: int = 1  # the bars count a deterministic 1-in-`every` sample of the rows (see scan_pass)
    measured: int | None = None  # exact number of measured values (None: the bars' total, every == 1)
    rejected: int | None = None  # exact number rejected by this signal (None: the bars' count)

    @property
    def total(self) -> int:
        return sum(sum(c) for c in self.counts.values())

    @property
    def bins(self) -> int:
        return len(next(iter(self.counts.values()), [0] * HIST_BINS))

    def edges(self) -> list[float]:
        width = (self.hi - self.lo) / self.bins
        return [self.lo + i * width for i in range(self.bins + 1)]


def stored_thresholds(catalog: Catalog) -> tuple[dict[str, Bound], dict[str, Bound]]:
    """(signal -> Bound, metric -> Bound): the thresholds the catalog's verdicts were judged with.

    Ingest stores them in the catalog settings (``quality_thresholds``) whenever it runs, so these are
    exactly the rules the `images` view applies; a catalog never ingested into has none.
    """
    stored = catalog.settings().get("quality_thresholds") or {}

    def bound(entry) -> Bound:
        entry = entry or {}
        return Bound(entry.get("min"), entry.get("max"))

    signals = {name: bound(stored.get(name)) for name in QUALITY_SIGNALS}
    iqa = {metric: bound(entry) for metric, entry in (stored.get("iqa") or {}).items()}
    return signals, iqa


def _finite(c: str) -> str:
    return f'"{c}" IS NOT NULL AND NOT isnan("{c}")'


def _min_max(catalog, relation: str, columns: list[str]) -> dict[str, tuple[float, float] | None]:
    exprs = ", ".join(f'min("{c}") FILTER (WHERE {_finite(c)}), max("{c}") FILTER (WHERE {_finite(c)})' for c in columns)
    row = catalog.query(f"SELECT {exprs} FROM {relation}").to_pylist()[0]
    values = list(row.values())
    return {c: None if values[2 * i] is None else (float(values[2 * i]), float(values[2 * i + 1]))
            for i, c in enumerate(columns)}


def _fine_bin(c: str, lo: float, hi: float) -> str:
    width = (hi - lo) / FINE_BINS or 1.0
    return (f'CASE WHEN {_finite(c)} THEN least(greatest(floor(("{c}"::DOUBLE - {lo!r}) / {width!r}), 0), '
            f'{FINE_BINS - 1})::INTEGER END AS "b_{c}"')


def fine_counts(catalog, relation: str, columns: list[str], group: str) -> dict:
    """Two scans: {column: (lo, hi, {group value: [count per fine bin]})}; ``group`` is an expression.

    For the small tables (model scores, caption lengths); `scans` goes through `scan_pass`.
    """
    ranges = {c: r for c, r in _min_max(catalog, relation, columns).items() if r}
    if not ranges:
        return {}
    bins = "".join(f", {_fine_bin(c, *r)}" for c, r in ranges.items())
    sets = ", ".join(f'(grp, "b_{c}")' for c in ranges)
    flags = "".join(f', grouping("b_{c}") AS "g_{c}"' for c in ranges)
    keys = "".join(f', "b_{c}"' for c in ranges)
    sql = (f"SELECT grp{keys}{flags}, count(*) AS n FROM (SELECT {group} AS grp{bins} FROM {relation}) "
           f"GROUP BY GROUPING SETS ({sets})")
    out = {c: (lo, hi, {}) for c, (lo, hi) in ranges.items()}
    for r in catalog.query(sql).to_pylist():
        column = next(c for c in ranges if r[f"g_{c}"] == 0)
        if r[f"b_{column}"] is not None:  # NULL: not measured
            out[column][2].setdefault(r["grp"], [0] * FINE_BINS)[r[f"b_{column}"]] += r["n"]
    return out


def display_histogram(name: str, fine: tuple[float, float, dict], bound: Bound, integer: bool = False,
                      unit: str = "images", **exact) -> Histogram:
    """Fine bins -> ``HIST_BINS`` bars over the 0.1–99.9 % range plus the thresholds (see module doc).

    ``integer`` values (token counts) get bars a whole number wide, centred on the integers.
    """
    lo, hi, by_group = fine
    total = [sum(col) for col in zip(*by_group.values())] or [0] * FINE_BINS
    cumulative, n = 0, sum(total)
    width = (hi - lo) / FINE_BINS
    q_lo = q_hi = None
    for i, count in enumerate(total):
        if q_lo is None and count and cumulative + count > 0.001 * n:
            q_lo = lo + i * width
        cumulative += count
        if q_hi is None and cumulative >= 0.999 * n:
            q_hi = lo + (i + 1) * width
    d_lo, d_hi = _span((q_lo if q_lo is not None else lo, q_hi if q_hi is not None else hi), bound)
    n_bars = HIST_BINS
    if integer:
        first = math.floor(q_lo if q_lo is not None else lo)
        values = math.ceil(q_hi if q_hi is not None else hi) - first + 1
        step = max(1, math.ceil(values / HIST_BINS))
        n_bars = math.ceil(values / step)
        d_lo = first - 0.5
        d_hi = d_lo + step * n_bars
    step = (d_hi - d_lo) / n_bars
    counts: dict[str, list[int]] = {}
    for group, fine_counts_ in by_group.items():
        bars = counts.setdefault(group, [0] * n_bars)
        for i, count in enumerate(fine_counts_):
            if count:
                centre = lo + (i + 0.5) * width
                bars[min(max(int(math.floor((centre - d_lo) / step)), 0), n_bars - 1)] += count
    return Histogram(name, d_lo, d_hi, counts, bound, unit, **exact)


def _span(observed: tuple[float, float], bound: Bound) -> tuple[float, float]:
    """The observed range widened to show the thresholds, with a margin so a line never sits on the frame."""
    values = [*observed, *(v for v in (bound.min, bound.max) if v is not None)]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.04 or max(abs(lo) * 0.05, 0.5)
    return lo - pad, hi + pad


def scan_aggregates(catalog, k: int = 1) -> tuple[list[dict], list[Histogram]]:
    """(counts per source and reason, a histogram per cheap signal split by verdict): see :func:`from_pass`."""
    reasons, hists, _ = from_pass(catalog, k)
    return reasons, hists


def from_pass(catalog, k: int) -> tuple[list[dict], list[Histogram], scan_pass.ScanPass]:
    """Counts, histograms and the pass itself (its candidate paths feed the thumbnails).

    `decisions` only rejects rows whose scan verdict is NULL (dedup and model metrics look at survivors
    only), so the final reasons are the scan verdicts corrected by the small `decisions` table, as in
    `status`: no join over the whole catalog. Histograms come from the pass's sample.
    """
    bounds, _ = stored_thresholds(catalog)
    exact = scan_pass.full_pass(catalog, k)
    counts: dict[tuple, int] = {}
    for r in exact.counts:
        counts[(r["source"], r["verdict"])] = counts.get((r["source"], r["verdict"]), 0) + r["n"]
    for r in catalog.query(_DECISION_COUNTS_SQL).to_pylist():
        counts[(r["source"], None)] = counts.get((r["source"], None), 0) - r["n"]
        counts[(r["source"], r["reason"])] = counts.get((r["source"], r["reason"]), 0) + r["n"]
    rows = [{"source": s, "reason": reason, "n": n} for (s, reason), n in counts.items() if n]
    rows.sort(key=lambda r: (str(r["source"]), -r["n"], str(r["reason"])))
    every, fine = exact.every, exact.fine
    rejected = {c: sum(r["n"] for r in exact.counts if r["verdict"] == f"low_quality:{c}") for c in QUALITY_SIGNALS}
    hists = [display_histogram(c, fine[c], bounds[c], every=every, measured=exact.measured[c], rejected=rejected[c])
             for c in QUALITY_SIGNALS if c in fine]
    return rows, hists, exact


def iqa_histograms(catalog) -> list[Histogram]:
    """A histogram per scored model metric (`iqa_scores`), with its configured bounds."""
    _, bounds = stored_thresholds(catalog)
    out = []
    for metric in catalog.query("SELECT DISTINCT metric FROM iqa_scores ORDER BY 1").column(0).to_pylist():
        quoted = "'" + metric.replace("'", "''") + "'"
        fine = fine_counts(catalog, f"(SELECT score FROM iqa_scores WHERE metric = {quoted})", ["score"], f"'{PASSED}'")
        if "score" in fine:
            out.append(display_histogram(f"iqa_{metric}", fine["score"], bounds.get(metric, Bound())))
    return out


def caption_aggregates(catalog) -> tuple[dict, Histogram | None]:
    """(caption counts by model and flag, and token statistics; the token-length histogram of good ones).

    Token statistics come from the fine bins (exact for token counts when the range spans < 1000 tokens).
    """
    by_flag = catalog.query(
        "SELECT model, coalesce(flag, 'ok') AS flag, count(*) AS n FROM captions GROUP BY ALL ORDER BY n DESC, model, flag"
    ).to_pylist()
    fine = fine_counts(catalog, "(SELECT n_tokens FROM captions WHERE flag IS NULL)", ["n_tokens"], f"'{PASSED}'")
    stats = {"by_flag": by_flag, "n": 0, "mean": None, "q": [None, None, None]}
    if "n_tokens" not in fine:
        return stats, None
    lo, hi, groups = fine["n_tokens"]
    counts, width = groups[PASSED], (hi - lo) / FINE_BINS
    centres = [lo + (i + 0.5) * width for i in range(FINE_BINS)]
    n = sum(counts)
    stats["n"], stats["mean"] = n, sum(c * x for c, x in zip(counts, centres)) / n

    def quantile(q):
        cumulative = 0
        for c, x in zip(counts, centres):
            cumulative += c
            if cumulative >= q * n:
                return round(x) if width <= 1 else x
    stats["q"] = [quantile(q) for q in (0.05, 0.5, 0.95)]
    return stats, display_histogram("tokens per caption", fine["n_tokens"], Bound(), integer=True, unit="captions")


def negative_stats(catalog: Catalog) -> list[dict]:
    return catalog.query(
        "SELECT model, prompt, strength, steps, count(*) AS n, count(DISTINCT image_id) AS sources "
        "FROM negatives GROUP BY ALL ORDER BY n DESC, model"
    ).to_pylist()


def shard_mix(catalog: Catalog) -> list[dict]:
    """Shards, samples and bytes per (name, split) from the newest row of each shard."""
    return catalog.query(
        "SELECT name, split, count(*) AS shards, sum(samples)::BIGINT AS samples, sum(bytes)::BIGINT AS bytes "
        "FROM (SELECT * FROM shards QUALIFY row_number() OVER (PARTITION BY name, shard ORDER BY created_at DESC) = 1) "
        "GROUP BY ALL ORDER BY name, split"
    ).to_pylist()


UNKNOWN_SOURCE = "(not recorded)"  # shards written before `shards.sources_json` existed


def shard_sources(catalog: Catalog) -> list[dict]:
    """Samples per (name, split, source) from each shard's newest row; shares of its split, sorted.

    Each `shards` row records what its tar holds (``sources_json``: source -> samples, negatives
    apart), so this is the mix as written, not as planned; one row per tar keeps it small.
    """
    # a catalog whose views predate the column (not refreshed since) reads as "not recorded"
    column = "sources_json" if "sources_json" in catalog.query("SELECT * FROM shards LIMIT 0").column_names else (
        "NULL AS sources_json")
    rows = catalog.query(
        f"SELECT name, split, samples, {column} FROM shards "
        "QUALIFY row_number() OVER (PARTITION BY name, shard ORDER BY created_at DESC) = 1"
    ).to_pylist()
    counts: dict[tuple, int] = {}
    for r in rows:
        sources = json.loads(r["sources_json"]) if r["sources_json"] else {UNKNOWN_SOURCE: r["samples"] or 0}
        for source, n in sources.items():
            counts[(r["name"], r["split"], source)] = counts.get((r["name"], r["split"], source), 0) + int(n)
    totals: dict[tuple, int] = {}
    for (name, split, _), n in counts.items():
        totals[(name, split)] = totals.get((name, split), 0) + n
    out = [{"name": name, "split": split, "source": source, "samples": n,
            "share": n / totals[(name, split)] if totals[(name, split)] else 0.0}
           for (name, split, source), n in counts.items()]
    return sorted(out, key=lambda r: (str(r["name"]), str(r["split"]), -r["samples"], str(r["source"])))


def shard_configs(catalog: Catalog) -> dict[str, str]:
    """The newest `shard` run's config per shard name (JSON text), for the recipe behind the mix."""
    rows = catalog.query(
        "SELECT json_extract_string(config_json, '$.name') AS name, config_json FROM runs WHERE stage = 'shard' "
        "QUALIFY row_number() OVER (PARTITION BY name ORDER BY started_at DESC) = 1"
    ).to_pylist()
    return {r["name"]: r["config_json"] for r in rows}
