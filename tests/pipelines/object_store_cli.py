"""Helpers of the object-store root tests: a tiny photo corpus in a bucket and the CLI as a subprocess.

The CLI runs in its own process (own Ray, or ``--ray-address`` of a test cluster) because the
store's endpoint and credentials must reach Ray's workers through the job's environment, as on a
real cluster; the shared test Ray was started without them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from pipelines.devtools.demo_corpus import encode

REPO = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field")
SIDE = 160  # small: moto is single-threaded and every part read is a few HTTP requests


def client(env: dict):
    import boto3

    return boto3.client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"],
    )  # fmt: skip


def photo_corpus() -> dict[str, bytes]:
    """12 objects: 10 distinct photos (5 pictures, each also mirrored), one exact copy, one broken JPEG."""
    from skimage import data as skdata

    files = {}
    for name in PHOTOS:
        rgb = getattr(skdata, name)()
        rgb = cv2.resize(rgb, None, fx=SIDE / min(rgb.shape[:2]), fy=SIDE / min(rgb.shape[:2]),
                         interpolation=cv2.INTER_AREA)  # fmt: skip
        files[f"in/{name}.jpg"] = encode(rgb, "JPEG", quality=95)
        files[f"in/mirrored/{name}.jpg"] = encode(np.ascontiguousarray(rgb[:, ::-1]), "JPEG", quality=95)
    files["in/copies/coffee.jpg"] = files["in/coffee.jpg"]
    files["in/broken.jpg"] = b"\xff\xd8\xff\xe0 not really a jpeg"
    return files


def upload(env: dict, bucket: str, files: dict[str, bytes]) -> None:
    s3 = client(env)
    s3.create_bucket(Bucket=bucket)
    for key, body in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def cli(root, env: dict, *args, ray_address: str | None = None, num_cpus: int = 2, timeout: int = 600):
    """``supir-data --root ROOT ARGS`` in a subprocess; fails loudly with its stderr on a non-zero exit."""
    ray = ["--ray-address", ray_address] if ray_address else ["--num-cpus", str(num_cpus)]
    cmd = [sys.executable, "-m", "pipelines", "--root", str(root), *ray, *map(str, args)]
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    result = subprocess.run(cmd, env=full_env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"supir-data {' '.join(map(str, args))}:\n{result.stdout}\n{result.stderr[-4000:]}"
    return result


def query(root, env: dict, sql: str) -> list[dict]:
    return json.loads(cli(root, env, "query", sql, "--format", "json").stdout)


def keys(env: dict, bucket: str, prefix: str) -> list[str]:
    """Every object key under ``prefix`` (paginated)."""
    pages = client(env).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
