"""pipelines.ingest.topup: a top-up's decisions equal a full recomputation, whatever the sequence.

Random top-up sequences over real DuckDB catalogs and the real decide code: two roots get the same
`scans` (and `iqa_scores`) parts run after run; one decides incrementally, the other with
``full=True``; after every run their `decisions` must be equal. The rows are built so that top-ups
hit every case: new near duplicates of old groups, a new row bridging two old groups, exact copies
whose new path becomes the group's representative, files scanned again with new content, model
scores added to old images, rejected and hash-less rows, unreadable files (signal order), compaction
between runs, a crash between writing the decisions and their state, a removed part (full pass).
"""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from catalogs.catalog import Catalog
from catalogs.compaction import compact_table
from catalogs.lake import list_parts, write_part
from pipelines.ingest.decide import decide
from pipelines.ingest.quality import Bounds, QualityThresholds
from pipelines.ingest.topup import STATE_FILE

DISTANCE = 4
COMPARED = "SELECT path, source, status, reason, duplicate_of FROM decisions ORDER BY ALL"


class Corpus:
    """Random rows with real image files: clusters of degraded copies of a few pictures."""

    def __init__(self, folder: Path, rng: np.random.Generator, clusters: int = 10):
        self.folder, self.rng = folder, rng
        self.bases = rng.integers(0, 2**63, clusters, dtype=np.uint64)
        self.bases[1] = self.bases[0] ^ np.uint64(0xFF)  # 8 bits apart: a code between them bridges two groups
        self.pictures = [self._picture() for _ in range(clusters)]
        self.rows: list[dict] = []
        self.count = 0

    def _picture(self) -> np.ndarray:
        coarse = self.rng.random((8, 8, 3)).astype(np.float32) * 255
        fine = self.rng.normal(0, 12, (64, 64, 3)).astype(np.float32)
        return np.clip(cv2.resize(coarse, (64, 64), interpolation=cv2.INTER_CUBIC) + fine, 0, 255).astype(np.uint8)

    def _file(self, cluster: int) -> tuple[Path, int, int, float | None]:
        img, quality = self.pictures[cluster], None
        kind = self.rng.integers(0, 4)
        if kind == 1:
            img = cv2.GaussianBlur(img, (0, 0), float(self.rng.uniform(0.8, 2.0)))
        elif kind == 2:
            img = np.clip(img + self.rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
        elif kind == 3:
            img = cv2.resize(img, (96, 96), interpolation=cv2.INTER_CUBIC)
        self.count += 1
        if self.rng.random() < 0.4:
            quality = float(self.rng.choice([40, 75, 95]))
            path = self.folder / f"f{self.count:04d}.jpg"
            cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        else:
            path = self.folder / f"f{self.count:04d}.png"
            cv2.imwrite(str(path), img)
        return path, img.shape[1], img.shape[0], quality

    def row(self, run_id: str) -> dict:
        """One new `scans` row: a new copy, an exact copy of an old row, a rescan, a reject, or hash-less."""
        rng, old = self.rng, self.rows
        u = rng.random()
        name = f"{rng.integers(0, 10**6):06d}"  # random names: a new exact copy may sort first
        if old and u < 0.15:  # exact copy (same bytes, same signals) at a new path
            src = old[rng.integers(0, len(old))]
            path = self.folder / f"{name}{Path(src['path']).suffix}"
            if Path(src["path"]).exists():
                shutil.copy(src["path"], path)
            row = {**src, "path": str(path)}
        elif u < 0.85 or not old:
            cluster = int(rng.integers(0, len(self.bases)))
            code = self.bases[cluster]
            if cluster < 2 and rng.random() < 0.3:  # halfway between the two close bases: a bridge
                code = self.bases[0] ^ np.uint64(0x0F)
            flips = rng.choice(64, size=int(rng.integers(0, 4)), replace=False)
            code = code ^ np.uint64(sum(1 << int(b) for b in flips))
            path, width, height, quality = self._file(cluster)
            if rng.random() < 0.05:
                path.unlink()  # unreadable at decide time: that group keeps the signal order
            row = {"path": str(path), "image_id": f"id{self.count:05d}", "phash": int(code), "width": width,
                   "height": height, "jpeg_quality": quality, "sharpness": float(rng.choice([0.5, 0.6, 0.7])),
                   "noise_sigma": float(rng.uniform(0, 5)), "reason": None}
            if old and rng.random() < 0.05:  # the file at an old path changed and was scanned again
                row["path"] = old[rng.integers(0, len(old))]["path"]
        elif u < 0.93:
            row = {"path": str(self.folder / f"small{name}.png"), "image_id": f"small{name}", "phash": None,
                   "width": 100, "height": 100, "reason": "too_small"}
        else:
            row = {"path": str(self.folder / f"odd{name}.png"), "image_id": f"odd{name}", "phash": None,
                   "width": 64, "height": 64, "reason": None}
        row = {**row, "source": f"s{rng.integers(0, 2)}", "run_id": run_id}
        self.rows.append(row)
        return row


def _scores(rng, rows: list[dict], old: list[dict], run_id: str) -> list[dict]:
    ids = {r["image_id"] for r in rows if r.get("phash") is not None}
    ids |= {r["image_id"] for r in old[:: max(1, len(old) // 3)] if r.get("phash") is not None}  # rescored
    return [{"image_id": i, "metric": "musiq", "score": float(rng.choice([20, 40, 60, 80])), "lower_better": False,
             "run_id": run_id} for i in sorted(ids) if rng.random() < 0.8]


def _decisions(root: Path) -> list[tuple]:
    return [tuple(r.values()) for r in Catalog(root).query(COMPARED).to_pylist()]


@pytest.mark.parametrize("seed,metrics,distance", [(0, [], 4), (1, [], 4), (2, ["musiq"], 4), (3, [], 4),
                                                    (4, ["musiq"], 4), (5, [], 2), (6, [], -1)])
def test_random_topups_equal_full_recomputation(tmp_path, seed, metrics, distance):
    rng = np.random.default_rng(seed)
    (tmp_path / "files").mkdir()
    corpus = Corpus(tmp_path / "files", rng)
    inc, full = tmp_path / "inc", tmp_path / "full"
    thresholds = QualityThresholds(iqa={"musiq": Bounds(min=30.0)} if metrics else {})
    modes, seen = [], set()
    for step in range(6):
        run = f"ingest-{step:02d}"
        old = list(corpus.rows)
        rows = [corpus.row(run) for _ in range(int(rng.integers(5, 40)))]
        for root in (inc, full):
            for k, chunk in enumerate(np.array_split(np.arange(len(rows)), 2)):
                write_part(root, "scans", [rows[i] for i in chunk], name=f"{run}-{k}")
            if metrics:
                write_part(root, "iqa_scores", _scores(np.random.default_rng(step), rows, old, run), name=run)
        if step == 3:
            compact_table(inc, "scans", target_rows=50)
        if step == 4:  # a crash after the decisions were written, before their state: run it again
            state = Catalog(inc).store.read_bytes(STATE_FILE)
            decide(Catalog(inc), metrics, thresholds, distance, run)
            Catalog(inc).store.write_bytes(STATE_FILE, state)
        outcome = decide(Catalog(inc), metrics, thresholds, distance, run)
        decide(Catalog(full), metrics, thresholds, distance, run, full=True)
        modes.append(outcome.mode)
        got = _decisions(inc)
        assert got == _decisions(full), f"step {step}"
        seen |= {r[3] for r in got}
    assert modes == ["full"] + ["topup"] * 5
    assert {"duplicate", "near_duplicate"} <= seen or (distance < 0 and "duplicate" in seen)
    if metrics:
        assert "low_quality:musiq" in seen


def test_a_removed_part_means_a_full_pass_and_nothing_new_means_no_work(tmp_path):
    rng = np.random.default_rng(7)
    (tmp_path / "files").mkdir()
    corpus = Corpus(tmp_path / "files", rng)
    inc, full = tmp_path / "inc", tmp_path / "full"
    thresholds = QualityThresholds()
    for step in range(2):
        rows = [corpus.row(f"r{step}") for _ in range(30)]
        for root in (inc, full):
            write_part(root, "scans", rows, name=f"r{step}")
        decide(Catalog(inc), [], thresholds, DISTANCE, f"r{step}")
    assert decide(Catalog(inc), [], thresholds, DISTANCE, "r2").mode == "unchanged"
    for root in (inc, full):
        list_parts(root, "scans")[0].unlink()
    assert decide(Catalog(inc), [], thresholds, DISTANCE, "r3").mode == "full"
    decide(Catalog(full), [], thresholds, DISTANCE, "r3", full=True)
    assert _decisions(inc) == _decisions(full)
    assert decide(Catalog(inc), [], thresholds, 2, "r4").mode == "full"  # other rules: full pass
