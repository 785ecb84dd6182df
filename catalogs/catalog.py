"""The DuckDB catalog over the Parquet lake.

``<root>/catalog.duckdb`` holds only views (over absolute part globs, refreshed by every writer) and
small bookkeeping; the data lives in ``<root>/lake``. Users can open the file with any DuckDB client.
Only the driver process opens it for writing, and only briefly; workers write Parquet parts.
"""

import json
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from catalogs.lake import list_parts
from catalogs.views import LATEST_CAPTIONS_SQL, base_view_sql, images_view_sql, scan_verdicts_sql
from schemas.errors import CatalogError
from schemas.tables import TABLES

CATALOG_FILE = "catalog.duckdb"
SETTINGS_FILE = "catalog_settings.json"  # the catalog-wide verdict rules the views evaluate

# Statement types `query` accepts; anything else would change the catalog.
_READ_ONLY_TYPES = {"SELECT", "EXPLAIN", "PRAGMA", "RELATION"}


class Catalog:
    def __init__(self, root: str | Path):
        root_str = str(root)
        if "://" in root_str and not root_str.startswith("file://"):
            raise CatalogError(
                f"data root {root_str!r}: object-store roots are not supported yet; "
                "use a local or mounted folder (inputs to `ingest` may still be fsspec URLs)"
            )
        self.root = Path(root_str.removeprefix("file://")).expanduser().resolve()
        self.path = self.root / CATALOG_FILE
        self.settings_path = self.root / SETTINGS_FILE

    # -- connections -------------------------------------------------------------------------
    @contextmanager
    def writer(self):
        """A short-lived writable connection with fresh views."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(self.path))
        except duckdb.IOException as exc:
            raise CatalogError(f"cannot open {self.path} for writing (is another stage running?): {exc}") from exc
        try:
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
            yield con
        finally:
            con.close()

    def refresh(self) -> None:
        """Re-point every view at the parts now in the lake (the registration step)."""
        with self.writer():
            pass

    def _refresh_views(self, con: duckdb.DuckDBPyConnection) -> None:
        for table in TABLES:
            con.execute(f'CREATE OR REPLACE VIEW "{table}" AS {base_view_sql(self.root, table)}')
        quality_sql = self.settings().get("quality_reason_sql") or "CAST(NULL AS VARCHAR)"
        con.execute(f"CREATE OR REPLACE VIEW scan_verdicts AS {scan_verdicts_sql(quality_sql)}")
        metrics = []
        if list_parts(self.root, "iqa_scores"):
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
        if not self.settings_path.exists():
            return {}
        return json.loads(self.settings_path.read_text())

    def update_settings(self, **values) -> None:
        """Merge ``values`` into the settings file atomically; views pick them up at the next refresh."""
        import os

        self.root.mkdir(parents=True, exist_ok=True)
        merged = {**self.settings(), **values}
        tmp = self.settings_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.settings_path)

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
