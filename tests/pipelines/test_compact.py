"""`supir-data compact` through the real CLI: fewer files, same answers, a no-op the second time."""

from catalogs.catalog import Catalog
from catalogs.lake import list_parts
from tests.catalogs.lake_fixtures import build_lake, files_read, snapshot


def test_compact_command_merges_parts_and_keeps_answers(tmp_path, run_cli):
    before = snapshot(build_lake(tmp_path, n_parts=10))
    out = run_cli(tmp_path, "compact", "--table", "scans", "--table", "iqa_scores", "--target-rows", "1000").output
    assert "scans" in out and "iqa_scores" in out and "captions" not in out
    catalog = Catalog(tmp_path)
    assert files_read(catalog, "scans") == 1 and list_parts(tmp_path, "scans") == []
    assert files_read(catalog, "captions") == 5  # not asked for
    assert snapshot(catalog) == before
    again = run_cli(tmp_path, "compact").output
    assert snapshot(Catalog(tmp_path)) == before and "captions" in again
    assert files_read(Catalog(tmp_path), "captions") == 1
