"""A local S3 server (moto) for the object-store lake tests: no network, standard AWS environment."""

import os
import socket
import uuid

import pytest


@pytest.fixture(scope="module")
def s3_server():
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _forget_s3_filesystems()  # fsspec caches S3 filesystems with the endpoint they were made with
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # also for child processes, as on a cluster
    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="lake")
    yield env
    _forget_s3_filesystems()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


@pytest.fixture
def s3_root(s3_server, tmp_path, monkeypatch):
    """A fresh ``s3://lake/<id>`` root; this driver's catalog cache under tmp_path."""
    monkeypatch.setenv("SUPIR_DATA_CATALOG_CACHE", str(tmp_path / "driver-a"))
    return f"s3://lake/{uuid.uuid4().hex[:8]}/data"


def _forget_s3_filesystems():
    """Drop fsspec's cached S3 filesystems: one made for an earlier (stopped) server keeps its endpoint."""
    import fsspec

    fsspec.AbstractFileSystem.clear_instance_cache()
    s3fs = pytest.importorskip("s3fs")
    s3fs.S3FileSystem.clear_instance_cache()
