"""`supir-data ingest`: scan → score → deduplicate → record every input path in the catalog.

Stage shape (DESIGN.md): select the paths not scanned yet (anti-join on `scans`), run the pure
per-batch :func:`scan_batch` on Ray (each task writes one Parquet part with a deterministic name),
register the parts, optionally score survivors with pyiqa models, then decide duplicates over the
whole catalog in the driver and write `decisions`. A killed run is finished by running it again.
"""

import hashlib
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace

import click
import pyarrow as pa

from catalogs.catalog import Catalog
from catalogs.lake import remove_temp_files, write_part
from pipelines.engine.runtime import Settings, init_ray, progress, tune_malloc
from pipelines.engine.sources import expand_paths, read_bytes
from pipelines.ingest.decide import decide
from pipelines.ingest.decode import Rejected, decode
from pipelines.ingest.dedup import phash_luma
from pipelines.ingest.quality import (
    SIGNALS_VERSION,
    QualityThresholds,
    analysis_luma,
    cheap_signals,
    judge,
    load_thresholds,
    migrate_thresholds,
    quality_reason_sql,
    thresholds_from_dict,
    thresholds_to_dict,
)
from schemas.runs import config_hash, new_run_id, utc_now
from schemas.tables import QUALITY_SIGNALS
from supir.image_io import DEFAULT_MAX_PIXELS

DEFAULT_MIN_SIDE = 1024  # the paper keeps images of at least 1024 px
DEFAULT_NEAR_DUP_DISTANCE = 4  # Hamming distance between 64-bit perceptual hashes


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanConfig:
    """Everything a worker needs to scan a file (picklable, hashed into the rows)."""

    min_side: int = DEFAULT_MIN_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)  # for the progress bar only

    def digest(self) -> str:
        """Hash of what determines a `scans` row (thresholds don't: the catalog judges at query time)."""
        return config_hash(
            {"min_side": self.min_side, "max_pixels": self.max_pixels, "signals_version": SIGNALS_VERSION}
        )


def scan_file(path: str, source: str, cfg: ScanConfig) -> dict:
    """One input path → one `scans` row. Never raises for bad input: failures become a reason."""
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
    # The quality verdict is not stored: the catalog judges the stored signals with the thresholds
    # in force (pipelines.ingest.quality.quality_reason_sql), so new thresholds need no re-scan.
    return row


def scan_batch(paths, sources, cfg: ScanConfig) -> list[dict]:
    """The pure per-batch function: scan each file (no Ray, no catalog)."""
    return [scan_file(str(p), str(s), cfg) for p, s in zip(paths, sources)]


def _scan_and_write(batch: dict, root: str, cfg: ScanConfig, run_id: str, digest: str) -> dict:
    """Ray wrapper: scan a batch, write it as one part named after its paths, return a summary."""
    tune_malloc()
    rows = scan_batch(batch["path"], batch["source"], cfg)
    now = utc_now()
    for r in rows:
        r.update(config_hash=digest, run_id=run_id, ingested_at=now)
    name = hashlib.sha256("\n".join(r["path"] for r in rows).encode()).hexdigest()[:32]
    write_part(root, "scans", rows, name=name)
    verdicts = [r.get("reason") or judge(r, cfg.thresholds) or "" for r in rows]  # for the progress bar
    return {"path": [r["path"] for r in rows], "reason": verdicts}


def pending_paths(catalog: Catalog, inputs: list[tuple[str, str]]) -> pa.Table:
    """Inputs with no `scans` row yet (the anti-join that makes ingest resumable)."""
    table = pa.table({"path": [p for p, _ in inputs], "source": [s for _, s in inputs]})
    with catalog.reader() as con:
        con.register("inputs", table)
        return con.sql(
            "SELECT i.path, i.source FROM inputs i ANTI JOIN scans s ON s.path = i.path ORDER BY i.path"
        ).to_arrow_table()


@dataclass
class IngestOptions:
    paths: list[str]
    source: str | None = None
    scan: ScanConfig = field(default_factory=ScanConfig)
    metrics: tuple[str, ...] = ()
    weights_dir: str | None = None
    near_dup_distance: int = DEFAULT_NEAR_DUP_DISTANCE
    batch_size: int = 0  # files per Ray task and part; 0 = about 4 tasks per CPU, 8..128 files each
    config_file: str | None = None  # quality thresholds; None keeps the catalog's (else the defaults)


@dataclass
class IngestResult:
    run_id: str
    inputs: int
    scanned: int
    reasons: dict[str, int]


def run_ingest(settings: Settings, opts: IngestOptions, show_progress: bool = True) -> IngestResult:
    catalog = Catalog(settings.root)
    if opts.metrics:
        from pipelines.ingest.iqa import check_metrics

        check_metrics(list(opts.metrics), opts.weights_dir)  # fail before any work
    inputs = expand_paths(opts.paths, opts.source)
    thresholds = resolve_thresholds(catalog, opts.config_file)
    opts = replace(opts, scan=replace(opts.scan, thresholds=thresholds))
    catalog.update_settings(quality_thresholds=thresholds_to_dict(thresholds),
                            quality_reason_sql=quality_reason_sql(thresholds), signals_version=SIGNALS_VERSION)
    remove_temp_files(catalog.root)
    catalog.refresh()
    todo = pending_paths(catalog, inputs)
    run_id = new_run_id("ingest")
    digest = opts.scan.digest()
    catalog.record_run(run_id, "ingest", {"paths": opts.paths, **asdict(opts.scan), "metrics": opts.metrics,
                                          "near_dup_distance": opts.near_dup_distance})
    reasons: dict[str, int] = {}
    if len(todo):
        init_ray(settings)
        import ray

        size = opts.batch_size or _auto_batch_size(len(todo))
        chunks = [todo.slice(i, size) for i in range(0, len(todo), size)]
        ctx = ray.data.DataContext.get_current()
        reservation = ctx.op_resource_reservation_enabled
        # One operator reading from memory: nothing to reserve resources for, and on a small machine
        # the reservation holds back half the CPUs while the pipeline ramps up (measured: 2 CPUs,
        # 500 files, 6.9 s -> 4.3 s).
        ctx.op_resource_reservation_enabled = False
        try:
            ds = ray.data.from_arrow(chunks).map_batches(
                _scan_and_write,
                batch_size=None,  # one block = one batch = one part
                fn_kwargs={"root": str(catalog.root), "cfg": opts.scan, "run_id": run_id, "digest": digest},
                batch_format="pyarrow",
            )
            _drain(ds, len(todo), reasons, show_progress)
        finally:
            ctx.op_resource_reservation_enabled = reservation
        catalog.refresh()
    if opts.metrics:
        _score_iqa(catalog, opts, run_id)
    decide(catalog, list(opts.metrics), opts.scan.thresholds, opts.near_dup_distance, run_id)
    return IngestResult(run_id=run_id, inputs=len(inputs), scanned=len(todo), reasons=reasons)


def _auto_batch_size(n: int) -> int:
    """Enough tasks to keep every CPU busy, few enough that Ray's ~10-20 ms per task stays small."""
    from pipelines.engine.runtime import cluster_cpus

    return int(min(128, max(8, math.ceil(n / (4 * cluster_cpus())))))


def resolve_thresholds(catalog: Catalog, config_file: str | None) -> QualityThresholds:
    """--config wins; else the thresholds the catalog was last judged with; else the defaults.

    Thresholds are catalog-wide: every scanned image is judged by the same rules, and a new
    --config re-judges everything already scanned (from the stored signals, without decoding).
    """
    if config_file:
        return load_thresholds(config_file)
    settings = catalog.settings()
    stored, defaults = settings.get("quality_thresholds"), load_thresholds()
    if not stored:
        return defaults
    thresholds = thresholds_from_dict(stored, defaults)
    version = settings.get("signals_version", 1)
    if version < SIGNALS_VERSION:
        thresholds, changes = migrate_thresholds(thresholds, version, defaults)
        for line in changes:
            log.warning(
                "catalog thresholds from signals v%d: %s; rows scanned before keep their old values "
                "(re-ingest into a new --root to recompute them)",
                version,
                line,
            )
    return thresholds


def _drain(ds, total: int, reasons: dict[str, int], show: bool) -> None:
    accepted = 0
    start = time.monotonic()
    bar = progress("ingest", accepted=0, rejected=0, files_per_s="0.0")
    task = bar.add_task("ingest", total=total, accepted=0, rejected=0, files_per_s="0.0")
    with bar if show else nullcontext():
        done = 0
        for summary in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            for reason in summary.column("reason").to_pylist():
                if reason:
                    reasons[reason] = reasons.get(reason, 0) + 1
                else:
                    accepted += 1
            done += len(summary)
            rate = done / max(time.monotonic() - start, 1e-6)
            bar.update(task, completed=done, accepted=accepted, rejected=done - accepted, files_per_s=f"{rate:.1f}")


def _score_iqa(catalog: Catalog, opts: IngestOptions, run_id: str) -> None:
    """Score the images that pass the per-file checks and lack a score for some asked metric."""
    from pipelines.ingest.iqa import score_images

    todo = catalog.query(
        "SELECT s.image_id, min(s.path) AS path FROM scan_verdicts s WHERE s.verdict IS NULL "
        "AND s.image_id NOT IN (SELECT image_id FROM iqa_scores WHERE list_contains(?, metric) "
        "GROUP BY image_id HAVING count(DISTINCT metric) = ?) GROUP BY s.image_id ORDER BY s.image_id",
        [list(opts.metrics), len(opts.metrics)],
    ).to_pylist()
    if todo:
        score_images(todo, list(opts.metrics), opts.weights_dir, run_id, str(catalog.root))
        catalog.refresh()


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@click.option("--source", default=None, help="Source name (default: the folder's or list file's name).")
@click.option("--min-side", type=int, default=DEFAULT_MIN_SIDE, show_default=True, help="Reject short side below this.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True, help="Reject larger images unread.")
@click.option("--config", "config_file", default=None,
              help="Quality thresholds YAML over the defaults; applies to the whole catalog and is kept for later runs.")
@click.option("--metric", "metrics", multiple=True, help="pyiqa metric to score and threshold (musiq, clipiqa, ...).")
@click.option("--weights-dir", default=None, help="Folder holding pyiqa weight files (else the torch hub cache).")
@click.option("--near-dup-distance", type=int, default=DEFAULT_NEAR_DUP_DISTANCE, show_default=True,
              help="Max Hamming distance between perceptual hashes of near duplicates (-1 disables).")
@click.option("--batch-size", type=int, default=0, show_default=True,
              help="Files per Ray task and part file (0: automatic, 8..128).")
@click.pass_obj
def ingest_command(settings: Settings, paths, source, min_side, max_pixels, config_file, metrics, weights_dir,
                   near_dup_distance, batch_size):
    """Scan, quality-filter and deduplicate images; record every path in the catalog.

    PATH is a file, a folder (recursive), a glob, a .txt/.csv/.parquet list of paths, or an fsspec URL.
    """
    from rich.console import Console

    from pipelines.status.command import render_status, status_rows

    scan = ScanConfig(min_side=min_side, max_pixels=max_pixels)
    opts = IngestOptions(paths=list(paths), source=source, scan=scan, metrics=tuple(metrics),
                         weights_dir=weights_dir, near_dup_distance=near_dup_distance, batch_size=batch_size,
                         config_file=config_file)
    result = run_ingest(settings, opts)
    console = Console()
    console.print(
        f"run {result.run_id}: {result.inputs} input paths, {result.scanned} scanned now "
        f"({result.inputs - result.scanned} already in the catalog)"
    )
    render_status(status_rows(Catalog(settings.root)), console)
