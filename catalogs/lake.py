"""The Parquet lake: ``<root>/lake/<table>/part-*.parquet`` plus compacted parts under a manifest.

Workers call :func:`write_part` (no DuckDB involved, safe in any process); a part appears under its
final name only once it is complete (see :mod:`catalogs.store`), so a crash never leaves a half part
that a view would read. The root may be a folder or an fsspec URL (``s3://bucket/prefix``).

Compaction (:mod:`catalogs.compaction`) merges small parts into ``<table>/compacted/c-*.parquet``.
Which compacted files count is said by one file, ``<table>/_manifest.json``, replaced atomically: the
commit point. Each compacted file has a members file (the names and versions of the parts merged
into it) and a ``_part`` column (the part each row came from), so :func:`table_layout` can tell:

- a *leftover*: a loose part already inside a compacted file (same version), not yet deleted after a
  crash; the views skip it;
- a *rewrite*: a loose part written again under a merged name (``write_part(name=...)`` replaces);
  the views skip that part's old rows in the compacted file, as if it had never been merged.
"""

import io
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.store import Entry, Store, is_remote
from schemas.tables import TABLES

PART_GLOB = "part-*.parquet"
MANIFEST_FILE = "_manifest.json"
COMPACTED_DIR = "compacted"
PART_COLUMN = "_part"  # in compacted files: the part name (without "part-" and ".parquet") of each row


def _check(table: str) -> None:
    if table not in TABLES:
        raise KeyError(f"unknown lake table {table!r}; known: {sorted(TABLES)}")


def table_dir(root: str | Path, table: str) -> Path | str:
    """The table's folder: a Path for a local root, a URL string for an object-store root."""
    _check(table)
    if is_remote(root):
        return Store(root).url_of(f"lake/{table}")
    return Path(Store(root).url) / "lake" / table


def conform(table: str, data: pa.Table | list[dict]) -> pa.Table:
    """Cast rows to the table's schema (column order and types); missing nullable columns become NULL."""
    schema = TABLES[table]
    if isinstance(data, list):
        return pa.Table.from_pylist(data, schema=schema)
    return conform_table(schema, data)


def conform_table(schema: pa.Schema, data: pa.Table) -> pa.Table:
    """``data`` with exactly ``schema``'s columns, in order and cast; missing columns as NULL."""
    columns = []
    for f in schema:
        if f.name in data.column_names:
            columns.append(data.column(f.name).cast(f.type))
        else:
            columns.append(pa.nulls(len(data), f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def write_part(root: str | Path, table: str, data: pa.Table | list[dict], name: str | None = None) -> Path | str:
    """Write one part atomically and return its final path (a URL string on an object store).

    ``name`` (without extension) makes the part name deterministic, so re-writing the same unit of
    work replaces it instead of adding a second copy (also after the part was compacted).
    """
    _check(table)
    data = conform(table, data)
    store = Store(root)
    url = store.write_atomic(f"lake/{table}/part-{name or uuid.uuid4().hex}.parquet",
                             lambda fh: pq.write_table(data, fh, compression="zstd"))
    return url if store.remote else Path(url)


def part_name(entry_name: str) -> str:
    """``part-<name>.parquet`` -> ``<name>``: the key a rewrite replaces."""
    return entry_name.removeprefix("part-").removesuffix(".parquet")


def list_parts(root: str | Path, table: str) -> list[Path] | list[str]:
    """The loose part files (as workers wrote them), sorted; compacted files are not listed."""
    _check(table)
    store = Store(root)
    urls = [e.url for e in store.list(f"lake/{table}", PART_GLOB)]
    return urls if store.remote else [Path(u) for u in urls]


def remove_temp_files(root: str | Path) -> int:
    """Remove leftovers of local writers that were killed mid-write; returns how many were removed.

    Object stores have none: an interrupted upload never becomes visible.
    """
    if is_remote(root):
        return 0
    removed = 0
    for tmp in (Path(Store(root).url) / "lake").glob("*/.tmp-*"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


# -- the manifest ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class CompactedPart:
    file: str  # relative to the table folder, e.g. "compacted/c-000003-0000-1a2b3c4d.parquet"
    members: str  # its members file (columns name, identity)
    rows: int
    bytes: int


@dataclass(frozen=True)
class Manifest:
    generation: int = 0
    parts: tuple[CompactedPart, ...] = ()

    def to_json(self) -> bytes:
        body = {"version": 1, "generation": self.generation, "parts": [vars(p) for p in self.parts]}
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def read_manifest(store: Store, table: str) -> Manifest:
    raw = store.read_bytes(f"lake/{table}/{MANIFEST_FILE}")
    if raw is None:
        return Manifest()
    body = json.loads(raw)
    return Manifest(body["generation"], tuple(CompactedPart(**p) for p in body["parts"]))


def write_manifest(store: Store, table: str, manifest: Manifest) -> None:
    """The commit point of a compaction: one atomic replace of one small file."""
    store.write_bytes(f"lake/{table}/{MANIFEST_FILE}", manifest.to_json())


def read_members(store: Store, table: str, parts) -> dict[str, tuple[str, str]]:
    """{member name: (identity, compacted file)} over the given compacted parts."""
    out = {}
    for p in parts:
        with store.open_read(f"lake/{table}/{p.members}") as fh:
            members = pq.read_table(io.BytesIO(fh.read()))
        for name, identity in zip(members.column("name").to_pylist(), members.column("identity").to_pylist()):
            out[name] = (identity, p.file)
    return out


# -- what a view reads -----------------------------------------------------------------------------

@dataclass
class TableLayout:
    """The files that make up a table now, and how the views must read them."""

    store: Store
    table: str
    manifest: Manifest
    loose: list[Entry]  # loose parts that count (not leftovers)
    leftovers: list[Entry] = field(default_factory=list)  # loose parts already in a compacted file
    rewritten: dict[str, str] = field(default_factory=dict)  # member name -> compacted file it was in

    def url(self, rel: str) -> str:
        return self.store.url_of(f"lake/{self.table}/{rel}")

    @property
    def loose_glob(self) -> str:
        return self.url(PART_GLOB)

    @property
    def compacted_urls(self) -> list[str]:
        return [self.url(p.file) for p in self.manifest.parts]

    @property
    def empty(self) -> bool:
        return not self.loose and not self.manifest.parts


def table_layout(root: str | Path | Store, table: str) -> TableLayout:
    _check(table)
    store = root if isinstance(root, Store) else Store(root)
    manifest = read_manifest(store, table)
    entries = store.list(f"lake/{table}", PART_GLOB)
    layout = TableLayout(store, table, manifest, entries)
    if not manifest.parts or not entries:
        return layout
    members = read_members(store, table, manifest.parts)
    layout.loose = []
    for e in entries:
        known = members.get(part_name(e.name))
        if known is None:
            layout.loose.append(e)
        elif known[0] == e.identity:
            layout.leftovers.append(e)
        else:
            layout.loose.append(e)
            layout.rewritten[part_name(e.name)] = known[1]
    return layout
