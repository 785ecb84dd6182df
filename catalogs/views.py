"""SQL views over the lake. Base views are one per lake table; derived views join them."""

from pathlib import Path

import pyarrow as pa

from catalogs.lake import PART_COLUMN, TableLayout, table_layout
from schemas.tables import QUALITY_SIGNALS, TABLES

_DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.int32(): "INTEGER",
    pa.uint64(): "UBIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
}


def _duck_type(t: pa.DataType) -> str:
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    return _DUCK_TYPES[t]


def sql_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def base_view_sql(root: Path | str, table: str, layout: TableLayout | None = None) -> str:
    """``SELECT`` over the table's parts, or a typed empty relation while it has none.

    Loose parts are read by glob (new parts need no re-registration to be found by the glob, only
    the views' refresh to be told apart from compacted copies); compacted files are listed, from the
    manifest. Leftovers and rewritten rows are filtered by file name and ``_part``, which DuckDB
    applies to whole files and row groups before reading them.
    """
    layout = layout or table_layout(root, table)
    schema = TABLES[table]
    cols = ", ".join(f'"{f.name}"' for f in schema)
    selects = []
    if layout.loose:
        if layout.leftovers:
            skip = ", ".join(sql_literal(e.url) for e in layout.leftovers)
            selects.append(f"SELECT {cols} FROM read_parquet({sql_literal(layout.loose_glob)}, union_by_name = true, "
                           f"filename = true) WHERE filename NOT IN ({skip})")
        else:
            selects.append(f"SELECT {cols} FROM read_parquet({sql_literal(layout.loose_glob)}, union_by_name = true)")
    if layout.manifest.parts:
        files = ", ".join(sql_literal(u) for u in layout.compacted_urls)
        where = ""
        if layout.rewritten:
            where = f" WHERE {PART_COLUMN} NOT IN ({', '.join(sql_literal(n) for n in sorted(layout.rewritten))})"
        selects.append(f"SELECT {cols} FROM read_parquet([{files}], union_by_name = true){where}")
    if selects:
        return " UNION ALL ".join(selects)
    cols = ", ".join(f'CAST(NULL AS {_duck_type(f.type)}) AS "{f.name}"' for f in schema)
    return f"SELECT {cols} WHERE false"


def scan_verdicts_sql(quality_reason_sql: str) -> str:
    """`scans` plus ``verdict``: the worker's reason, else the quality rules in force (SQL from ingest).

    Judging the stored signals here, not in the workers, means new thresholds re-judge the whole
    catalog at once, and per-source counts stay join-free.
    """
    return f"SELECT *, coalesce(reason, {quality_reason_sql}) AS verdict FROM scans"


def images_view_sql(iqa_metrics: list[str]) -> str:
    """The `images` view: one row per input path with its final status.

    `scan_verdicts` holds what can be decided per file (decoding, size, cheap quality signals);
    `decisions` holds only the rows the driver rejected after looking at the whole catalog
    (duplicates, near-duplicates, model-metric thresholds), so the join's build side stays small
    even for a 20M-image catalog.
    """
    signals = ", ".join(f"s.{name}" for name in QUALITY_SIGNALS)
    iqa_cols = "".join(f', q."{m}" AS "iqa_{m}"' for m in iqa_metrics)
    iqa_join = ""
    if iqa_metrics:
        pivots = ", ".join(f"max(score) FILTER (WHERE metric = {sql_literal(m)}) AS \"{m}\"" for m in iqa_metrics)
        iqa_join = f" LEFT JOIN (SELECT image_id, {pivots} FROM iqa_scores GROUP BY image_id) q ON q.image_id = s.image_id"
    return f"""
SELECT s.image_id, s.path, s.source, s.width, s.height, s.format, s.mode, s.bytes,
       CASE WHEN s.verdict IS NULL AND d.reason IS NULL THEN 'accepted' ELSE 'rejected' END AS status,
       coalesce(s.verdict, d.reason) AS reason,
       d.duplicate_of, s.phash, {signals}{iqa_cols}, s.detail, s.config_hash, s.run_id, s.ingested_at
FROM scan_verdicts s LEFT JOIN decisions d ON d.path = s.path{iqa_join}"""


LATEST_CAPTIONS_SQL = """
SELECT image_id, caption, model, prompt, n_tokens, run_id, created_at
FROM captions WHERE flag IS NULL
QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY created_at DESC, caption) = 1"""
