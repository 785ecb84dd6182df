"""A local S3 server (moto) for the object-store lake tests: no network, standard AWS environment."""

import os
import uuid

import pytest

from tests.s3_server import local_s3


@pytest.fixture(scope="module")
def s3_server():
    boto3 = pytest.importorskip("boto3")
    with local_s3() as env:
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)  # also for child processes, as on a cluster
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="lake")
        yield env
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_root(s3_server, tmp_path, monkeypatch):
    """A fresh ``s3://lake/<id>`` root; this driver's catalog cache under tmp_path."""
    monkeypatch.setenv("SUPIR_DATA_CATALOG_CACHE", str(tmp_path / "driver-a"))
    return f"s3://lake/{uuid.uuid4().hex[:8]}/data"
