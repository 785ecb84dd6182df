"""ingest → shard on a Ray cluster of three nodes, the lake on a local S3 server: same catalog as one node.

`ray.cluster_utils.Cluster` starts a head and two worker nodes on this machine (1 CPU each, each with
its own temp directory, so no node sees another's files). The nodes are started without any AWS
setting: the store's endpoint and credentials reach the workers only through the job's
``runtime_env`` (pipelines.engine.runtime.storage_env), as on a cloud cluster. The CLI joins with
``--ray-address``. The same commands then run on a private single-node Ray over a second prefix;
every row that does not name its run (run ids, timestamps) must be equal, and the tars byte-identical.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from catalogs.catalog import Catalog
from tests.pipelines.object_store_cli import cli, keys, photo_corpus, upload
from tests.s3_server import local_s3

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

INGEST = ("ingest", "s3://photos-multi/in", "--min-side", 96, "--batch-size", 2)  # 6 jobs for 3 CPUs
SHARD = ("shard", "--gt-size", 96, "--lq", "none", "--val-fraction", 0.2, "--max-count", 2)
COMPARED = {
    "scans": "SELECT * EXCLUDE (run_id, ingested_at) FROM scans ORDER BY path",
    "decisions": "SELECT * EXCLUDE (run_id) FROM decisions ORDER BY path",
    "images": "SELECT path, image_id, status, reason, duplicate_of FROM images ORDER BY path",
    "shards": "SELECT shard, split, samples, bytes, sha256, plan_digest FROM shards ORDER BY shard",
}


@pytest.fixture
def cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)  # the nodes must not inherit any store setting from this process
    nodes = Path(tempfile.mkdtemp(prefix="ray-nodes-"))  # short: Ray's socket paths must fit 107 bytes
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "temp_dir": str(nodes / "head"), "include_dashboard": False})  # fmt: skip
    try:
        for i in range(2):
            cluster.add_node(num_cpus=1, temp_dir=str(nodes / f"node{i}"))
        yield cluster, nodes
    finally:
        cluster.shutdown()
        shutil.rmtree(nodes, ignore_errors=True)


def _nodes_that_ran(nodes: Path, task: str) -> set[str]:
    """Nodes (by temp dir) whose workers executed ``task``: Ray marks each task in the worker's log."""
    return {
        node.name
        for node in nodes.iterdir()
        for log in node.glob("session_*/logs/worker-*.out")
        if f":task_name:{task}" in log.read_text(errors="replace")
    }


def _catalog(root: str) -> dict[str, list[dict]]:
    catalog = Catalog(root)
    return {table: catalog.query(sql).to_pylist() for table, sql in COMPARED.items()}


def test_ingest_and_shard_on_three_nodes_equal_one_node(cluster, tmp_path, monkeypatch):
    cluster, nodes = cluster
    with local_s3() as env:
        upload(env, "photos-multi", photo_corpus())
        upload(env, "lake-multi", {})
        env = {**env, "SUPIR_DATA_CATALOG_CACHE": str(tmp_path / "driver")}
        for args in (INGEST, SHARD):
            cli("s3://lake-multi/multi", env, *args, ray_address=cluster.address)
        for args in (INGEST, SHARD):
            cli("s3://lake-multi/single", env, *args, num_cpus=2)

        assert len(_nodes_that_ran(nodes, "run_job")) >= 2  # the work really was spread over nodes
        lake = keys(env, "lake-multi", "multi/")
        assert any(k.startswith("multi/lake/scans/part-") for k in lake)
        assert sum(k.startswith("multi/shards/supir-") and k.endswith(".tar") for k in lake) >= 3
        assert not any(k.endswith(".duckdb") for k in lake)  # the catalog file stays on the driver

        for k, v in env.items():
            monkeypatch.setenv(k, v)
        multi, single = _catalog("s3://lake-multi/multi"), _catalog("s3://lake-multi/single")
    assert len(multi["scans"]) == len(photo_corpus())
    assert sum(r["status"] == "accepted" for r in multi["images"]) >= 6
    assert multi == single
