"""`supir-data verify` passes fresh shards and catches each kind of damage."""

import io
import json
import shutil
import tarfile

import pytest

from pipelines.shard.verify import check_sample, verify_tar
from tests.pipelines.shard_corpus import build_catalog


@pytest.fixture(scope="module")
def shards(tmp_path_factory, ray_cluster):
    from click.testing import CliRunner

    from pipelines.cli import cli

    root = tmp_path_factory.mktemp("verify-root")
    build_catalog(root, n_images=8, n_negatives=1)
    args = ["--root", str(root), "shard", "--gt-size", "96", "--lq", "none", "--max-count", "3", "--val-fraction", "0"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def copy(shards, tmp_path):
    """A fresh copy of the shard set to damage."""
    out = tmp_path / "shards"
    shutil.copytree(shards / "shards", out)
    return out


def _rewrite_without(src, dst, drop_suffix: str):
    """Copy a tar dropping the first member whose name ends with ``drop_suffix``."""
    dropped = False
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.USTAR_FORMAT) as tout:
        for member in tin.getmembers():
            if not dropped and member.name.endswith(drop_suffix):
                dropped = True
                continue
            tout.addfile(member, io.BytesIO(tin.extractfile(member).read()))


def test_fresh_shards_pass(shards, run_cli):
    result = run_cli(shards, "verify")
    assert "0 problems" in result.output and "9 samples" in result.output


def test_truncated_tar_is_caught(copy, run_cli, tmp_path):
    tar = copy / "supir-train-000001.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    result = run_cli(tmp_path, "verify", "--out", copy, expect_exit=1)
    assert "supir-train-000001.tar: 3000 bytes, manifest says" in result.output
    # without a manifest, reading it to the end still fails
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(tar, bare / tar.name)
    problems = verify_tar(str(bare / tar.name))["problems"]
    assert any("does not read to the end" in p for p in problems)


def test_flipped_byte_is_caught(copy, run_cli, tmp_path):
    tar = copy / "supir-train-000000.tar"
    data = bytearray(tar.read_bytes())
    data[1500] ^= 0x01  # inside the first member's data: still a valid tar, but not the bytes written
    tar.write_bytes(bytes(data))
    result = run_cli(tmp_path, "verify", tar, expect_exit=1)  # tar path given: the manifest next to it is used
    assert "supir-train-000000.tar: SHA-256 differs from the manifest" in result.output


def test_missing_member_is_caught(copy, run_cli, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    _rewrite_without(copy / "supir-train-000000.tar", bare / "x.tar", ".txt")
    result = run_cli(tmp_path, "verify", bare / "x.tar", expect_exit=1)
    assert "missing txt" in result.output and "without a manifest entry" in result.output


def test_sample_checks():
    assert check_sample("a.b", {"gt.png": b"x", "txt": b"", "json": b"{}"}, None)[0].startswith("a.b: invalid key")
    problems = check_sample("k", {"gt.jpg": b"not a jpeg", "txt": b"t", "json": json.dumps({}).encode()}, True)
    assert any("missing lq.png" in p for p in problems)
    assert any("json lacks image_id" in p for p in problems)
    assert any("gt.jpg does not decode" in p for p in problems)
