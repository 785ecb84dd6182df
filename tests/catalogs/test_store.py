"""The data root's file primitives on a local S3 server (moto) and on a folder: all-or-nothing writes,
listings of the root's own folder, sizes in one listing, one file named by URL."""

import pytest

from catalogs.store import Store, open_file, split_url


class _Interrupted(Exception):
    pass


def _half_write(fh):
    fh.write(b"half a shard")
    raise _Interrupted


@pytest.fixture(params=["s3", "folder"])
def root(request, tmp_path):
    if request.param == "s3":
        return request.getfixturevalue("s3_root")
    return str(tmp_path / "root")


def test_an_interrupted_write_leaves_nothing(root):
    store = Store(root)
    with pytest.raises(_Interrupted):
        store.write_atomic("shards/a.tar", _half_write)
    assert not store.exists("shards/a.tar") and store.list("shards", "*") == []
    store.write_atomic("shards/a.tar", lambda fh: fh.write(b"whole"))
    assert store.read_bytes("shards/a.tar") == b"whole" and store.size("shards/a.tar") == 5


def test_the_root_folder_itself_lists_sizes_and_splits(root):
    store = Store(root)
    for rel, data in {"x.tar": b"1", "sub/y.png": b"22", "sub/deeper/z.png": b"333"}.items():
        store.write_bytes(rel, data)
    (entry,) = store.list("", "*.tar")  # files directly in the root, with URLs without a double slash
    assert entry.url == store.url_of("x.tar") == f"{store.url}/x.tar"
    assert store.sizes("sub") == {store.url_of("sub/y.png"): 2, store.url_of("sub/deeper/z.png"): 3}
    assert store.sizes("nothing-here") == {} and store.size("nothing-here") is None
    folder, name = split_url(store.url_of("sub/deeper/z.png"))
    assert (folder.url, name) == (store.url_of("sub/deeper"), "z.png")
    with open_file(store.url_of("sub/y.png")) as fh:
        assert fh.read() == b"22"
