"""The DuckDB catalog over the Parquet lake.

``catalog.duckdb`` holds only views (over the lake's parts, refreshed by every writer); the data, the
settings and the compaction manifests live in the lake, so the catalog file can always be rebuilt
from the lake alone (:meth:`Catalog.refresh`). Only the driver process opens it for writing, and only
briefly; workers write Parquet parts.

Where it lives: ``<root>/catalog.duckdb`` for a folder root (open it with any DuckDB client). For an
object-store root (``s3://bucket/prefix``) it stays on the driver's disk, in
``$SUPIR_DATA_CATALOG_CACHE`` (default ``~/.cache/supir-data/catalogs``)
``/<first 16 hex of sha256(root URL)>/catalog.duckdb``; a second driver, or the same one after losing
its disk, rebuilds it at first use. Its views read the store through the fsspec filesystem that every
connection made here registers (DuckDB's own httpfs extension cannot be downloaded offline), so a
plain DuckDB client cannot read those views; `supir-data query` can.
"""

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from catalogs.lake import table_layout
from catalogs.store import Store
from catalogs.views import LATEST_CAPTIONS_SQL, base_view_sql, images_view_sql, scan_verdicts_sql
from schemas.errors import CatalogError
from schemas.tables import TABLES

CATALOG_FILE = "catalog.duckdb"
SETTINGS_FILE = "catalog_settings.json"  # the catalog-wide verdict rules the views evaluate

# Statement types `query` accepts; anything else would change the catalog.
_READ_ONLY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "RELATION"}


class Catalog:
    def __init__(self, root: str | Path):
        self.store = Store(root)
        if self.store.remote:
            self.root: Path | str = self.store.url  # stages pass it to write_part as is
            self.path = catalog_cache_dir(self.store.url) / CATALOG_FILE
        else:
            self.root = Path(self.store.url)
            self.path = self.root / CATALOG_FILE

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def writer(self):
        """A short-lived writable connection with fresh views."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            raise CatalogError(f"cannot open {self.path} for writing (is another stage running?): {exc}") from exc
        try:
            self._register_store(con)
            self._refresh_views(con)
            yield con
        finally:
            con.close()

    @contextmanager
    def reader(self):
        """A read-only connection. Creates the catalog first if it does not exist yet."""
        if not self.path.exists():
            with self.writer():
                pass
        try:
            con = duckdb.connect(str(self.path), read_only=True)
        except duckdb.IOException as exc:
            raise CatalogError(f"cannot open {self.path} for reading: {exc}") from exc
        try:
            self._register_store(con)
            yield con
        finally:
            con.close()

    def refresh(self) -> None:
        """Re-point every view at the parts now in the lake (the registration step)."""
        with self.writer():
            pass

    def _register_store(self, con: duckdb.DuckDBPyConnection) -> None:
        if self.store.remote:  # registrations live per connection, not in the catalog file
            self.store.fs.invalidate_cache()  # parts written by workers since: list them afresh
            con.register_filesystem(self.store.fs)

    def _refresh_views(self, con: duckdb.DuckDBPyConnection) -> None:
        iqa_parts = False
        for table in TABLES:
            layout = table_layout(self.store, table)
            iqa_parts |= table == "iqa_scores" and not layout.empty
            con.execute(f'CREATE OR REPLACE VIEW "{table}" AS {base_view_sql(self.root, table, layout)}')
        quality_sql = self.settings().get("quality_reason_sql") or "CAST(NULL AS VARCHAR)"
        con.execute(f"CREATE OR REPLACE VIEW scan_verdicts AS {scan_verdicts_sql(quality_sql)}")
        metrics = []
        if iqa_parts:
            metrics = [r[0] for r in con.execute("SELECT DISTINCT metric FROM iqa_scores ORDER BY 1").fetchall()]
        con.execute(f"CREATE OR REPLACE VIEW images AS {images_view_sql(metrics)}")
        con.execute(f"CREATE OR REPLACE VIEW latest_captions AS {LATEST_CAPTIONS_SQL}")

    # -- queries -----------------------------------------------------------------------------
    def query(self, sql: str, params: list | None = None) -> pa.Table:
        """Run read-only SQL and return an Arrow table. Write statements are refused."""
        with self.reader() as con:
            try:
                statements = con.extract_statements(sql)
            except duckdb.Error as exc:
                raise CatalogError(f"cannot parse SQL: {exc}") from exc
            if not statements:
                raise CatalogError("no SQL statement given")
            for st in statements:
                kind = st.type.name
                if kind not in _READ_ONLY_TYPES:
                    raise CatalogError(
                        f"`query` is read-only: {kind} statements are refused. The catalog changes only "
                        "through supir-data stages (ingest, caption, negatives, shard)."
                    )
            try:
                for st in statements[:-1]:
                    con.sql(st.query)
                return con.sql(statements[-1].query, params=params or None).to_arrow_table()
            except duckdb.Error as exc:
                raise CatalogError(str(exc).splitlines()[0]) from exc

    def scalar(self, sql: str, params: list | None = None):
        table = self.query(sql, params)
        return table.column(0)[0].as_py() if len(table) else None

    # -- bookkeeping ---------------------------------------------------------------------------
    def settings(self) -> dict:
        """Catalog-wide settings (e.g. the quality thresholds every scanned image is judged by)."""
        raw = self.store.read_bytes(SETTINGS_FILE)
        return {} if raw is None else json.loads(raw)

    @property
    def settings_path(self) -> Path | str:
        """``<root>/catalog_settings.json``: kept in the lake (not beside a cached catalog file)."""
        return self.store.url_of(SETTINGS_FILE) if self.store.remote else self.root / SETTINGS_FILE

    def update_settings(self, **values) -> None:
        """Merge ``values`` into the settings file atomically; views pick them up at the next refresh."""
        merged = {**self.settings(), **values}
        self.store.write_bytes(SETTINGS_FILE, (json.dumps(merged, indent=2, sort_keys=True) + "\n").encode())

    def record_run(self, run_id: str, stage: str, config: dict) -> None:
        from catalogs.lake import write_part
        from schemas.runs import config_hash, utc_now

        row = {
            "run_id": run_id,
            "stage": stage,
            "config_json": json.dumps(config, sort_keys=True, default=str),
            "config_hash": config_hash(config),
            "started_at": utc_now(),
        }
        write_part(self.root, "runs", [row], name=f"run-{run_id}")


def catalog_cache_dir(url: str) -> Path:
    """The driver-local folder of an object-store root's ``catalog.duckdb`` (keyed by the root URL)."""
    base = os.environ.get("SUPIR_DATA_CATALOG_CACHE") or Path.home() / ".cache" / "supir-data" / "catalogs"
    return Path(base).expanduser() / hashlib.sha256(url.encode()).hexdigest()[:16]
