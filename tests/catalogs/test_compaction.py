"""Compaction merges small parts into sorted large ones and no view changes, also after a rewrite."""

import pyarrow.parquet as pq
import pytest

from catalogs.catalog import Catalog
from catalogs.compaction import COMPACTABLE, compact_after_run, compact_lake, compact_table
from catalogs.lake import list_parts, read_manifest, table_layout, write_part
from tests.catalogs.lake_fixtures import build_lake, files_read, scan_row, snapshot


def test_compaction_keeps_every_view_and_is_idempotent(tmp_path):
    catalog = build_lake(tmp_path)
    before = snapshot(catalog)
    files_before = files_read(catalog, "scans")
    results = {r.table: r for r in compact_lake(catalog, target_rows=40, row_group_rows=16)}
    assert snapshot(catalog) == before
    assert snapshot(Catalog(tmp_path)) == before
    assert files_before == 25 and results["scans"].files_before == 25
    assert results["scans"].files_after == files_read(catalog, "scans") == 4  # 121 rows in files of <= 40
    assert list_parts(tmp_path, "scans") == []  # the merged parts are gone
    for p in read_manifest(catalog.store, "scans").parts:  # sorted by path, row groups of <= 16 rows
        table = pq.read_table(catalog.store.url_of(f"lake/scans/{p.file}"))
        assert table.column("path").to_pylist() == sorted(table.column("path").to_pylist())
        meta = pq.ParquetFile(catalog.store.url_of(f"lake/scans/{p.file}")).metadata
        assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 16
        chunks = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
        # signals PLAIN and uncompressed (decoded on every report and judge), strings dictionary + zstd
        assert "RLE_DICTIONARY" not in chunks["sharpness"].encodings and chunks["sharpness"].compression == "UNCOMPRESSED"
        assert "RLE_DICTIONARY" in chunks["source"].encodings and chunks["source"].compression == "ZSTD"
    generations = {t: read_manifest(catalog.store, t).generation for t in COMPACTABLE}
    again = compact_lake(catalog, target_rows=40, row_group_rows=16)
    assert all(r.merged == 0 and r.written == 0 for r in again)
    assert {t: read_manifest(catalog.store, t).generation for t in COMPACTABLE} == generations
    assert snapshot(catalog) == before


def test_new_parts_after_compaction_are_read_then_merged(tmp_path):
    catalog = build_lake(tmp_path)
    compact_table(catalog, "scans", target_rows=1000)
    write_part(tmp_path, "scans", [scan_row(i) for i in range(500, 505)], name="late")
    catalog.refresh()
    expected = snapshot(catalog)
    assert catalog.scalar("SELECT count(*) FROM scans") == 126
    result = compact_table(catalog, "scans", target_rows=1000)
    assert result.merged == 2 and result.files_after == 1  # the small compacted file absorbed the new part
    assert snapshot(catalog) == expected


def test_a_part_rewritten_after_compaction_replaces_its_rows(tmp_path):
    """``write_part(name=...)`` replaces a part; that must hold when the old part was merged."""
    plain, compacted = build_lake(tmp_path / "plain"), build_lake(tmp_path / "compacted")
    compact_table(compacted, "scans", target_rows=1000)
    for root in (plain.root, compacted.root):
        write_part(root, "scans", [scan_row(i, "rewritten") for i in (5, 6)], name="scan-001")
    plain.refresh()
    compacted.refresh()
    assert table_layout(compacted.store, "scans").rewritten == {
        "scan-001": read_manifest(compacted.store, "scans").parts[0].file}
    assert _without_runs(snapshot(compacted)) == _without_runs(snapshot(plain))  # runs differ in started_at
    assert compacted.scalar("SELECT count(*) FROM scans WHERE source = 'rewritten'") == 2
    compact_table(compacted, "scans", target_rows=1000)  # the rewrite is merged, the old rows dropped
    assert table_layout(compacted.store, "scans").rewritten == {}
    assert list_parts(compacted.root, "scans") == []
    assert _without_runs(snapshot(compacted)) == _without_runs(snapshot(plain))


def test_replaced_tables_are_not_compacted(tmp_path):
    catalog = build_lake(tmp_path)
    for table in ("decisions", "shards"):
        with pytest.raises(ValueError, match="not compacted"):
            compact_table(catalog, table)
    assert {r.table for r in compact_lake(catalog)} == set(COMPACTABLE)
    write_part(tmp_path, "decisions", [], name="current")  # the next decide replaces decisions whole
    catalog.refresh()
    assert catalog.scalar("SELECT count(*) FROM decisions") == 0


def _without_runs(snap: dict) -> dict:
    return {k: v for k, v in snap.items() if k != "runs"}


def test_the_after_run_hook_waits_for_enough_new_parts(tmp_path):
    catalog = build_lake(tmp_path, n_parts=6)
    assert compact_after_run(catalog, "scans", min_loose_parts=8) is None
    assert compact_after_run(catalog, "scans", min_loose_parts=7).merged == 7
    assert files_read(catalog, "scans") == 1
