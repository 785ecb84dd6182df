"""Ingest from an object store: s3:// through s3fs against a local S3 server (moto), no network.

The CLI runs as a subprocess with its own Ray, because the store's endpoint and credentials reach
Ray's workers through their environment (as on a real cluster), which the shared test cluster was
started without.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.devtools.demo_corpus import encode, load_photo, upscale_to
from pipelines.engine.actors import load_rgb
from pipelines.engine.sources import expand_paths, read_bytes
from tests.s3_server import local_s3

REPO = Path(__file__).resolve().parents[2]
BUCKET = "photos"


@pytest.fixture(scope="module")
def s3_env():
    boto3 = pytest.importorskip("boto3")
    with local_s3() as env:
        client = boto3.client("s3", **_client_args(env))
        client.create_bucket(Bucket=BUCKET)
        photos = {
            "in/astronaut.jpg": encode(upscale_to(load_photo("astronaut.png"), 1024), "JPEG", quality=95),
            "in/sub/coffee.jpg": encode(upscale_to(load_photo("coffee.png"), 1024), "JPEG", quality=95),
            "in/small.jpg": encode(load_photo("chelsea.png"), "JPEG", quality=95),  # 451x300: too small
            "in/broken.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
        }
        photos["in/sub/astronaut_copy.jpg"] = photos["in/astronaut.jpg"]
        for key, body in photos.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        yield env, photos


def _client_args(env):
    return {
        "endpoint_url": env["AWS_ENDPOINT_URL"],
        "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"],
        "region_name": env["AWS_DEFAULT_REGION"],
    }


def _cli(root, env, *args):
    cmd = [sys.executable, "-m", "pipelines", "--root", str(root), "--num-cpus", "2", *args]
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=full_env, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_paths_and_bytes_come_from_the_store(s3_env, monkeypatch):
    env, photos = s3_env
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    found = [p for p, _ in expand_paths([f"s3://{BUCKET}/in"])]
    assert found == sorted(f"s3://{BUCKET}/{k}" for k in photos)
    assert read_bytes(f"s3://{BUCKET}/in/sub/coffee.jpg") == photos["in/sub/coffee.jpg"]
    # the caption/negatives stages decode through the same reader
    assert min(load_rgb(f"s3://{BUCKET}/in/sub/coffee.jpg", min_side=336).size) == 336


def test_ingest_from_s3_records_every_object_and_resumes(s3_env, tmp_path):
    env, photos = s3_env
    result = _cli(tmp_path, env, "ingest", f"s3://{BUCKET}/in", "--source", "bucket")
    assert result.returncode == 0, result.stderr[-3000:]
    out = _cli(tmp_path, env, "query", "SELECT path, status, reason, duplicate_of IS NOT NULL AS dup "
               "FROM images ORDER BY path", "--format", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["path"].removeprefix(f"s3://{BUCKET}/"): r for r in json.loads(out.stdout)}
    assert set(rows) == set(photos)  # every object has a row, with its s3:// path
    assert rows["in/broken.jpg"]["reason"] == "truncated"  # a JPEG without its end marker (decode branch)
    assert rows["in/small.jpg"]["reason"] == "too_small"
    copies = [rows["in/astronaut.jpg"], rows["in/sub/astronaut_copy.jpg"]]
    assert sorted(r["reason"] or "" for r in copies) == ["", "duplicate"]
    assert sum(r["dup"] for r in copies) == 1
    assert rows["in/sub/coffee.jpg"]["status"] == "accepted"

    again = _cli(tmp_path, env, "ingest", f"s3://{BUCKET}/in", "--source", "bucket")
    assert again.returncode == 0, again.stderr[-3000:]
    count = _cli(tmp_path, env, "query", "SELECT count(*) AS n FROM scans", "--format", "csv")
    assert count.stdout.split() == ["n", str(len(photos))]  # the second run added nothing

    # The accepted images are read back from the store by the shard writer (Ray workers).
    shard = _cli(tmp_path, env, "shard", "--gt-size", "256", "--lq", "none", "--val-fraction", "0")
    assert shard.returncode == 0, shard.stderr[-3000:]
    assert "train: 2 samples written" in shard.stdout
    verify = _cli(tmp_path, env, "verify")
    assert "2 samples, 0 problems" in verify.stdout, verify.stdout + verify.stderr[-2000:]


def test_missing_bucket_prefix_is_a_clear_error(s3_env, tmp_path):
    env, _ = s3_env
    result = _cli(tmp_path, env, "ingest", f"s3://{BUCKET}/nothing-here")
    assert result.returncode == 2
    assert "no such file or folder" in result.stderr
    assert "Traceback" not in result.stderr
