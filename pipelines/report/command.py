"""`supir-data report`: one self-contained HTML page that shows what the catalog holds and why.

    supir-data report --out report.html

Two steps: :func:`collect` asks the catalog for every number and a bounded, deterministic sample of
rows (all aggregation happens in DuckDB, so its cost follows the catalog's size only through DuckDB
scans), then :func:`pipelines.report.page.render` draws plots, thumbnails and the degradation
preview from that sample. The page has no scripts and no external resources: it opens offline.
"""

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from catalogs.catalog import Catalog
from catalogs.store import split_url
from pipelines.report import aggregate, samples
from pipelines.report.reader import reading


@dataclass(frozen=True)
class ReportOptions:
    per_group: int = 24  # thumbnails per accepted set and per rejection reason
    duplicate_groups: int = 12
    per_duplicate_group: int = 4
    captions: int = 8
    negatives: int = 8
    preview_samples: int = 6  # (GT, LQ) pairs in the degradation preview


@dataclass
class ReportData:
    """Everything the page shows, already small: counts, histograms and sampled rows."""

    root: str
    reasons: list[dict]  # {source, reason (None: accepted), n}
    histograms: list[aggregate.Histogram]
    iqa_histograms: list[aggregate.Histogram]
    groups: dict[str, dict]  # 'accepted' or reason -> {'n', 'rows'}
    kept: dict[str, dict]  # image_id -> the accepted row holding it
    thresholds: dict[str, aggregate.Bound]
    duplicate_total: int
    duplicates: list[dict]  # {'kept_id', 'kept' (row or None), 'n_copies', 'copies' (rows)}
    caption_stats: dict
    caption_lengths: aggregate.Histogram | None
    captions: list[dict]
    flagged_captions: dict[str, list[dict]]
    negative_stats: list[dict]
    negatives: list[dict]
    shard_mix: list[dict]
    shard_sources: list[dict]  # {name, split, source, samples, share}
    shard_configs: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)


def collect(catalog: Catalog, opts: ReportOptions = ReportOptions()) -> ReportData:
    """Query the catalog for the report on one connection (timed per part, in seconds, in ``timings``)."""
    with reading(catalog) as reader:
        return _collect(reader, opts)


def _collect(catalog, opts: ReportOptions) -> ReportData:
    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 4)
        return out

    reasons, histograms, exact = timed("scans_pass_and_histograms", aggregate.from_pass, catalog,
                                       samples.CANDIDATES * opts.per_group)
    groups = timed("sample_paths", samples.group_paths, catalog, opts.per_group, reasons, exact)
    dup_total, dups = timed("duplicate_groups", samples.duplicate_groups, catalog, opts.duplicate_groups,
                            opts.per_duplicate_group)
    good, flagged = timed("caption_examples", samples.caption_examples, catalog, opts.captions, 2)
    negatives = timed("negative_examples", samples.negative_examples, catalog, opts.negatives)
    caption_stats, caption_lengths = timed("caption_stats", aggregate.caption_aggregates, catalog)

    # One lookup in `scans` for every section: sampled paths, kept copies, captioned and negative sources.
    sampled = [p for g in groups.values() for p in g["paths"]] + [p for g in dups for p in g["paths"]]
    dup_of = timed("duplicate_of", _duplicate_of, catalog, sampled)
    captioned = good + [r for rows in flagged.values() for r in rows]
    kept_ids = {*dup_of.values(), *(g["kept_id"] for g in dups)}
    rows, holders = timed("image_rows", samples.lookup, catalog, sampled,
                          [*kept_ids, *(r["image_id"] for r in captioned + negatives)])
    kept = {}
    for image_id in kept_ids:
        accepted = [rows[p] for p in holders.get(image_id, []) if p in rows and rows[p]["status"] == "accepted"]
        if accepted:
            kept[image_id] = accepted[0]
    for r in captioned:
        r["path"] = (holders.get(r["image_id"]) or [None])[0]
    for r in negatives:
        r["source_path"] = (holders.get(r["image_id"]) or [None])[0]
    return ReportData(
        root=str(catalog.root), reasons=reasons, histograms=histograms,
        iqa_histograms=timed("iqa_histograms", aggregate.iqa_histograms, catalog),
        groups={g: {"n": v["n"], "rows": [rows[p] for p in v["paths"] if p in rows]} for g, v in groups.items()},
        kept=kept, thresholds=aggregate.stored_thresholds(catalog)[0], duplicate_total=dup_total,
        duplicates=[{"kept_id": g["kept_id"], "kept": kept.get(g["kept_id"]), "n_copies": g["n_copies"],
                     "copies": [rows[p] for p in g["paths"] if p in rows]} for g in dups],
        caption_stats=caption_stats, caption_lengths=caption_lengths, captions=good, flagged_captions=flagged,
        negative_stats=timed("negative_stats", aggregate.negative_stats, catalog), negatives=negatives,
        shard_mix=timed("shard_mix", aggregate.shard_mix, catalog),
        shard_sources=timed("shard_sources", aggregate.shard_sources, catalog),
        shard_configs=timed("shard_configs", aggregate.shard_configs, catalog), timings=timings,
    )


def _duplicate_of(catalog, paths: list[str]) -> dict[str, str]:
    """path -> the image_id it is a copy of, for the sampled paths (from the small `decisions` table)."""
    if not paths:
        return {}
    rows = catalog.query("SELECT path, duplicate_of FROM decisions WHERE duplicate_of IS NOT NULL "
                         "AND path IN (SELECT unnest($1))", [sorted(set(paths))]).to_pylist()
    return {r["path"]: r["duplicate_of"] for r in rows}


def degradation_preview(data: ReportData, n: int) -> tuple[str, bytes] | None:
    """(preset, PNG) of the degradation applied to the first sampled accepted image, or None."""
    import cv2
    from PIL import Image

    from pipelines.devtools.preview import preview_grid
    from pipelines.engine.sources import read_bytes
    from supir.degradation import preset
    from supir.image_io import to_rgb8

    configs = [json.loads(c) for c in data.shard_configs.values()]
    name = next((c.get("preset") for c in configs if c.get("preset")), "supir")
    for row in data.groups.get(samples.ACCEPTED, {}).get("rows", []):
        try:
            with Image.open(io.BytesIO(read_bytes(row["path"]))) as img:
                img.draft("RGB", (768, 768))
                rgb = to_rgb8(img)
        except Exception:  # a file moved since ingest: try the next one
            continue
        short = min(rgb.shape[:2])
        if short > 768:  # crops of a 768 px view show the degradation at the scale a 512 crop sees it
            f = 768 / short
            rgb = cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)
        grid = preview_grid(rgb, preset(name), n=n, seed=0, crop=min(192, short))
        ok, png = cv2.imencode(".png", cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        return (name, png.tobytes()) if ok else None
    return None


def build_report(catalog: Catalog, out: str | Path, opts: ReportOptions = ReportOptions()) -> tuple[Path | str, ReportData]:
    """Collect, render and write the page atomically; returns its path (URL) and the collected data."""
    from pipelines.report.page import render

    data = collect(catalog, opts)
    t0 = time.perf_counter()
    html = render(data, degradation_preview(data, opts.preview_samples))
    data.timings["render"] = round(time.perf_counter() - t0, 4)
    folder, name = split_url(out)  # a local file or an object-store URL, written all at once
    written = folder.write_bytes(name, html.encode("utf-8"))
    return (written if folder.remote else Path(written)), data


@click.command("report")
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="HTML file [default: <root>/report.html].")
@click.option("--per-group", type=click.IntRange(1, 200), default=ReportOptions.per_group, show_default=True,
              help="Thumbnails of accepted images and per rejection reason.")
@click.pass_obj
def report_command(settings, out, per_group):
    """A self-contained HTML report of the catalog: counts, signal histograms, samples, duplicates, shards."""
    catalog = Catalog(settings.root)
    t0 = time.perf_counter()
    path, _ = build_report(catalog, out or catalog.store.url_of("report.html"), ReportOptions(per_group=per_group))
    folder, name = split_url(path)
    size = folder.size(name) or 0
    click.echo(f"wrote {path} ({size / 1e6:.1f} MB, {time.perf_counter() - t0:.1f} s)")
