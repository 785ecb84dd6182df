"""The report's numbers, aggregated inside DuckDB so a 20M-row catalog never reaches Python.

Every function here returns a few hundred values at most: counts are `GROUP BY`s, histograms are
binned in SQL (a value's bin is ``floor((x - lo) / width)``, clamped into the edge bins), and the
range of each histogram is the 0.1–99.9 % approximate quantiles widened to include the thresholds,
so one outlier cannot squeeze the interesting part into a single bar.
"""

import math
from dataclasses import dataclass

from catalogs.catalog import Catalog
from schemas.tables import QUALITY_SIGNALS

HIST_BINS = 40
# Histogram categories, in stacking order: how the catalog judged the images in each bar.
PASSED, REJECTED_HERE, REJECTED_ELSEWHERE = "passed", "rejected by this signal", "rejected by another check"
CATEGORIES = (PASSED, REJECTED_HERE, REJECTED_ELSEWHERE)

# `decisions` only rejects rows whose scan verdict is NULL, so the counts per source and reason are two
# join-free group-bys (as `status` does): one pass over `scans`, one over the small `decisions`.
_SCAN_COUNTS_SQL = "SELECT source, verdict AS reason, count(*) AS n FROM scan_verdicts GROUP BY ALL"
_DECISION_COUNTS_SQL = "SELECT source, reason, count(*) AS n FROM decisions GROUP BY ALL"


@dataclass(frozen=True)
class Bound:
    """The accepted range of one signal as the catalog stores it (None: that side is not checked)."""

    min: float | None = None
    max: float | None = None

    def fails(self, value: float | None) -> bool:
        if value is None or math.isnan(value):
            return False  # not measured: not judged (as ingest's judge does)
        return (self.min is not None and value < self.min) or (self.max is not None and value > self.max)

    def text(self) -> str:
        parts = [f"min {self.min:g}" if self.min is not None else "", f"max {self.max:g}" if self.max is not None else ""]
        return ", ".join(p for p in parts if p) or "not checked"


@dataclass(frozen=True)
class Histogram:
    name: str  # a signal of QUALITY_SIGNALS or "iqa_<metric>"
    lo: float
    hi: float
    counts: dict[str, list[int]]  # category -> count per bin
    bound: Bound

    @property
    def total(self) -> int:
        return sum(sum(c) for c in self.counts.values())

    def edges(self) -> list[float]:
        width = (self.hi - self.lo) / HIST_BINS
        return [self.lo + i * width for i in range(HIST_BINS + 1)]


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


def reason_counts(catalog: Catalog) -> list[dict]:
    """One row per (source, reason) with ``n``; reason None means accepted. Sorted by source, then n."""
    counts: dict[tuple, int] = {}
    for r in catalog.query(_SCAN_COUNTS_SQL).to_pylist():
        key = (r["source"], r["reason"])
        counts[key] = counts.get(key, 0) + r["n"]
    for r in catalog.query(_DECISION_COUNTS_SQL).to_pylist():
        counts[(r["source"], None)] = counts.get((r["source"], None), 0) - r["n"]
        counts[(r["source"], r["reason"])] = counts.get((r["source"], r["reason"]), 0) + r["n"]
    rows = [{"source": s, "reason": reason, "n": n} for (s, reason), n in counts.items() if n]
    return sorted(rows, key=lambda r: (str(r["source"]), -r["n"], str(r["reason"])))


def _ranges(catalog: Catalog, columns: list[str], table: str) -> dict[str, tuple[float, float] | None]:
    """Robust (lo, hi) per column in one pass: approximate 0.1 % and 99.9 % quantiles of finite values."""
    if not columns:
        return {}
    exprs = ", ".join(
        f'approx_quantile("{c}", [0.001, 0.999]) FILTER (WHERE NOT isnan("{c}")) AS "{c}"' for c in columns
    )
    row = catalog.query(f"SELECT {exprs} FROM {table}").to_pylist()[0]
    return {c: (float(row[c][0]), float(row[c][1])) if row[c] and row[c][0] is not None else None for c in columns}


def _span(observed: tuple[float, float], bound: Bound) -> tuple[float, float]:
    """The observed range widened to show the thresholds, with a margin so a line never sits on the frame."""
    values = [*observed, *(v for v in (bound.min, bound.max) if v is not None)]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.04 or max(abs(lo) * 0.05, 0.5)
    return lo - pad, hi + pad


def _binned(catalog: Catalog, select_sql: str, lo: float, hi: float) -> dict[str, list[int]]:
    """Counts per (category, bin) of ``select_sql``'s columns ``x`` and ``cat``."""
    sql = f"""
SELECT least(greatest(floor((x - $1) / $2), 0), {HIST_BINS - 1})::INTEGER AS bin, cat, count(*) AS n
FROM ({select_sql}) WHERE x IS NOT NULL AND NOT isnan(x) GROUP BY ALL"""
    counts: dict[str, list[int]] = {}
    for r in catalog.query(sql, [lo, (hi - lo) / HIST_BINS]).to_pylist():
        counts.setdefault(r["cat"], [0] * HIST_BINS)[r["bin"]] += r["n"]
    return counts


def signal_histograms(catalog: Catalog) -> list[Histogram]:
    """A histogram per cheap signal over every scanned image, split by how the catalog judged it."""
    bounds, _ = stored_thresholds(catalog)
    ranges = _ranges(catalog, list(QUALITY_SIGNALS), "scan_verdicts")
    out = []
    for name in QUALITY_SIGNALS:
        if ranges[name] is None:
            continue
        lo, hi = _span(ranges[name], bounds[name])
        select = (
            f"SELECT \"{name}\"::DOUBLE AS x, CASE WHEN verdict IS NULL THEN '{PASSED}' "
            f"WHEN verdict = 'low_quality:{name}' THEN '{REJECTED_HERE}' ELSE '{REJECTED_ELSEWHERE}' END AS cat "
            "FROM scan_verdicts"
        )
        out.append(Histogram(name, lo, hi, _binned(catalog, select, lo, hi), bounds[name]))
    return out


def iqa_histograms(catalog: Catalog) -> list[Histogram]:
    """A histogram per scored model metric (`iqa_scores`), with its configured bounds."""
    _, bounds = stored_thresholds(catalog)
    metrics = [r["metric"] for r in catalog.query("SELECT DISTINCT metric FROM iqa_scores ORDER BY 1").to_pylist()]
    out = []
    for metric in metrics:
        bound = bounds.get(metric, Bound())
        q = catalog.query(
            "SELECT approx_quantile(score, [0.001, 0.999]) AS q FROM iqa_scores WHERE metric = $1 AND NOT isnan(score)",
            [metric],
        ).to_pylist()[0]["q"]
        if not q or q[0] is None:
            continue
        lo, hi = _span((float(q[0]), float(q[1])), bound)
        quoted = "'" + metric.replace("'", "''") + "'"
        select = f"SELECT score::DOUBLE AS x, '{PASSED}' AS cat FROM iqa_scores WHERE metric = {quoted}"
        out.append(Histogram(f"iqa_{metric}", lo, hi, _binned(catalog, select, lo, hi), bound))
    return out


def caption_stats(catalog: Catalog) -> dict:
    """Caption counts by model and flag, and the token-length distribution of the good ones."""
    by_flag = catalog.query(
        "SELECT model, coalesce(flag, 'ok') AS flag, count(*) AS n FROM captions GROUP BY ALL ORDER BY n DESC, model, flag"
    ).to_pylist()
    length = catalog.query(
        "SELECT count(*) AS n, avg(n_tokens) AS mean, approx_quantile(n_tokens, [0.05, 0.5, 0.95]) AS q, "
        "avg(length(caption) - length(replace(caption, ' ', '')) + 1) AS words, "
        "count(DISTINCT image_id) AS images FROM captions WHERE flag IS NULL"
    ).to_pylist()[0]
    return {"by_flag": by_flag, **length}


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


def shard_configs(catalog: Catalog) -> dict[str, str]:
    """The newest `shard` run's config per shard name (JSON text), for the recipe behind the mix."""
    rows = catalog.query(
        "SELECT json_extract_string(config_json, '$.name') AS name, config_json FROM runs WHERE stage = 'shard' "
        "QUALIFY row_number() OVER (PARTITION BY name ORDER BY started_at DESC) = 1"
    ).to_pylist()
    return {r["name"]: r["config_json"] for r in rows}


def caption_length_histogram(catalog: Catalog) -> Histogram | None:
    """Tokens per good caption (a degenerate or truncated captioner shows up as a spike)."""
    ranges = _ranges(catalog, ["n_tokens"], "(SELECT n_tokens::DOUBLE AS n_tokens FROM captions WHERE flag IS NULL)")
    if ranges["n_tokens"] is None:
        return None
    lo, hi = _span(ranges["n_tokens"], Bound())
    select = f"SELECT n_tokens::DOUBLE AS x, '{PASSED}' AS cat FROM captions WHERE flag IS NULL"
    return Histogram("tokens per caption", lo, hi, _binned(catalog, select, lo, hi), Bound())
