"""The lake on an object store (moto's S3): parts, manifests and settings in the bucket, the DuckDB
file on the driver; a second driver rebuilds its catalog from the bucket alone."""

import boto3
import pytest

from catalogs.catalog import Catalog
from catalogs.compaction import compact_lake
from catalogs.lake import list_parts, read_manifest, table_layout, write_part
from tests.catalogs.lake_fixtures import build_lake, scan_row, snapshot
from tests.catalogs.test_compaction_crash import _kill_at


def _keys(root: str) -> list[str]:
    bucket, prefix = root.removeprefix("s3://").split("/", 1)
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"].removeprefix(prefix + "/") for o in listing.get("Contents", []))


def test_lake_on_s3_registers_compacts_and_is_recovered_by_a_second_driver(s3_root, tmp_path, monkeypatch):
    catalog = build_lake(s3_root, n_parts=4)
    assert str(catalog.path).startswith(str(tmp_path / "driver-a")) and catalog.root == s3_root
    parts = list_parts(s3_root, "scans")
    assert len(parts) == 5 and all(p.startswith(s3_root + "/lake/scans/part-") for p in parts)
    assert "catalog_settings.json" in _keys(s3_root) and not any(k.endswith(".duckdb") for k in _keys(s3_root))
    before = snapshot(catalog)
    assert len(before["scans"]) == 21 and any(r["verdict"] for r in before["scan_verdicts"])

    compact_lake(catalog, target_rows=1000)
    assert snapshot(catalog) == before
    assert list_parts(s3_root, "scans") == [] and len(read_manifest(catalog.store, "scans").parts) == 1
    assert any(k.startswith("lake/scans/compacted/c-") for k in _keys(s3_root))

    write_part(s3_root, "scans", [scan_row(900)], name="late")  # a worker's part, after compaction
    monkeypatch.setenv("SUPIR_DATA_CATALOG_CACHE", str(tmp_path / "driver-b"))
    second = Catalog(s3_root)  # another machine: nothing local but the URL
    assert second.path != catalog.path and not second.path.exists()
    assert second.scalar("SELECT count(*) FROM scans") == 22
    catalog.refresh()
    assert snapshot(second) == snapshot(catalog)


@pytest.mark.parametrize("step", ["deleting"])  # every step is killed on a local root (test_compaction_crash)
def test_compaction_on_s3_killed_mid_way_changes_no_view(s3_root, tmp_path, step):
    catalog = build_lake(s3_root, n_parts=8)
    before = snapshot(catalog)
    assert _kill_at(s3_root, step, tmp_path / "fifo") == step
    assert snapshot(catalog) == before
    catalog.refresh()
    assert snapshot(catalog) == before
    compact_lake(catalog, tables=["scans"], target_rows=40, row_group_rows=8)
    assert snapshot(catalog) == before
    assert table_layout(catalog.store, "scans").leftovers == [] and list_parts(s3_root, "scans") == []
