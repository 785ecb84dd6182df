"""`supir-data shard`: catalog → deterministic, resumable WebDataset tars + `shards` rows + manifest."""

import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from catalogs.catalog import Catalog
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.stage import Limits
from pipelines.shard.command import ShardTar, plan_from_catalog, write_shard
from pipelines.shard.plan import SamplePlan, ShardConfig, pack_shards, parse_size, select_samples
from pipelines.shard.sample import make_gt, make_sample
from pipelines.shard.stage import ShardStage
from schemas.errors import ConfigError
from schemas.sample import META_FIELDS, is_valid_key, split_of
from supir.degradation import preset, rng_for, sample_recipe
from supir.reader import ReaderConfig, make_loader
from tests.pipelines.shard_corpus import build_catalog

SHARD_ARGS = ["--gt-size", 96, "--max-count", 4, "--val-fraction", 0.2, "--seed", 7]  # --lq precomputed


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, ray_cluster):
    """One catalog sharded once (module-wide): (root, manifest, scan rows)."""
    from click.testing import CliRunner

    from pipelines.cli import cli

    root = tmp_path_factory.mktemp("shard-root")
    scans = build_catalog(root)
    result = CliRunner().invoke(cli, ["--root", str(root), "shard", *map(str, SHARD_ARGS)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((root / "shards" / "supir.manifest.json").read_text())
    return root, manifest, scans, result.output


def test_shards_hold_every_accepted_image_and_negative_with_spec_members(sharded):
    root, manifest, scans, output = sharded
    assert "train:" in output and "manifest:" in output
    names = sorted(p.name for p in (root / "shards").glob("*.tar"))
    assert names == sorted(e["shard"] for s in manifest["splits"].values() for e in s["shards"])
    assert names[0] == "supir-train-000000.tar"
    samples = {}
    for name in names:
        with tarfile.open(root / "shards" / name) as tar:
            members = tar.getmembers()
            assert all(m.mtime == 0 and m.uname == "supir" for m in members)  # reproducible headers
            assert len(members) <= 4 * 4  # --max-count 4, four members each
            for m in members:
                key, _, ext = m.name.partition(".")
                assert is_valid_key(key)
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    positives = {k: v for k, v in samples.items() if not k.startswith("neg-")}
    assert set(positives) == {s["image_id"] for s in scans}
    assert len(samples) - len(positives) == 3  # every negative once (no --negatives-fraction)
    by_id = {s["image_id"]: s for s in scans}
    rows = Catalog(root).query("SELECT image_id, caption FROM latest_captions").to_pylist()
    captions = {r["image_id"]: r["caption"] for r in rows}
    assert 0 < len(captions) < len(scans)
    val_keys = set()
    for entry in manifest["splits"]["val"]["shards"]:
        with tarfile.open(root / "shards" / entry["path"]) as tar:
            val_keys |= {m.name.partition(".")[0] for m in tar.getmembers()}
    assert val_keys
    for key, sample in samples.items():
        meta = json.loads(sample["json"])
        assert set(META_FIELDS) <= set(meta) and meta["seed"] == 7
        gt_member = next(m for m in sample if m.startswith("gt."))
        gt = Image.open(io.BytesIO(sample[gt_member]))
        assert gt.size == (96, 96) and Image.open(io.BytesIO(sample["lq.png"])).size == (96, 96)
        recipe = sample_recipe(preset("supir"), rng_for(7, key)).to_dict()  # reproducible from the json
        assert meta["degradation"] == json.loads(json.dumps(recipe))
        assert split_of(meta["image_id"], 0.2) == ("val" if key in val_keys else "train")
        if meta["is_negative"]:
            assert sample["txt"] == b"oil painting, cartoon, blur" and meta["quality"] is None
            continue
        scan = by_id[key]
        assert meta["source"] == scan["source"] and meta["original_size"] == [scan["width"], scan["height"]]
        assert sample["txt"].decode() == captions.get(key, "")  # the latest caption; "" when none yet
        assert meta["caption_model"] == ("tiny-llava" if key in captions else None)
        if (scan["width"], scan["height"]) == (96, 96):  # nothing to crop: original bytes pass through
            assert sample[gt_member] == Path(scan["path"]).read_bytes()
        else:
            assert gt_member == "gt.png"
            left, top, right, bottom = meta["crop_box"]
            assert right - left == bottom - top == min(scan["width"], scan["height"])


def test_catalog_rows_and_manifest_agree_with_the_files(sharded):
    root, manifest, _, _ = sharded
    rows = Catalog(root).query("SELECT shard, split, path, samples, bytes, sha256, run_id FROM shards").to_pylist()
    entries = {e["shard"]: e for s in manifest["splits"].values() for e in s["shards"]}
    assert {r["shard"] for r in rows} == set(entries)
    for row in rows:
        assert row["sha256"] == _sha(row["path"]) == entries[row["shard"]]["sha256"]
        assert row["bytes"] == Path(row["path"]).stat().st_size and row["run_id"].startswith("shard-")
    train = manifest["splits"]["train"]
    assert train["pattern"] == f"supir-train-{{000000..{len(train['shards']) - 1:06d}}}.tar"
    assert train["samples"] == sum(e["samples"] for e in train["shards"])
    assert not list((root / "shards").glob(".*tmp*"))  # temp names were renamed


def test_verify_passes_and_the_reader_yields_training_batches(sharded, run_cli):
    root, manifest, _, _ = sharded
    assert "0 problems" in run_cli(root, "verify").output
    loader = make_loader(ReaderConfig(shards=str(root / "shards" / "supir.manifest.json"), batch_size=3, crop_size=64))
    batches = list(loader)
    assert len(batches) == manifest["splits"]["train"]["samples"] // 3 and loader.skipped == 0
    for batch in batches:
        assert batch["gt"].shape == batch["lq"].shape == (3, 3, 64, 64)
        assert -1.0 <= batch["lq"].min() < batch["lq"].max() <= 1.0
        assert not batch["gt"].equal(batch["lq"])  # a degraded LQ, not a copy
    negatives = [t for b in batches for t, n in zip(b["txt"], b["is_negative"]) if n]
    assert negatives and set(negatives) <= {"oil painting, cartoon, blur", ""}


def test_plain_webdataset_and_ray_data_read_the_tars(sharded, ray_cluster):
    root, manifest, _, _ = sharded
    url = manifest["splits"]["train"]["url"]
    plain = list(wds.WebDataset(url, shardshuffle=False).decode("rgb8"))
    assert len(plain) == manifest["splits"]["train"]["samples"]
    assert all(s["json"]["image_id"] for s in plain)
    assert any(isinstance(s.get("gt.png"), np.ndarray) for s in plain)
    paths = [str(root / "shards" / e["path"]) for e in manifest["splits"]["train"]["shards"]]
    # Raw bytes: Ray's default decoder casts each column to one tensor type, which fails when a
    # column is absent in some rows (gt.jpg passed through next to re-encoded gt.png).
    rows = ray_cluster.data.read_webdataset(paths, decoder=None).take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(s["__key__"] for s in plain)
    assert all(json.loads(r["json"])["image_id"] for r in rows)


def test_rerun_is_idempotent_and_resumes_a_missing_shard(sharded, run_cli):
    root, manifest, _, _ = sharded
    before = {p.name: _sha(p) for p in (root / "shards").glob("*.tar")}
    result = run_cli(root, "shard", *SHARD_ARGS)
    assert f"0 shards written, {len(before)} already done" in result.output
    victim = root / "shards" / "supir-train-000001.tar"
    victim.unlink()
    result = run_cli(root, "shard", *SHARD_ARGS)
    assert f"1 shards written, {len(before) - 1} already done" in result.output
    assert {p.name: _sha(p) for p in (root / "shards").glob("*.tar")} == before
    assert json.loads((root / "shards" / "supir.manifest.json").read_text())["splits"] == manifest["splits"]


def test_same_name_in_another_folder_writes_the_tars_there(sharded, tmp_path, run_cli):
    """A shard counts as done only where its tar is, with the recorded size and SHA-256."""
    root, manifest, _, _ = sharded
    before = {p.name: _sha(p) for p in (root / "shards").glob("*.tar")}
    out = tmp_path / "copy"
    result = run_cli(root, "shard", *SHARD_ARGS, "--out", out)
    assert f"{len(before)} shards written, 0 already done" in result.output
    assert {p.name: _sha(p) for p in out.glob("*.tar")} == before
    listed = json.loads((out / "supir.manifest.json").read_text())
    assert all((out / e["path"]).is_file() for split in listed["splits"].values() for e in split["shards"])

    victim = out / "supir-train-000000.tar"
    victim.write_bytes(victim.read_bytes()[:-1] + b"x")  # same size, other bytes
    result = run_cli(root, "shard", *SHARD_ARGS, "--out", out)
    assert f"1 shards written, {len(before) - 1} already done" in result.output
    assert _sha(victim) == before[victim.name]
    run_cli(root, "shard", *SHARD_ARGS)  # back home: the catalog's rows point at ROOT/shards again
    shutil.rmtree(out)


def test_same_catalog_and_seed_give_identical_bytes_whatever_the_worker_count(sharded, tmp_path):
    """Ray (2 workers, any order) vs the pure writer run in this process in reverse order."""
    root, manifest, _, _ = sharded
    cfg = ShardConfig(gt_size=96, max_count=4, val_fraction=0.2, seed=7)
    plans, _ = plan_from_catalog(Catalog(root), cfg)
    for plan in reversed(plans):
        row = write_shard(plan, cfg, str(tmp_path))["row"]
        assert row["sha256"] == _sha(root / "shards" / plan.shard)
    other, _ = plan_from_catalog(Catalog(root), ShardConfig(gt_size=96, max_count=4, val_fraction=0.2, seed=8))
    assert [p.digest for p in other] != [p.digest for p in plans]  # the seed orders samples


def test_size_and_count_limits_hold(sharded, tmp_path):
    root, _, _, _ = sharded
    cfg = ShardConfig(gt_size=96, lq="none", max_count=100, max_size=200_000, val_fraction=0.0)
    plans, _ = plan_from_catalog(Catalog(root), cfg)
    assert len(plans) > 1
    for plan in plans:
        row = write_shard(plan, cfg, str(tmp_path))["row"]
        assert 0 < row["bytes"] <= 200_000


def test_missing_source_file_is_skipped_and_counted(tmp_path, run_cli, ray_cluster):
    scans = build_catalog(tmp_path, n_images=4, n_negatives=0)
    Path(scans[1]["path"]).unlink()
    result = run_cli(tmp_path, "shard", "--gt-size", 96, "--lq", "none", "--val-fraction", 0)
    assert "'missing_file': 1" in result.output
    manifest = json.loads((tmp_path / "shards" / "supir.manifest.json").read_text())
    assert manifest["splits"]["train"]["samples"] == 3


def test_bad_options_fail_with_a_clear_message(tmp_path, run_cli):
    result = run_cli(tmp_path, "shard", "--max-size", "lots", expect_exit=1)  # in-process: the error object
    assert isinstance(result.exception, ConfigError) and "--max-size 'lots'" in str(result.exception)
    assert parse_size("1GB") == 10**9 and parse_size("512MiB") == 2**29
    with pytest.raises(ConfigError, match="negatives-fraction"):
        ShardConfig(negatives_fraction=1.5)


def _rows(n: int, source: str, offset: int = 0) -> list[dict]:
    return [{"image_id": f"{source}{i + offset:060d}", "path": f"/x/{source}{i}", "source": source,
             "width": 2048, "height": 1536, "bytes": 100} for i in range(n)]  # fmt: skip


def test_source_weights_and_negatives_fraction_are_honoured_within_sampling_error():
    positives = _rows(2000, "aaaa") + _rows(2000, "bbbb")
    negatives = [{"negative_id": f"{i:064x}", "image_id": r["image_id"], "path": "/n", "prompt": "p",
                  "width": 1024, "height": 1024, "source": r["source"]} for i, r in enumerate(positives[:3000])]  # fmt: skip
    cfg = ShardConfig(val_fraction=0.0, source_weights=(("aaaa", 0.5), ("bbbb", 2.0)), negatives_fraction=0.2)
    selected, report = select_samples(cfg, positives, negatives)
    train = selected["train"]
    counts = {s: sum(1 for x in train if x.source == s and not x.is_negative) for s in ("aaaa", "bbbb")}
    assert abs(counts["aaaa"] - 1000) < 4 * np.sqrt(2000 * 0.25)  # binomial(2000, 0.5)
    assert counts["bbbb"] == 4000  # a whole weight repeats every image
    assert len({x.key for x in train}) == len(train)  # repeats get their own keys
    fraction = sum(x.is_negative for x in train) / len(train)
    assert abs(fraction - 0.2) < 0.02
    assert report["negatives"]["train"]["available"] == 3000


def test_split_is_stable_as_the_catalog_grows():
    small, _ = select_samples(ShardConfig(val_fraction=0.1), _rows(500, "aaaa"), [])
    grown, _ = select_samples(ShardConfig(val_fraction=0.1), _rows(1000, "aaaa"), [])
    val_small = {s.image_id for s in small["val"]}
    assert val_small and val_small == {s.image_id for s in grown["val"] if s.image_id in {r["image_id"] for r in _rows(500, "aaaa")}}
    assert 0.05 < len(grown["val"]) / 1000 < 0.15


def test_plan_respects_the_size_bound():
    selected, _ = select_samples(ShardConfig(val_fraction=0.0, gt_size=512), _rows(50, "aaaa"), [])
    plans = pack_shards(ShardConfig(gt_size=512, max_size=3_500_000), selected)
    assert len(plans) == 25 and all(len(p.samples) == 2 for p in plans)  # ~1.6 MB bound per 512² PNG pair


def test_shard_dir_can_be_elsewhere_and_stale_shards_go(sharded, tmp_path, run_cli):
    root, _, _, _ = sharded
    out = tmp_path / "elsewhere"
    args = ["--gt-size", 96, "--lq", "none", "--val-fraction", 0.2]
    run_cli(root, "shard", "--name", "other", "--out", out, *args, "--max-count", 2)
    many = sorted(p.name for p in out.glob("other-*.tar"))
    (out / ".other-train-000000.tar.tmp-deadbeef").write_bytes(b"half a shard from a killed task")
    run_cli(root, "shard", "--name", "other", "--out", out, *args, "--max-count", 100)
    assert not list(out.glob(".*tmp*"))
    few = sorted(p.name for p in out.glob("other-*.tar"))
    assert len(few) < len(many) and few == ["other-train-000000.tar", "other-val-000000.tar"]
    shutil.rmtree(out)


def test_end_to_end_from_a_folder_of_photos(tmp_path, run_cli, ray_cluster):
    """ingest → shard → verify → reader, all through the real CLI (no captions: positive prompt only)."""
    import cv2
    from skimage import data as skdata

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(["astronaut", "coffee", "chelsea", "rocket"]):
        array = getattr(skdata, name)()
        array = cv2.resize(array, None, fx=128 / min(array.shape[:2]), fy=128 / min(array.shape[:2]), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(photos / f"p{i}.jpg"), cv2.cvtColor(array, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    root = tmp_path / "root"
    run_cli(root, "ingest", photos, "--min-side", 96)
    assert "train: 4 samples written" in run_cli(root, "shard", "--gt-size", 96, "--val-fraction", 0).output
    assert "4 samples, 0 problems" in run_cli(root, "verify").output
    batch = next(iter(make_loader(ReaderConfig(shards=str(root / "shards" / "supir.manifest.json"), batch_size=4, crop_size=96))))
    assert batch["gt"].shape == batch["lq"].shape == (4, 3, 96, 96) and batch["is_negative"].sum() == 0
    assert all(t == "" or t.startswith("Cinematic") for t in batch["txt"])


def _sample_plan(width: int, height: int, key: str = "k" * 64, seed: int = 0) -> SamplePlan:
    return SamplePlan(key=key, image_id=key, negative_id=None, path="mem", source="s", is_negative=False,
                      caption="c", caption_model=None, quality=None, width=width, height=height, format=None,
                      mode=None, bytes=0, crop_seed=seed)  # fmt: skip


def _jpeg(array: np.ndarray, orientation: int = 1) -> bytes:
    img, buf = Image.fromarray(array), io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def test_gt_box_resize_native_crop_exif_and_passthrough():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    data = _jpeg(array)
    member, blob, rgb, box, size = make_gt(ShardConfig(gt_size=96), _sample_plan(200, 120), data)
    assert (member, box, size, rgb.shape) == ("gt.png", [40, 0, 160, 120], [200, 120], (96, 96, 3))
    _, _, _, box, _ = make_gt(ShardConfig(gt_size=96, resize=False), _sample_plan(200, 120), data)
    assert box == [52, 12, 148, 108]  # native-resolution 96² centre crop
    boxes = {tuple(make_gt(ShardConfig(gt_size=96, crop="random"), _sample_plan(200, 120, seed=s), data)[3]) for s in range(6)}
    assert len(boxes) > 1 and all(b[2] - b[0] == 120 and b[1] == 0 for b in boxes)
    # EXIF orientation 6 (rotate 90°): the oriented image is 120 wide, 200 high; never passed through
    member, blob, _, box, size = make_gt(ShardConfig(gt_size=0), _sample_plan(120, 200), _jpeg(array, 6))
    assert (member, size, box) == ("gt.png", [120, 200], [0, 0, 120, 200]) and blob != _jpeg(array, 6)
    member, blob, rgb, _, _ = make_gt(ShardConfig(gt_size=0, lq="none"), _sample_plan(200, 120), data)
    assert (member, blob, rgb) == ("gt.jpg", data, None)  # whole image wanted: original bytes


def test_shard_tar_bytes_equal_webdatasets_tarwriter():
    """ShardTar writes exactly what webdataset's TarWriter writes with fixed mtime/owner."""
    samples = [{"__key__": f"k{i}", "gt.png": bytes(range(256)) * (i * 3 + 1), "txt": b"x" * i, "json": b"{}"}
               for i in range(5)]  # fmt: skip
    theirs, ours = io.BytesIO(), io.BytesIO()
    with wds.TarWriter(theirs, encoder=False, mtime=0, user="supir", group="supir") as writer:
        for sample in samples:
            writer.write(sample)
    tar = ShardTar(ours)
    for sample in samples:
        tar.write(sample)
    tar.close()
    assert ours.getvalue() == theirs.getvalue() and tar.size == len(ours.getvalue())
    assert tar.sha256.hexdigest() == hashlib.sha256(theirs.getvalue()).hexdigest()


@pytest.mark.parametrize(
    "path,reason",
    [("/no/such/file.jpg", "missing_file"), ("nosuchproto://bucket/x.jpg", "unreadable"), ("/bad\0path", "unreadable")],
)
def test_unreadable_sources_are_skipped_with_a_reason(path, reason):
    import dataclasses

    from pipelines.shard.command import _read
    from pipelines.shard.sample import SampleSkipped

    with pytest.raises(SampleSkipped) as info:
        _read(dataclasses.replace(_sample_plan(8, 8), path=path))
    assert info.value.reason == reason


class CrashingShardStage(ShardStage):
    """The real shard stage, except that decoding the sample of ``victim`` kills the worker (SIGSEGV) or
    hangs it, as a native decoder bug would; every other sample is made by the real code."""

    def __init__(self, cfg, out_dir, run_id, victim: str, how: str = "segv"):
        super().__init__(cfg, out_dir, run_id)
        self.victim, self.how = victim, how

    def process_item(self, item):
        import pipelines.shard.stage as shard_stage

        real, victim, how = make_sample, self.victim, self.how

        def make(cfg, sample, data):
            if sample.path == victim:
                if how == "hang":
                    signal.pause()  # blocks until a signal arrives: the watchdog's
                os.kill(os.getpid(), signal.SIGSEGV)
            return real(cfg, sample, data)

        shard_stage.make_sample = make
        try:
            return super().process_item(item)
        finally:
            shard_stage.make_sample = real


@pytest.mark.parametrize(("how", "reason", "words"), [("segv", "crashed", "fatal signal"),
                                                     ("hang", "timeout", "over the time limit")])
def test_a_native_crash_on_one_sample_costs_that_sample_not_the_shard(tmp_path, ray_cluster, how, reason, words):
    scans = build_catalog(tmp_path, n_images=6, n_negatives=0)
    cfg = ShardConfig(gt_size=96, lq="none", val_fraction=0.0, max_count=100)
    (plan,), _ = plan_from_catalog(Catalog(tmp_path), cfg)
    victim = plan.samples[2].path
    assert len(plan.samples) == 6 and victim in {s["path"] for s in scans}
    out = tmp_path / "out"
    out.mkdir()
    stage = CrashingShardStage(cfg, str(out), "run-crash", victim, how)
    stats = run_stage(stage, [{"plan": plan, "done": None}], str(tmp_path), "run-crash",
                      Plan(part_items=1, limits=Limits(item_seconds=4)), show_progress=False)
    (row,) = stats.collected
    assert stats.outcomes == {"written": 1}
    assert row["samples"] == 5 and row["skipped"] == {reason: 1}
    # The tar is the shard without the victim, byte for byte, as the writer makes it in this process.
    rest = dataclasses.replace(plan, samples=[s for s in plan.samples if s.path != victim])
    alone = tmp_path / "alone"
    alone.mkdir()
    assert write_shard(rest, cfg, str(alone))["row"]["sha256"] == _sha(out / plan.shard) == row["sha256"]
    catalog = Catalog(tmp_path)
    catalog.refresh()  # run_stage wrote the parts; the command registers them
    failures = catalog.query("SELECT * FROM failures").to_pylist()
    assert [(f["stage"], f["key"], f["reason"]) for f in failures] == [("shard", victim, reason)]
    assert words in failures[0]["detail"] and f"input 2 of {plan.shard}" in failures[0]["detail"]
    # The plan kept its digest: a rerun of the same plan finds the shard done and reuses it.
    assert ShardStage(cfg, str(out), "run-again").process_item({"plan": plan, "done": row})["reused"]
