"""`supir-data ingest`: scan → score → deduplicate → record every input path in the catalog.

Stage shape (DESIGN.md): select the paths not scanned yet (anti-join on `scans`), run the scan stage
(pipelines/ingest/scan.py) on the engine (each job writes one Parquet part with a deterministic name),
register the parts, optionally score survivors with pyiqa models, then decide duplicates in the driver
and write `decisions`: a top-up decides only the duplicate groups its new rows touch
(pipelines/ingest/topup.py), ``--full`` recomputes the whole catalog. A killed run is finished by
running it again.
"""

import logging
import math
from dataclasses import asdict, dataclass, field, replace

import click

from catalogs.catalog import Catalog
from catalogs.compaction import compact_after_run
from catalogs.lake import remove_temp_files
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.options import limit_options, make_limits
from pipelines.engine.runtime import Settings, init_ray
from pipelines.engine.sources import expand_paths
from pipelines.engine.stage import Limits
from pipelines.ingest.decide import decide
from pipelines.ingest.quality import (
    SIGNALS_VERSION,
    QualityThresholds,
    load_thresholds,
    migrate_thresholds,
    quality_reason_sql,
    thresholds_from_dict,
    thresholds_to_dict,
)
from pipelines.ingest.scan import ScanConfig, ScanStage, pending_paths, scan_batch  # noqa: F401 - re-exported
from schemas.runs import new_run_id

DEFAULT_NEAR_DUP_DISTANCE = 4  # Hamming distance between 64-bit perceptual hashes


log = logging.getLogger(__name__)


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
    full_decide: bool = False  # recompute every decision, not only those the new rows change
    limits: Limits = field(default_factory=Limits)


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
    catalog.record_run(run_id, "ingest", {"paths": opts.paths, **asdict(opts.scan), "metrics": opts.metrics,
                                          "near_dup_distance": opts.near_dup_distance})
    reasons: dict[str, int] = {}
    if len(todo):
        init_ray(settings)
        size = opts.batch_size or _auto_batch_size(len(todo))
        stats = run_stage(ScanStage(opts.scan, run_id), todo.to_pylist(), str(catalog.root), run_id,
                          Plan(part_items=size, limits=opts.limits), show_progress=show_progress)
        reasons = {k: v for k, v in stats.outcomes.items() if k != "accepted"}
        catalog.refresh()
        compact_after_run(catalog, "scans")  # a no-op until the table has many small parts
    if opts.metrics:
        _score_iqa(catalog, opts, run_id)
    decide(catalog, list(opts.metrics), opts.scan.thresholds, opts.near_dup_distance, run_id, full=opts.full_decide)
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
        score_images(todo, list(opts.metrics), opts.weights_dir, run_id, str(catalog.root), limits=opts.limits)
        catalog.refresh()
        compact_after_run(catalog, "iqa_scores")


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@click.option("--source", default=None, help="Source name (default: the folder's or list file's name).")
@click.option("--min-side", type=int, default=ScanConfig.min_side, show_default=True, help="Reject short side below this.")
@click.option("--max-pixels", type=int, default=ScanConfig.max_pixels, show_default=True, help="Reject larger images unread.")
@click.option("--config", "config_file", default=None,
              help="Quality thresholds YAML over the defaults; applies to the whole catalog and is kept for later runs.")
@click.option("--metric", "metrics", multiple=True, help="pyiqa metric to score and threshold (musiq, clipiqa, ...).")
@click.option("--weights-dir", default=None, help="Folder holding pyiqa weight files (else the torch hub cache).")
@click.option("--near-dup-distance", type=int, default=IngestOptions.near_dup_distance, show_default=True,
              help="Max Hamming distance between perceptual hashes of near duplicates (-1 disables).")
@click.option("--batch-size", type=int, default=IngestOptions.batch_size, show_default=True,
              help="Files per Ray task and part file (0: automatic, 8..128).")
@click.option("--full", "full_decide", is_flag=True,
              help="Recompute every duplicate decision over the whole catalog (default: only what new rows change).")
@limit_options()
@click.pass_obj
def ingest_command(settings: Settings, paths, source, min_side, max_pixels, config_file, metrics, weights_dir,
                   near_dup_distance, batch_size, full_decide, item_seconds, worker_memory):
    """Scan, quality-filter and deduplicate images; record every path in the catalog.

    PATH is a file, a folder (recursive), a glob, a .txt/.csv/.parquet list of paths, or an fsspec URL.
    """
    from rich.console import Console

    from pipelines.status.command import render_status, status_rows

    scan = ScanConfig(min_side=min_side, max_pixels=max_pixels)
    opts = IngestOptions(paths=list(paths), source=source, scan=scan, metrics=tuple(metrics),
                         weights_dir=weights_dir, near_dup_distance=near_dup_distance, batch_size=batch_size,
                         config_file=config_file, full_decide=full_decide,
                         limits=make_limits(item_seconds, worker_memory))
    result = run_ingest(settings, opts)
    console = Console()
    console.print(
        f"run {result.run_id}: {result.inputs} input paths, {result.scanned} scanned now "
        f"({result.inputs - result.scanned} already in the catalog)"
    )
    render_status(status_rows(Catalog(settings.root)), console)
