"""Top-up benchmark: decide after 1 % new images on a large catalog, incremental vs full recomputation.

The catalog is what a top-up meets after compaction: ``SUPIR_BENCH_TOPUP_ROWS`` (default 20M) `scans`
rows written in parts of 1M rows, then compacted (catalogs.compaction), made by 50 earlier runs, with 1 % exact copies and 1 %
near duplicates (1-3 bits from an earlier row's hash) and 10 % rejected by the scan; then a top-up of
1 % new rows (parts of 10K rows) with the same shares of copies and near copies *of old rows*. The
files do not exist, so near-duplicate groups keep the signal order (a real run also decodes each
group's members: that work grows with the groups touched, so the ratio here is the lower cost side).

Each decide runs in its own process: wall time and peak RSS (``VmHWM``), also above the RSS just
before deciding (imports, catalog open: the start-up peak is below what either pass adds). The incremental and full decisions must be equal.
Goal (issue 15): incremental <= 10 % of the full pass in time and in memory.
Results: tests/benchmarks/results/topup.json (one entry per row count).
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from catalogs.catalog import Catalog
from catalogs.compaction import compact_table
from catalogs.lake import write_part

RESULTS = Path(__file__).parent / "results" / "topup.json"
ROWS = int(os.environ.get("SUPIR_BENCH_TOPUP_ROWS", 20_000_000))
PART = 1_000_000
TOPUP_PART = 10_000
RUNS = 50  # the runs that built the catalog (the state counts rows per run)
REASONS = np.array([None] * 9 + ["too_small"], dtype=object)
COMPARED = "SELECT path, source, status, reason, duplicate_of FROM decisions ORDER BY ALL"

_CHILD = """
import json, logging, sys, time
from catalogs.catalog import Catalog
from pipelines.ingest.decide import decide
from pipelines.ingest.quality import QualityThresholds
logging.getLogger("pipelines.ingest.decide").setLevel(logging.ERROR)
def status_mb(field):  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's at fork)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024
catalog = Catalog(sys.argv[1])
catalog.refresh()
start = status_mb("VmRSS")
t0 = time.perf_counter()
outcome = decide(catalog, [], QualityThresholds(), 4, sys.argv[2], full=sys.argv[3] == "full")
s = time.perf_counter() - t0
peak = status_mb("VmHWM")
print(json.dumps({"s": s, "start_rss_mb": start, "peak_rss_mb": peak, "peak_above_start_mb": peak - start,
                  "mode": outcome.mode, "decided_rows": outcome.decided}))
"""


def _hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """n random 64-hex-digit ids (the size of a SHA-256 image_id), built without a Python loop."""
    data = rng.bytes(32 * n).hex().encode()
    offsets = pa.py_buffer(np.arange(0, 64 * n + 1, 64, dtype=np.int32).tobytes())
    return pa.StringArray.from_buffers(n, offsets, pa.py_buffer(data))


def _rows(rng: np.random.Generator, start: int, n: int, old: pa.Table | None, run_ids: np.ndarray) -> pa.Table:
    """n scans rows with paths start.., 1 % exact copies and 1 % near copies of ``old`` (or of themselves)."""
    idx = np.arange(start, start + n)
    table = pa.table({
        "path": pa.array(np.char.add(np.char.add("/data/photos/", np.char.zfill(idx.astype(str), 9)), ".jpg")),
        "source": pa.array(np.array([f"source_{i}" for i in range(8)], dtype=object)[rng.integers(0, 8, n)]),
        "image_id": _hex_ids(rng, n),
        "width": pa.array(rng.integers(800, 6000, n).astype(np.int32)),
        "height": pa.array(rng.integers(800, 4000, n).astype(np.int32)),
        "phash": pa.array(rng.integers(0, 2**63, n).astype(np.uint64)),
        "sharpness": pa.array((0.4 + rng.random(n) * 0.3).astype(np.float32)),
        "noise_sigma": pa.array((rng.random(n) * 10).astype(np.float32)),
        "jpeg_quality": pa.array(rng.integers(60, 100, n).astype(np.float32)),
        "reason": pa.array(REASONS[rng.integers(0, len(REASONS), n)], pa.string()),
        "run_id": pa.array(run_ids[rng.integers(0, len(run_ids), n)]),
    })
    source = old if old is not None else table
    copies, near = (rng.choice(n, n // 100, replace=False) for _ in range(2))
    of = rng.integers(0, len(source), len(copies) + len(near))
    cols = {c: table.column(c).to_numpy(zero_copy_only=False).copy() for c in table.column_names}
    for c in ("image_id", "width", "height", "phash", "sharpness", "noise_sigma", "jpeg_quality", "reason"):
        cols[c][copies] = source.column(c).take(pa.array(of[:len(copies)])).to_numpy(zero_copy_only=False)
    bits = rng.integers(0, 64, (len(near), 3))
    flips = (np.uint64(1) << bits.astype(np.uint64)) * (rng.random((len(near), 3)) < 0.7)
    base = source.column("phash").take(pa.array(of[len(copies):])).to_numpy(zero_copy_only=False)
    cols["phash"][near] = base ^ np.bitwise_or.reduce(flips.astype(np.uint64), axis=1)
    return pa.table({c: pa.array(v, table.schema.field(c).type) for c, v in cols.items()})


def _build(root: Path) -> pa.Table:
    """The catalog as compaction leaves it (files of ~1M rows sorted by path, row groups of 122,880);
    returns a sample of its rows for the top-up to copy."""
    rng = np.random.default_rng(0)
    runs = np.array([f"ingest-{k:03d}" for k in range(RUNS)], dtype=object)
    sample = []
    for start in range(0, ROWS, PART):
        table = _rows(rng, start, min(PART, ROWS - start), None, runs)
        write_part(root, "scans", table.sort_by("path"), name=f"c-{start:09d}")
        sample.append(table.take(pa.array(rng.choice(len(table), len(table) // 50, replace=False))))
    compact_table(root, "scans")
    return pa.concat_tables(sample)


def _topup(root: Path, sample: pa.Table) -> int:
    rng = np.random.default_rng(1)
    n = ROWS // 100
    table = _rows(rng, ROWS, n, sample, np.array(["ingest-topup"], dtype=object))
    for k in range(0, n, TOPUP_PART):
        write_part(root, "scans", table.slice(k, TOPUP_PART), name=f"topup-{k:09d}")
    return n


def _decide(root: Path, run_id: str, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", str(Path(__file__).parents[2]))}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(root), run_id, mode], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _save(rows: int, entry: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[str(rows)] = entry
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")


@pytest.mark.timeout(7200)
def test_topup_decide_incremental_vs_full(tmp_path):
    root = tmp_path / "lake"
    t0 = time.perf_counter()
    sample = _build(root)
    entry = {"rows": ROWS, "cores": os.cpu_count(), "build_s": round(time.perf_counter() - t0, 1)}
    entry["base_full"] = _decide(root, "ingest-base", "full")  # the state a top-up starts from
    entry["topup_rows"] = _topup(root, sample)
    entry["incremental"] = _decide(root, "ingest-topup", "incremental")
    incremental = Catalog(root).query(COMPARED)
    entry["full"] = _decide(root, "ingest-topup", "full")
    assert entry["incremental"]["mode"] == "topup" and entry["full"]["mode"] == "full"
    assert incremental.equals(Catalog(root).query(COMPARED))
    entry["decisions_rows"] = len(incremental)
    inc, full = entry["incremental"], entry["full"]
    entry["ratios"] = {"time": round(inc["s"] / full["s"], 3),
                       "peak_rss": round(inc["peak_rss_mb"] / full["peak_rss_mb"], 3),
                       "peak_above_start": round(inc["peak_above_start_mb"] / full["peak_above_start_mb"], 3)}
    entry["goal"] = "incremental <= 0.10 of full in time and memory"
    entry["machine"] = f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end (shared)"
    _save(ROWS, entry)
    print(json.dumps(entry, indent=2))
