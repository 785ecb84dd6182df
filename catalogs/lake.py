"""The Parquet lake: ``<root>/lake/<table>/part-*.parquet``.

Workers call :func:`write_part` (no DuckDB involved, safe in any process); a part appears under its
final name only once it is complete (written to a dot-temp name, fsynced, renamed), so a crash never
leaves a half part that a view would read.
"""

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.tables import TABLES

PART_GLOB = "part-*.parquet"


def table_dir(root: str | Path, table: str) -> Path:
    if table not in TABLES:
        raise KeyError(f"unknown lake table {table!r}; known: {sorted(TABLES)}")
    return Path(root) / "lake" / table


def conform(table: str, data: pa.Table | list[dict]) -> pa.Table:
    """Cast rows to the table's schema (column order and types); missing nullable columns become NULL."""
    schema = TABLES[table]
    if isinstance(data, list):
        return pa.Table.from_pylist(data, schema=schema)
    columns = []
    for field in schema:
        if field.name in data.column_names:
            columns.append(data.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(len(data), field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_part(root: str | Path, table: str, data: pa.Table | list[dict], name: str | None = None) -> Path:
    """Write one part atomically and return its final path.

    ``name`` (without extension) makes the part name deterministic, so re-writing the same unit of
    work replaces it instead of adding a second copy.
    """
    data = conform(table, data)
    directory = table_dir(root, table)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"part-{name or uuid.uuid4().hex}.parquet"
    tmp = directory / f".tmp-{uuid.uuid4().hex}.parquet"
    pq.write_table(data, tmp, compression="zstd")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def list_parts(root: str | Path, table: str) -> list[Path]:
    return sorted(table_dir(root, table).glob(PART_GLOB))


def remove_temp_files(root: str | Path) -> int:
    """Remove leftovers of writers that were killed mid-write; returns how many were removed."""
    removed = 0
    for tmp in (Path(root) / "lake").glob("*/.tmp-*"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
