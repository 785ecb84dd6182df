"""Ingest with the data root on an object store vs a local folder (issue 15, object-store root).

The same ~500 generated 2–4 MP JPEGs (the ingest benchmark's corpus, read from local disk in both
runs) are ingested into a fresh root twice each, alternating: a local folder and
``s3://bench/<n>`` on the local S3 server (moto, in this process, single-threaded). Ray is warm and
its workers have the server's endpoint. What differs is only the lake: part uploads, the listing
that registers them, DuckDB reading the parts through fsspec for dedup and the catalog's views.
Reported: the best wall time of each and their ratio (s3 / local). No goal is set by the issue; a
real S3 endpoint adds network latency per request that this local server does not have.
Results: tests/benchmarks/results/ingest_s3.json.
"""

import json
import os
import time
from pathlib import Path

import pytest

from pipelines.engine.runtime import Settings, init_ray
from pipelines.ingest.command import IngestOptions, run_ingest
from tests.benchmarks.test_bench_ingest import CPUS, N_IMAGES, _make_corpus
from tests.s3_server import local_s3

RESULTS = Path(__file__).parent / "results" / "ingest_s3.json"
REPEATS = 2


@pytest.mark.timeout(3600)
def test_ingest_s3_root_vs_local_root(tmp_path, monkeypatch):
    import boto3
    import ray

    corpus = tmp_path / "corpus"
    _make_corpus(corpus, N_IMAGES)
    files = sorted(str(p) for p in corpus.iterdir())
    with local_s3() as env:
        for k, v in {**env, "SUPIR_DATA_CATALOG_CACHE": str(tmp_path / "driver")}.items():
            monkeypatch.setenv(k, v)
        boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench")
        if ray.is_initialized():
            ray.shutdown()  # a Ray started by an earlier benchmark lacks the server's endpoint
        init_ray(Settings(root=str(tmp_path), num_cpus=CPUS))
        try:
            # Warm every worker (imports) on both kinds of root.
            for root in (str(tmp_path / "warm"), "s3://bench/warm"):
                run_ingest(Settings(root=root, num_cpus=CPUS), IngestOptions(paths=files[: 8 * CPUS], batch_size=1),
                           show_progress=False)  # fmt: skip
            seconds: dict[str, list[float]] = {"local": [], "s3": []}
            for i in range(REPEATS):
                for kind, root in (("local", str(tmp_path / f"local{i}")), ("s3", f"s3://bench/run{i}")):
                    t0 = time.perf_counter()
                    result = run_ingest(Settings(root=root, num_cpus=CPUS), IngestOptions(paths=[str(corpus)]),
                                        show_progress=False)  # fmt: skip
                    seconds[kind].append(time.perf_counter() - t0)
                    assert result.scanned == N_IMAGES
            parts = len(boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).list_objects_v2(
                Bucket="bench", Prefix="run0/lake/scans/")["Contents"])  # fmt: skip
        finally:
            ray.shutdown()
    local, s3 = min(seconds["local"]), min(seconds["s3"])
    out = {
        "images": N_IMAGES, "cores": CPUS, "load_average_1m": round(os.getloadavg()[0], 2),
        "local_root_s": round(local, 2), "s3_root_s": round(s3, 2), "ratio_s3_over_local": round(s3 / local, 3),
        "local_images_per_s": round(N_IMAGES / local, 1), "s3_images_per_s": round(N_IMAGES / s3, 1),
        "all_runs_s": {k: [round(x, 2) for x in v] for k, v in seconds.items()}, "scans_parts_in_store": parts,
        "note": "images read from local disk in both; root = local folder vs s3:// on a local moto server "
                "(in the benchmark's process); best of alternating runs, Ray warm.",
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
