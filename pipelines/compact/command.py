"""`supir-data compact`: many small parts per table -> few large sorted ones, atomically.

Ingest writes one part per task of at most 128 files, so a 20M-image lake holds ~156,000 files and
every query pays per file; after compaction it holds about 20 per table. Safe to interrupt (a crash
leaves the old or the new parts counted, never both) and to run twice. It holds the catalog's write
lock, so it refuses to run while a stage is registering parts (and a stage refuses while it runs).
"""

import click
from rich.console import Console
from rich.table import Table

from catalogs.catalog import Catalog
from catalogs.compaction import COMPACTABLE, CompactionTargets, compact_table


@click.command("compact")
@click.option("--table", "tables", multiple=True, type=click.Choice(sorted(COMPACTABLE)),
              help="Compact only this table (repeatable; default: every compactable table).")
@click.option("--target-rows", type=int, default=CompactionTargets.rows, show_default=True,
              help="Rows per compacted file.")
@click.option("--target-mb", type=int, default=CompactionTargets.bytes >> 20, show_default=True,
              help="At most this many MB of input parts per compacted file.")
@click.pass_obj
def compact_command(settings, tables, target_rows, target_mb):
    """Merge each table's small Parquet parts into large files sorted for the stages' joins."""
    catalog = Catalog(settings.root)
    out = Table(title="compaction")
    for col in ("table", "files before", "files after", "parts merged", "rows written", "seconds"):
        out.add_column(col, justify="left" if col == "table" else "right")
    for table in tables or COMPACTABLE:
        r = compact_table(catalog, table, target_rows=target_rows, target_bytes=target_mb << 20)
        out.add_row(r.table, str(r.files_before), str(r.files_after), str(r.merged), str(r.rows), f"{r.seconds:.1f}")
    Console().print(out)
