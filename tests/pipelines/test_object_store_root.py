"""A data root on an object store: ``--root s3://lake/prefix`` through every stage, on a local S3 server.

ingest (photos in another bucket) → caption (tiny LLaVA) → shard → verify → status/report, then the
trainer's reader streams the tars straight from the store. Nothing but the driver's catalog file (in
``$SUPIR_DATA_CATALOG_CACHE``) is written outside the bucket.
"""

import pytest

from catalogs.catalog import Catalog
from tests.pipelines.object_store_cli import cli, keys, photo_corpus, upload
from tests.s3_server import local_s3

pytestmark = pytest.mark.slow
ROOT = "s3://lake-root/run/data"


@pytest.fixture
def s3(tmp_path, monkeypatch):
    with local_s3() as env:
        upload(env, "photos-root", photo_corpus())
        upload(env, "lake-root", {})
        env = {**env, "SUPIR_DATA_CATALOG_CACHE": str(tmp_path / "driver")}
        for k, v in env.items():
            monkeypatch.setenv(k, v)  # this process reads the catalog and the tars too
        yield env


def test_every_stage_with_an_s3_root(s3, tiny_models, tmp_path):
    from supir.reader import ReaderConfig, make_loader

    cli(ROOT, s3, "ingest", "s3://photos-root/in", "--min-side", 96, "--batch-size", 4)
    catalog = Catalog(ROOT)
    accepted = catalog.scalar("SELECT count(*) FROM images WHERE status = 'accepted'")
    assert catalog.scalar("SELECT count(*) FROM scans") == len(photo_corpus()) and accepted >= 6

    cli(ROOT, s3, "caption", "--model", tiny_models["llava"], "--batch-size", 2, "--max-new-tokens", 6)
    assert catalog.scalar("SELECT count(*) FROM latest_captions") == accepted

    out = cli(ROOT, s3, "shard", "--gt-size", 96, "--lq", "precomputed", "--val-fraction", 0, "--max-count", 4)
    assert f"train: {accepted} samples written" in out.stdout
    assert f"manifest: {ROOT}/shards/supir.manifest.json" in out.stdout
    assert "0 problems" in cli(ROOT, s3, "verify").stdout
    again = cli(ROOT, s3, "shard", "--gt-size", 96, "--lq", "precomputed", "--val-fraction", 0, "--max-count", 4)
    assert "0 shards written" in again.stdout  # each tar in the store is checked (size, SHA-256) and reused
    fewer = cli(ROOT, s3, "shard", "--gt-size", 96, "--lq", "precomputed", "--val-fraction", 0, "--max-count", 100)
    assert "1 shards written" in fewer.stdout
    tars = [k for k in keys(s3, "lake-root", "run/data/shards/") if k.endswith(".tar")]
    assert tars == ["run/data/shards/supir-train-000000.tar"]  # the earlier plan's tars were removed
    assert catalog.scalar("SELECT count(*) FROM shards") == 1  # and so were their rows

    assert "accepted" in cli(ROOT, s3, "status").stdout
    cli(ROOT, s3, "report")
    everything = keys(s3, "lake-root", "run/data/")
    assert "run/data/report.html" in everything and "run/data/catalog_settings.json" in everything
    assert not any(k.endswith(".duckdb") for k in everything)
    assert list((tmp_path / "driver").glob("*/catalog.duckdb"))  # the catalog file lives on the driver

    loader = make_loader(ReaderConfig(shards=f"{ROOT}/shards/supir.manifest.json", batch_size=2, crop_size=64,
                                      shuffle_buffer=0, partial_batches=True))  # fmt: skip
    batches = list(loader)
    assert sum(len(b["__key__"]) for b in batches) == accepted and loader.skipped == 0
    assert tuple(batches[0]["lq"].shape[1:]) == (3, 64, 64)


def test_negatives_are_saved_in_the_store_under_the_urls_shard_lists(s3):
    from catalogs.store import Store
    from pipelines.negatives.sdedit import save_negative
    from schemas.tables import NEGATIVES_DIR

    negative_id, url = save_negative(ROOT, b"png bytes")
    assert url == f"{ROOT}/{NEGATIVES_DIR}/{negative_id[:2]}/{negative_id}.png"
    assert save_negative(ROOT, b"png bytes") == (negative_id, url)  # same content, same object
    assert Store(ROOT).sizes(NEGATIVES_DIR) == {url: len(b"png bytes")}  # shard's one listing finds it
