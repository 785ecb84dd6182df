"""Shard writing and reading throughput (issue 5), in one run on this machine.

- Writing, excluding degradation (`--lq none`, GTs already at --gt-size so the original bytes pass
  through): `write_shard` MB/s vs a plain copy of the very same member bytes into tars. Goal >= 0.8.
- Reading: the trainer's reader (decode GT + LQ, aligned 512 crop, prompt, collate to float tensors)
  vs a plain `webdataset.WebDataset(...).decode("rgb8")` loop over the same shards. Goal >= 1.0.
Also recorded (no goal): re-encoding GTs (resize + PNG) and precomputing LQ with the degradation engine.
Results: tests/benchmarks/results/shard.json. Sizes via SUPIR_BENCH_SHARD_IMAGES (default 96).
"""

import io
import json
import os
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import webdataset as wds
from skimage import data as skdata

from catalogs.catalog import Catalog
from pipelines.shard.command import plan_from_catalog, write_shard
from pipelines.shard.plan import ShardConfig
from supir.reader import ReaderConfig, make_loader
from tests.scan_rows import register_scans, scan_row

RESULTS = Path(__file__).parent / "results" / "shard.json"
N_IMAGES = int(os.environ.get("SUPIR_BENCH_SHARD_IMAGES", 96))
SIDE = 1024
READER_GT = 768  # reader shards: 768² GT + LQ, random 512² crops as in training


def _corpus(root: Path) -> None:
    """N distinct 1024² JPEG photos (upscaled scikit-image photos + grain) registered as accepted scans."""
    folder = root / "photos"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()]
    rows = []
    for i in range(N_IMAGES):
        src = photos[i % len(photos)]
        scale = SIDE / min(src.shape[:2]) * rng.uniform(1.0, 1.3)
        big = cv2.resize(src, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        y, x = rng.integers(0, big.shape[0] - SIDE + 1), rng.integers(0, big.shape[1] - SIDE + 1)
        crop = np.clip(big[y : y + SIDE, x : x + SIDE] + rng.normal(0, 2.0, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8)
        path = folder / f"photo_{i:04d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        rows.append(scan_row(path, "bench", run_id="bench"))
    register_scans(root, rows, name="bench")


class _Clock:
    """Wall and process CPU time (all threads): on a shared machine CPU time is the stable measure."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _write_all(root: Path, cfg: ShardConfig, out: Path) -> tuple[_Clock, int, list[str]]:
    plans, _ = plan_from_catalog(Catalog(root), cfg)
    with _Clock() as clock:
        rows = [write_shard(plan, cfg, str(out))["row"] for plan in plans]
    return clock, sum(r["bytes"] for r in rows), [r["path"] for r in rows]


def _plain_copy(root: Path, tars: list[str], out: Path) -> "_Clock":
    """The same members written into tars with tarfile: GT bytes read from the source files (as the
    shard writer does), txt/json from memory."""
    out.mkdir()
    paths = {r["image_id"]: r["path"] for r in Catalog(root).query("SELECT image_id, path FROM images").to_pylist()}
    shards = []
    for tar_path in tars:
        with tarfile.open(tar_path) as tar:
            shards.append([(m.name, None if m.name.split(".", 1)[1].startswith("gt.") else tar.extractfile(m).read())
                           for m in tar.getmembers()])  # fmt: skip
    with _Clock() as clock:
        for i, members in enumerate(shards):
            with open(out / f"copy-{i:06d}.tar", "wb") as fh, tarfile.open(fileobj=fh, mode="w|") as tar:
                for name, data in members:
                    if data is None:
                        data = Path(paths[name.split(".", 1)[0]]).read_bytes()
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                fh.flush()
                os.fsync(fh.fileno())  # the shard writer fsyncs before its rename
    return clock


def _count(iterable, per_item) -> tuple[_Clock, int]:
    with _Clock() as clock:
        n = sum(per_item(item) for item in iterable)
    return clock, n


def _best(clocks: list[_Clock]) -> tuple[float, float]:
    return min(c.wall for c in clocks), min(c.cpu for c in clocks)


def test_bench_shard(tmp_path):
    cv2.setNumThreads(1)
    _corpus(tmp_path)
    common = dict(val_fraction=0.0, max_count=32, lq="none")

    # 1. writing, passthrough, no degradation vs a plain copy of the same bytes (best of 5, interleaved)
    writes, copies = [], []
    for rep in range(5):
        clock, nbytes, tars = _write_all(tmp_path, ShardConfig(gt_size=SIDE, **common), tmp_path / f"pass{rep}")
        writes.append(clock)
        copies.append(_plain_copy(tmp_path, tars, tmp_path / f"copy{rep}"))
    (write_wall, write_cpu), (copy_wall, copy_cpu) = _best(writes), _best(copies)

    # 2. writing with GT re-encoding (resize to 768 + PNG), still without degradation
    reencode, re_bytes, _ = _write_all(tmp_path, ShardConfig(gt_size=READER_GT, **common), tmp_path / "reenc")

    # 3. precomputed LQ (degradation engine, CPU) at 768: the reader's shards
    reader_cfg = ShardConfig(gt_size=READER_GT, val_fraction=0.0, max_count=32, lq="precomputed")
    with_lq, lq_bytes, reader_tars = _write_all(tmp_path, reader_cfg, tmp_path / "lq")

    # 4. reading: our loader vs a plain webdataset decode loop over the same tars (best of 3, interleaved)
    loader = make_loader(ReaderConfig(shards=reader_tars, batch_size=8, crop_size=512, shuffle_buffer=64,
                                      partial_batches=True))  # fmt: skip
    plains, readers = [], []
    for _ in range(3):
        clock, plain_n = _count(wds.WebDataset(reader_tars, shardshuffle=False).decode("rgb8"), lambda s: 1)
        plains.append(clock)
        clock, reader_n = _count(loader, lambda b: len(b["__key__"]))
        readers.append(clock)
    assert reader_n == plain_n == N_IMAGES and loader.skipped == 0
    (plain_wall, plain_cpu), (reader_wall, reader_cpu) = _best(plains), _best(readers)

    mb = nbytes / 1e6
    result = {
        "machine": f"{os.cpu_count()} CPUs shared with other jobs; one process, cv2 threads 1",
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "images": N_IMAGES,
        "write_passthrough_no_degradation": {
            "MB": round(mb, 1),
            "shard_MBps_wall": round(mb / write_wall, 1), "plain_copy_MBps_wall": round(mb / copy_wall, 1),
            "ratio_wall": round(copy_wall / write_wall, 3),
            "shard_MBps_cpu": round(mb / write_cpu, 1), "plain_copy_MBps_cpu": round(mb / copy_cpu, 1),
            "ratio_cpu": round(copy_cpu / write_cpu, 3), "goal": 0.8, "best_of": 5,
        },
        "write_reencode_png_768_no_degradation": {
            "MB": round(re_bytes / 1e6, 1), "samples_per_s_wall": round(N_IMAGES / reencode.wall, 2),
            "samples_per_s_cpu": round(N_IMAGES / reencode.cpu, 2),
        },
        "write_precomputed_lq_768": {
            "MB": round(lq_bytes / 1e6, 1), "samples_per_s_wall": round(N_IMAGES / with_lq.wall, 2),
            "samples_per_s_cpu": round(N_IMAGES / with_lq.cpu, 2),
        },
        "read_768_crop_512": {
            "reader_samples_per_s_wall": round(N_IMAGES / reader_wall, 1),
            "plain_wds_decode_samples_per_s_wall": round(N_IMAGES / plain_wall, 1),
            "ratio_wall": round(plain_wall / reader_wall, 3),
            "reader_samples_per_s_cpu": round(N_IMAGES / reader_cpu, 1),
            "plain_wds_decode_samples_per_s_cpu": round(N_IMAGES / plain_cpu, 1),
            "ratio_cpu": round(plain_cpu / reader_cpu, 3), "goal": 1.0, "best_of": 3,
            "batch_size": 8, "num_workers": 0,
        },
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
