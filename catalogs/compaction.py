"""Compaction: a table's many small parts merged into few large, sorted ones, without changing a query.

Ingest writes one part per task of at most 128 files, so 20M images leave ~156,000 Parquet files, and
DuckDB pays per file on every query (footer reads, one scan task each). Compaction rewrites them as
files of about ``target_rows`` rows (default 1M; capped by ``target_bytes`` of input), sorted by the
columns the stages join and look up on (``path`` for `scans`, ``image_id`` for the rest), in row
groups of DuckDB's own size (122,880 rows: its unit of parallel scan, and the granularity at which
min/max statistics on the sort key let it skip data).

Atomic (every step is crash-safe; a crash leaves the old parts or the new ones counted, never both,
never neither):

1. write the compacted files and their members files under ``compacted/``: unreferenced, so invisible;
2. commit: replace ``_manifest.json`` (one atomic write) with the new list of compacted files;
3. refresh the views: they now read the new files and skip the merged parts still present
   (*leftovers*, recognised by name and version, see :mod:`catalogs.lake`);
4. delete the leftovers and the compacted files merged again; refresh the views.

The next compaction rolls any interrupted one forward (deletes leftovers) or back (deletes files no
manifest names). The whole run holds the catalog's write lock (``catalog.duckdb``), so a stage cannot
refresh or register in between. Running it twice is a no-op: compacted files are merged again only
together with new loose parts.

Not compacted: `decisions` (one part, ``current``, replaced whole by every ingest's decide) and
`shards` (a stale shard's row is removed by deleting its part; one row per tar, so it stays small).
"""

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.catalog import Catalog
from catalogs.lake import (
    COMPACTED_DIR,
    PART_COLUMN,
    CompactedPart,
    Manifest,
    TableLayout,
    conform_table,
    part_name,
    read_members,
    table_layout,
    write_manifest,
)
from catalogs.store import Store
from catalogs.views import sql_literal
from schemas.tables import TABLES

# Sort order per table: the key of the stages' anti-joins and lookups.
COMPACTABLE: dict[str, tuple[str, ...]] = {
    "scans": ("path",),
    "iqa_scores": ("image_id", "metric"),
    "captions": ("image_id", "created_at"),
    "negatives": ("image_id", "negative_id"),
    "runs": ("run_id",),
}
STEPS = ("recovered", "writing", "written", "committed", "refreshed", "deleting", "deleted")


@dataclass(frozen=True)
class CompactionTargets:
    rows: int = 1_000_000
    bytes: int = 512 << 20  # of input per compacted file; output is smaller (one footer, sorted columns)
    row_group_rows: int = 122_880


@dataclass(frozen=True)
class CompactionResult:
    table: str
    files_before: int  # files the table's view read before
    files_after: int
    merged: int  # input files merged
    written: int  # compacted files written
    rows: int  # rows in the files written
    seconds: float


@dataclass(frozen=True)
class _Input:
    url: str
    size: int
    rows: int  # exact for compacted files, estimated for loose parts
    name: str | None = None  # loose part: its part name
    identity: str | None = None
    compacted: CompactedPart | None = None


def compact_table(root_or_catalog, table: str, target_rows: int = CompactionTargets.rows,
                  target_bytes: int = CompactionTargets.bytes, row_group_rows: int = CompactionTargets.row_group_rows,
                  on_step: Callable[[str], None] | None = None) -> CompactionResult:
    """Merge the table's small parts (see the module docstring); ``on_step`` is called after each step."""
    if table not in COMPACTABLE:
        raise ValueError(f"table {table!r} is not compacted (compactable: {sorted(COMPACTABLE)})")
    catalog = root_or_catalog if isinstance(root_or_catalog, Catalog) else Catalog(root_or_catalog)
    targets = CompactionTargets(target_rows, target_bytes, row_group_rows)
    step = on_step or (lambda name: None)
    t0 = time.perf_counter()
    with catalog.writer() as con:  # its entry refreshed the views: leftovers are already skipped
        layout = _recover(catalog.store, table)
        step("recovered")
        before = len(layout.loose) + len(layout.manifest.parts)
        bins = _plan(layout, targets)
        if not bins:
            return CompactionResult(table, before, before, 0, 0, 0, time.perf_counter() - t0)
        generation = layout.manifest.generation + 1
        written = [_write_bin(con, layout, b, f"{generation:06d}-{k:04d}-{uuid.uuid4().hex[:8]}", targets, step)
                   for k, b in enumerate(bins)]
        step("written")
        consumed = {i.compacted.file for b in bins for i in b if i.compacted}
        kept = tuple(p for p in layout.manifest.parts if p.file not in consumed)
        write_manifest(catalog.store, table, Manifest(generation, kept + tuple(written)))
        step("committed")
        catalog._refresh_views(con)
        step("refreshed")
        after = _delete_unreferenced(catalog.store, table, step)
        catalog._refresh_views(con)
        step("deleted")
    merged = sum(len(b) for b in bins)
    return CompactionResult(table, before, len(after.loose) + len(after.manifest.parts), merged, len(written),
                            sum(p.rows for p in written), time.perf_counter() - t0)


def compact_after_run(catalog: Catalog, table: str, min_loose_parts: int = 256, **targets) -> CompactionResult | None:
    """The hook for the end of a stage run: compact ``table`` once it has ``min_loose_parts`` new parts.

    Cheap when there is nothing to do (one listing). 256 parts of 128 rows is ~33K rows: below that,
    the per-file cost is a fraction of a second per query.
    """
    if len(table_layout(catalog.store, table).loose) < min_loose_parts:
        return None
    return compact_table(catalog, table, **targets)


def compact_lake(root_or_catalog, tables=None, **targets) -> list[CompactionResult]:
    """Compact every compactable table (or the given ones), one after the other."""
    catalog = root_or_catalog if isinstance(root_or_catalog, Catalog) else Catalog(root_or_catalog)
    return [compact_table(catalog, t, **targets) for t in (tables or COMPACTABLE)]


# -- steps -----------------------------------------------------------------------------------------

def _recover(store: Store, table: str) -> TableLayout:
    """Finish or undo an interrupted compaction; returns the table's layout afterwards."""
    return _delete_unreferenced(store, table, lambda name: None)


def _delete_unreferenced(store: Store, table: str, step) -> TableLayout:
    """Delete what the manifest makes dead: leftovers, compacted files it does not name, temp files.

    Safe only once the views no longer read them, i.e. after the refresh that follows the commit.
    """
    layout = table_layout(store, table)
    live = {p.file for p in layout.manifest.parts} | {p.members for p in layout.manifest.parts}
    dead = [e.url for e in store.list(f"lake/{table}/{COMPACTED_DIR}", "*")
            if f"{COMPACTED_DIR}/{e.name}" not in live]
    dead += [e.url for e in layout.leftovers]
    for k, url in enumerate(dead):
        if k == len(dead) // 2 and dead:
            step("deleting")
        store.delete(url)
    return table_layout(store, table) if dead else layout


def _plan(layout: TableLayout, targets: CompactionTargets) -> list[list[_Input]]:
    """Bins of inputs, each to become one compacted file. Empty when there is nothing to merge."""
    if not layout.loose:
        return []  # compacted files are merged again only to absorb new parts: idempotent
    rows_per_byte = _rows_per_byte(layout)
    inputs = [_Input(layout.url(p.file), p.bytes, p.rows, compacted=p) for p in layout.manifest.parts
              if p.file in layout.rewritten.values()
              or (p.rows < targets.rows // 2 and p.bytes < targets.bytes // 2)]
    inputs += [_Input(e.url, e.size, max(1, round(e.size * rows_per_byte)), part_name(e.name), e.identity)
               for e in layout.loose]
    # as many files as the targets ask for, filled evenly (no tail file of one small part)
    n_bins = max(1, math.ceil(sum(i.rows for i in inputs) / targets.rows),
                 math.ceil(sum(i.size for i in inputs) / targets.bytes))
    goal_rows, goal_size = sum(i.rows for i in inputs) / n_bins, sum(i.size for i in inputs) / n_bins
    bins, current, rows, size = [], [], 0, 0
    for i in inputs:
        current.append(i)
        rows, size = rows + i.rows, size + i.size
        if (rows >= goal_rows or size >= goal_size) and len(bins) < n_bins - 1:
            bins.append(current)
            current, rows, size = [], 0, 0
    if current:
        bins.append(current)
    return [b for b in bins if len(b) > 1 or not b[0].compacted or b[0].compacted.file in layout.rewritten.values()]


def _rows_per_byte(layout: TableLayout, sample: int = 16) -> float:
    """Rows per file byte of the loose parts, from the footers of a few of them (evenly spaced)."""
    picks = layout.loose[:: max(1, len(layout.loose) // sample)][:sample]
    rows = size = 0
    for e in picks:
        with layout.store.open_read(e.url) as fh:  # seeks to the footer, reads only it
            rows += pq.ParquetFile(fh).metadata.num_rows
        size += e.size
    return rows / max(1, size)


def _select_sql(layout: TableLayout, inputs: list[_Input]) -> str:
    """One sorted SELECT over the bin: every column plus ``_part``, rewritten rows left out.

    Columns are matched by name (older parts may lack newer nullable columns); the writer casts the
    result to the table's schema.
    """
    loose = [i.url for i in inputs if not i.compacted]
    compacted = [i.url for i in inputs if i.compacted]
    selects = []
    if loose:
        selects.append(f"SELECT * EXCLUDE (filename), regexp_extract(filename, 'part-([^/]*)\\.parquet$', 1) "
                       f"AS {PART_COLUMN} FROM read_parquet([{', '.join(map(sql_literal, loose))}], "
                       "union_by_name = true, filename = true)")
    if compacted:
        where = ""
        if layout.rewritten:
            where = f" WHERE {PART_COLUMN} NOT IN ({', '.join(map(sql_literal, sorted(layout.rewritten)))})"
        selects.append(f"SELECT * FROM read_parquet([{', '.join(map(sql_literal, compacted))}]){where}")
    order = ", ".join(f'"{c}"' for c in COMPACTABLE[layout.table])
    return f"{' UNION ALL BY NAME '.join(selects)} ORDER BY {order}, {PART_COLUMN}"


def _write_bin(con, layout: TableLayout, inputs: list[_Input], stem: str, targets: CompactionTargets,
               step) -> CompactedPart:
    """Write one compacted file and its members file (not yet referenced by the manifest)."""
    reader = con.sql(_select_sql(layout, inputs)).to_arrow_reader(targets.row_group_rows)
    writer = _SortedFileWriter(layout.table, reader, targets.row_group_rows, step)
    file = f"{COMPACTED_DIR}/c-{stem}.parquet"
    members_file = f"{COMPACTED_DIR}/m-{stem}.parquet"
    url = layout.store.write_atomic(f"lake/{layout.table}/{file}", writer.write, sync_dir=True)
    members = _members(layout, inputs)
    layout.store.write_atomic(f"lake/{layout.table}/{members_file}",
                              lambda fh: pq.write_table(members, fh, compression="zstd"), sync_dir=True)
    return CompactedPart(file=file, members=members_file, rows=writer.rows, bytes=_size(layout.store, url))


def column_encodings(schema: pa.Schema) -> dict:
    """Parquet writer options per column: floats PLAIN and uncompressed, everything else dictionary + zstd.

    Measured signals (sharpness, noise sigma...) are full-entropy float32: a dictionary overflows into
    its PLAIN fallback and zstd saves ~10 %, yet both are decoded on every read. PLAIN uncompressed
    floats decode ~2.8x faster in DuckDB (0.107 -> 0.038 s CPU per million rows for the seven cheap
    signals) and the files are not larger (dictionary pages of unique floats cost more than they save).
    """
    floats = {f.name for f in schema if pa.types.is_floating(f.type)}
    return {"use_dictionary": [f.name for f in schema if f.name not in floats],
            "compression": {f.name: "none" if f.name in floats else "zstd" for f in schema}}


class _SortedFileWriter:
    """Streams DuckDB's sorted batches into one Parquet file in row groups of a fixed row count."""

    def __init__(self, table: str, reader: pa.RecordBatchReader, row_group_rows: int, step):
        self.table_schema = TABLES[table]
        self.schema = self.table_schema.append(pa.field(PART_COLUMN, pa.string()))
        self.reader, self.row_group_rows, self.rows, self.step = reader, row_group_rows, 0, step

    def write(self, fh) -> None:
        with pq.ParquetWriter(fh, self.schema, **column_encodings(self.schema)) as writer:
            pending, n = [], 0
            for batch in self.reader:
                pending.append(batch)
                n += batch.num_rows
                if n >= self.row_group_rows:
                    self._flush(writer, pending)
                    pending, n = [], 0
            if pending:
                self._flush(writer, pending)

    def _flush(self, writer: pq.ParquetWriter, batches: list[pa.RecordBatch]) -> None:
        data = pa.Table.from_batches(batches)
        part = data.column(PART_COLUMN).cast(pa.string())
        table = conform_table(self.table_schema, data).append_column(self.schema.field(PART_COLUMN), part)
        writer.write_table(table, row_group_size=self.row_group_rows)
        self.rows += table.num_rows
        self.step("writing")  # a row group is out, the file not yet complete


def _members(layout: TableLayout, inputs: list[_Input]) -> pa.Table:
    """Names and versions of every part now inside the new file (a rewritten name: its new version)."""
    merged = {}
    old = read_members(layout.store, layout.table, [i.compacted for i in inputs if i.compacted])
    for name, (identity, _) in old.items():
        if name not in layout.rewritten:
            merged[name] = identity
    for i in inputs:
        if not i.compacted:
            merged[i.name] = i.identity
    names = sorted(merged)
    return pa.table({"name": names, "identity": [merged[n] for n in names]})


def _size(store: Store, url: str) -> int:
    if store.remote:
        return int(store.fs.info(store.fs._strip_protocol(url))["size"])
    return Path(url).stat().st_size
