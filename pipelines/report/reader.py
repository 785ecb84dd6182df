"""One read-only connection for the report's many small queries."""

from contextlib import contextmanager

import duckdb
import pyarrow as pa

from catalogs.catalog import Catalog
from schemas.errors import CatalogError


class CatalogReader:
    """The report's queries on one read-only connection of the catalog.

    `Catalog.query` opens ``catalog.duckdb`` for every call (about 0.1 s here), which would dominate a
    report of ~25 small queries. The SQL run here is the report's own, never a user's. It has the
    ``query`` / ``scalar`` / ``settings`` / ``root`` surface of `Catalog`, so every function of
    `aggregate` and `samples` takes either.
    """

    def __init__(self, catalog: Catalog, con: duckdb.DuckDBPyConnection):
        self.catalog, self.con, self.root = catalog, con, catalog.root
        con.execute("SET enable_progress_bar = false")  # DuckDB draws one on stderr for long scans

    def settings(self) -> dict:
        return self.catalog.settings()

    def query(self, sql: str, params: list | None = None) -> pa.Table:
        try:
            return self.con.sql(sql, params=params or None).to_arrow_table()
        except duckdb.Error as exc:
            raise CatalogError(str(exc).splitlines()[0]) from exc

    def scalar(self, sql: str, params: list | None = None):
        table = self.query(sql, params)
        return table.column(0)[0].as_py() if len(table) else None


@contextmanager
def reading(catalog: Catalog):
    """``with reading(catalog) as reader:`` many queries, one connection."""
    with catalog.reader() as con:
        yield CatalogReader(catalog, con)
