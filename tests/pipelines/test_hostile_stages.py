"""The hostile corpus (tests/pipelines/hostile_corpus.py) fed to the model and shard stages.

Every corpus path is registered as an accepted image, as if ingest had let it through, so each stage
meets the same bombs, raisers and truncated files in its own decoding path. Property, per stage: the
command exits 0 and every path is accounted for exactly once (a row of the stage's table, a
`failures` row, or a counted skipped sample).
"""

import hashlib
import json

import pytest

from catalogs.catalog import Catalog
from schemas.runs import utc_now
from tests.pipelines.hostile_corpus import build_hostile_corpus
from tests.scan_rows import register_scans

EVERY = 6  # every 6th mutated file, with every bomb and non-image: the stages' decode paths, kept quick


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory):
    corpus = build_hostile_corpus(tmp_path_factory.mktemp("hostile"), public=False)
    mutated = [p for p in corpus if p.parent.name == "mutated"]
    paths = [p for p in corpus if p.parent.name != "mutated"] + mutated[::EVERY]
    root = tmp_path_factory.mktemp("hostile-root")
    rows = [
        {"path": str(p), "source": "hostile", "image_id": hashlib.sha256(str(p).encode() + p.read_bytes()).hexdigest(),
         "bytes": p.stat().st_size, "width": 128, "height": 128, "run_id": "test", "ingested_at": utc_now()}
        for p in paths
    ]  # fmt: skip
    register_scans(root, rows, name="hostile")
    return root, {r["image_id"]: r["path"] for r in rows}


def test_caption_gives_every_path_one_row(hostile_root, ray_cluster, run_cli, tiny_models):
    root, ids = hostile_root
    run_cli(root, "caption", "--model", tiny_models["llava"], "--batch-size", 8, "--part-rows", 32,
            "--max-new-tokens", 4)  # fmt: skip
    rows = Catalog(root).query("SELECT image_id, count(*) AS n FROM captions GROUP BY image_id").to_pylist()
    assert {r["image_id"] for r in rows} == set(ids) and {r["n"] for r in rows} == {1}


def test_negatives_account_for_every_path_once(hostile_root, ray_cluster, run_cli, tiny_models):
    root, ids = hostile_root
    run_cli(root, "negatives", "--model", tiny_models["sdxl"], "--count", len(ids), "--steps", 2,
            "--resolution", 32, "--part-rows", 16)  # fmt: skip
    cat = Catalog(root)
    made = cat.query("SELECT image_id FROM negatives").column("image_id").to_pylist()
    failed = cat.query("SELECT key FROM failures WHERE stage = 'negatives'").column("key").to_pylist()
    accounted = made + [k.split(":")[0] for k in failed]
    assert sorted(accounted) == sorted(ids)


def test_shard_accounts_for_every_path_once(hostile_root, ray_cluster, run_cli):
    root, ids = hostile_root
    run_cli(root, "shard", "--gt-size", 32, "--lq", "none", "--val-fraction", 0, "--max-count", 64)
    manifest = json.loads((root / "shards" / "supir.manifest.json").read_text())
    report = manifest["report"]
    planned = sum(s["planned"] for s in report["splits"].values())
    written = sum(s["written"] for s in report["splits"].values())
    negatives = Catalog(root).scalar("SELECT count(*) FROM negatives")
    assert report["failed_shards"] == [] and planned == len(ids) + negatives  # every path planned once
    assert written + sum(report["skipped_samples"].values()) == planned  # ...and written or counted once
