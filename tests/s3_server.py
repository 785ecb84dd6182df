"""A local S3 server (moto) on a free loopback port, for the object-store tests: no network."""

import socket
from contextlib import contextmanager

import pytest


@contextmanager
def local_s3():
    """Yields the standard AWS environment (credentials, region, endpoint) of a fresh moto server."""
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _forget_s3_filesystems()  # fsspec caches S3 filesystems with the endpoint they were made with
    try:
        yield {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    finally:
        _forget_s3_filesystems()
        server.stop()


def _forget_s3_filesystems():
    """Drop fsspec's cached S3 filesystems: one made for an earlier (stopped) server keeps its endpoint."""
    import fsspec

    fsspec.AbstractFileSystem.clear_instance_cache()
    s3fs = pytest.importorskip("s3fs")
    s3fs.S3FileSystem.clear_instance_cache()
