"""Ingest's per-file stage: one input path → one `scans` row, run by the engine.

What can be decided per file is decided here (decode, size, cheap quality signals, hashes); what
needs the whole catalog (duplicates, model-metric thresholds) is decided later in the driver
(pipelines/ingest/decide.py). The quality verdict itself is not stored: the catalog judges the stored
signals with the thresholds in force (`quality_reason_sql`), so new thresholds need no re-scan.
"""

import hashlib
import math
from dataclasses import dataclass, field

import pyarrow as pa

from catalogs.catalog import Catalog
from pipelines.engine.sources import read_bytes
from pipelines.engine.stage import Stage
from pipelines.ingest.decode import Rejected, decode
from pipelines.ingest.dedup import phash_luma
from pipelines.ingest.quality import SIGNALS_VERSION, QualityThresholds, analysis_luma, cheap_signals, judge
from schemas.runs import config_hash, utc_now
from schemas.tables import QUALITY_SIGNALS
from supir.image_io import DEFAULT_MAX_PIXELS

DEFAULT_MIN_SIDE = 1024  # the paper keeps images of at least 1024 px


@dataclass(frozen=True)
class ScanConfig:
    """Everything a worker needs to scan a file (picklable, hashed into the rows)."""

    min_side: int = DEFAULT_MIN_SIDE  # reject short side below this
    max_pixels: int = DEFAULT_MAX_PIXELS  # reject larger images unread
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)  # for the progress counters only

    def digest(self) -> str:
        """Hash of what determines a `scans` row (thresholds don't: the catalog judges at query time)."""
        return config_hash(
            {"min_side": self.min_side, "max_pixels": self.max_pixels, "signals_version": SIGNALS_VERSION}
        )


def scan_file(path: str, source: str, cfg: ScanConfig) -> dict:
    """One input path → one `scans` row; the reasons a worker can decide alone. May raise (the engine
    turns an exception into a `corrupt` row)."""
    row: dict = {"path": path, "source": source}
    try:
        data = read_bytes(path)
    except Exception as exc:  # missing, permission, network: the path still gets a row
        return {**row, "reason": "unreadable", "detail": f"{type(exc).__name__}: {exc}"}
    row["image_id"] = hashlib.sha256(data).hexdigest()
    row["bytes"] = len(data)
    try:
        decoded = decode(data, cfg.min_side, cfg.max_pixels)
    except Rejected as rej:
        header = getattr(rej, "header", None)
        if header is not None:
            row.update(format=header.format, mode=header.mode, width=header.width, height=header.height)
        return {**row, "reason": rej.reason, "detail": rej.detail}
    h = decoded.header
    row.update(format=h.format, mode=h.mode, width=h.width, height=h.height)
    luma = analysis_luma(decoded.pixels, decoded.order)  # one luma for the hash and the signals
    row["phash"] = phash_luma(luma)
    signals = cheap_signals(decoded.pixels, decoded.scale, decoded.qtables, decoded.order, luma)
    for k in QUALITY_SIGNALS:
        v = signals.get(k)
        row[k] = None if v is None or math.isnan(v) else float(v)
    return row


def scan_batch(paths, sources, cfg: ScanConfig) -> list[dict]:
    """Scan each file in this process (no Ray, no catalog, no isolation): benchmarks and tests."""
    return [scan_file(str(p), str(s), cfg) for p, s in zip(paths, sources)]


class ScanStage(Stage):
    """`scans` rows for pending paths; a file whose code raises is `corrupt`, one that kills its
    worker `crashed`, one that runs past the limit `timeout` (all with the path and the detail)."""

    name = "ingest"
    table = "scans"
    error_reason = "corrupt"

    def __init__(self, cfg: ScanConfig, run_id: str):
        self.cfg, self.run_id, self.digest = cfg, run_id, cfg.digest()

    def _stamp(self, row: dict) -> dict:
        return {**row, "config_hash": self.digest, "run_id": self.run_id, "ingested_at": utc_now()}

    def process_item(self, item: dict) -> dict:
        return self._stamp(scan_file(str(item["path"]), str(item["source"]), self.cfg))

    def failure_row(self, item: dict, reason: str, detail: str) -> dict:
        return self._stamp({"path": item["path"], "source": item["source"], "reason": reason, "detail": detail})

    def outcome(self, row: dict | None) -> str:
        return row.get("reason") or judge(row, self.cfg.thresholds) or "accepted"

    def part_name(self, items: list[dict]) -> str:
        return hashlib.sha256("\n".join(str(i["path"]) for i in items).encode()).hexdigest()[:32]


def pending_paths(catalog: Catalog, inputs: list[tuple[str, str]]) -> pa.Table:
    """Inputs with no `scans` row yet (the anti-join that makes ingest resumable)."""
    table = pa.table({"path": [p for p, _ in inputs], "source": [s for _, s in inputs]})
    with catalog.reader() as con:
        con.register("inputs", table)
        return con.sql(
            "SELECT i.path, i.source FROM inputs i ANTI JOIN scans s ON s.path = i.path ORDER BY i.path"
        ).to_arrow_table()
