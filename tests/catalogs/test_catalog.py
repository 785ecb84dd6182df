import pytest

from catalogs.catalog import Catalog
from catalogs.lake import list_parts, remove_temp_files, write_part
from schemas.errors import CatalogError


def test_views_exist_and_are_typed_before_any_part(tmp_path):
    cat = Catalog(tmp_path)
    assert cat.scalar("SELECT count(*) FROM images") == 0
    cols = cat.query("SELECT * FROM captions").column_names
    assert cols[:3] == ["image_id", "caption", "model"]


def test_registered_part_is_visible_and_status_derived(tmp_path):
    write_part(tmp_path, "scans", [{"path": "/a", "source": "s", "image_id": "aa"}], name="one")
    write_part(tmp_path, "scans", [{"path": "/b", "source": "s", "image_id": "bb", "reason": "too_small"}], name="two")
    write_part(tmp_path, "decisions", [{"path": "/a", "status": "rejected", "reason": "duplicate", "duplicate_of": "cc"}])
    cat = Catalog(tmp_path)
    cat.refresh()
    rows = {r["path"]: r for r in cat.query("SELECT path, status, reason, duplicate_of FROM images").to_pylist()}
    assert rows["/a"] == {"path": "/a", "status": "rejected", "reason": "duplicate", "duplicate_of": "cc"}
    assert rows["/b"]["status"] == "rejected" and rows["/b"]["reason"] == "too_small"


def test_same_part_name_replaces_instead_of_adding(tmp_path):
    write_part(tmp_path, "scans", [{"path": "/a"}], name="batch-1")
    write_part(tmp_path, "scans", [{"path": "/a"}], name="batch-1")
    assert len(list_parts(tmp_path, "scans")) == 1


def test_temp_files_are_invisible_and_cleaned(tmp_path):
    write_part(tmp_path, "scans", [{"path": "/a"}], name="ok")
    (tmp_path / "lake" / "scans" / ".tmp-dead.parquet").write_bytes(b"half a file")
    cat = Catalog(tmp_path)
    cat.refresh()
    assert cat.scalar("SELECT count(*) FROM scans") == 1
    assert remove_temp_files(tmp_path) == 1


@pytest.mark.parametrize(
    "sql", ["DELETE FROM scans", "CREATE TABLE x (a INT)", "COPY scans TO '/tmp/x.csv'", "INSERT INTO runs VALUES (1)"]
)
def test_query_refuses_writes(tmp_path, sql):
    with pytest.raises(CatalogError, match="read-only"):
        Catalog(tmp_path).query(sql)


def test_query_accepts_parameters(tmp_path):
    assert Catalog(tmp_path).scalar("SELECT ?::INT + 1", [41]) == 42
