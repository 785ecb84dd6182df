"""`supir-data shard`: accepted images (+ negatives, + latest captions) → WebDataset tars for the trainer.

The driver plans every shard (pipelines/shard/plan.py); the engine runs the shard stage
(pipelines/shard/stage.py), one job per shard, which writes ``NAME-{split}-{000000}.tar`` atomically
and its `shards` row. A shard whose tar is at the target path with the recorded plan digest, size and
SHA-256 is reused; the manifest lists exactly the tars that exist.
"""

import json
import re
from pathlib import Path

import click

from catalogs.catalog import Catalog
from catalogs.store import Store, is_remote, split_url
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.options import limit_options, make_limits
from pipelines.engine.runtime import Settings, init_ray
from pipelines.engine.stage import Limits
from pipelines.shard.plan import (
    GT_FORMATS,
    ShardConfig,
    ShardPlan,
    brace_pattern,
    pack_shards,
    parse_size,
    parse_weights,
    select_samples,
)
from pipelines.shard.stage import ShardStage, _read, is_done, write_shard  # noqa: F401 - re-exported
from pipelines.shard.tar import ShardTar  # noqa: F401 - re-exported
from schemas.errors import ConfigError
from schemas.runs import new_run_id
from schemas.sample import SAMPLE_SPEC_VERSION, SPLITS, manifest_name
from schemas.tables import NEGATIVES_DIR, QUALITY_SIGNALS

# -- the driver ------------------------------------------------------------------------------------

_POSITIVES_SQL = f"""
SELECT i.image_id, i.path, i.source, i.width, i.height, i.format, i.mode, i.bytes,
       {", ".join(f"i.{s}" for s in QUALITY_SIGNALS)}, c.caption, c.model AS caption_model
FROM images i LEFT JOIN latest_captions c USING (image_id)
WHERE i.status = 'accepted' AND i.image_id IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY i.image_id ORDER BY i.path) = 1
ORDER BY i.image_id"""

_NEGATIVES_SQL = """
SELECT n.negative_id, n.image_id, n.path, n.prompt, n.width, n.height, s.source
FROM negatives n JOIN (SELECT DISTINCT image_id, source FROM images WHERE status = 'accepted'
                       QUALIFY row_number() OVER (PARTITION BY image_id ORDER BY path) = 1) s USING (image_id)
QUALIFY row_number() OVER (PARTITION BY n.negative_id ORDER BY n.created_at DESC, n.path) = 1
ORDER BY n.negative_id"""


def plan_from_catalog(catalog: Catalog, cfg: ShardConfig) -> tuple[list[ShardPlan], dict]:
    def rows(sql: str):  # Arrow in memory, Python dicts one batch at a time (millions of rows)
        for batch in catalog.query(sql).to_batches(max_chunksize=65536):
            yield from batch.to_pylist()

    sizes = catalog.store.sizes(NEGATIVES_DIR)  # one listing, not a stat (or HEAD) per negative

    def negatives():
        for row in rows(_NEGATIVES_SQL):  # negatives' paths may be relative to the data root
            path = row["path"]
            if not (is_remote(path) or Path(path).is_absolute()):
                path = catalog.store.url_of(path)
            row["path"] = path
            row["bytes"] = sizes[path] if path in sizes else _size(path)
            yield row

    selected, report = select_samples(cfg, rows(_POSITIVES_SQL), negatives())
    return pack_shards(cfg, selected), report


def _done_shards(catalog: Catalog, name: str) -> dict[str, dict]:
    rows = catalog.query(
        "SELECT * FROM shards WHERE name = ? QUALIFY row_number() OVER (PARTITION BY shard ORDER BY created_at DESC) = 1",
        [name],
    ).to_pylist()
    return {r["shard"]: r for r in rows}


def _size(path: str) -> int:
    store, name = split_url(path)
    return store.size(name) or 0


def _remove_stale(catalog: Catalog, out: Store, name: str, keep: set[str]) -> list[str]:
    """Tars of an earlier plan under the same name (e.g. more shards before) and their rows go;
    so do temp files of killed local writers (an object store never shows a half upload)."""
    removed = []
    found = out.list("", f"{name}-*-*.tar") + out.list("", f".{name}-*.tmp-*") + out.list("", f".tmp-*-{name}-*.tar")
    for tar in found:
        shard = re.sub(r"^\.tmp-[0-9a-f]+-", "", tar.name)
        if re.fullmatch(rf"\.?{re.escape(name)}-(train|val)-\d{{6}}\.tar(\.tmp-\w+)?", shard) and tar.name not in keep:
            out.delete(tar.url)
            removed.append(tar.name)
    for part in catalog.store.list("lake/shards", "part-shard-*.parquet"):  # never compacted
        shard = part.name.removeprefix("part-shard-").removesuffix(".parquet") + ".tar"
        if shard.startswith(f"{name}-") and shard not in keep:
            catalog.store.delete(part.url)
    return removed


def write_manifest(out: Store, cfg: ShardConfig, rows: list[dict], report: dict) -> str:
    """The shard set's manifest: only tars that exist in ``out`` (with their size and SHA-256)."""
    missing = [r["shard"] for r in rows if not out.exists(r["shard"])]
    if missing:
        raise RuntimeError(f"refusing to list tars that are not in {out.url}: {', '.join(missing)}")
    splits = {}
    for split in SPLITS:
        mine = sorted((r for r in rows if r["split"] == split), key=lambda r: r["shard"])
        entries = [{k: r[k] for k in ("shard", "samples", "bytes", "sha256")} | {"path": r["shard"]} for r in mine]
        pattern = brace_pattern(cfg.name, split, len(mine))
        splits[split] = {
            "pattern": pattern,  # relative to this manifest's folder
            "url": out.url_of(pattern) if pattern else None,
            "samples": sum(r["samples"] for r in mine),
            "bytes": sum(r["bytes"] for r in mine),
            "shards": entries,
        }
    manifest = {"name": cfg.name, "spec_version": SAMPLE_SPEC_VERSION, "config": cfg.content(), "splits": splits, "report": report}
    return out.write_bytes(manifest_name(cfg.name), (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode())


def shard_folder(catalog: Catalog, out_dir: str | None) -> Store:
    """``--out`` (a folder or an fsspec URL), else ``<root>/shards`` in the data root's own store."""
    out = Store(out_dir) if out_dir else Store(catalog.store.url_of("shards"))
    if not out.remote:
        Path(out.url).mkdir(parents=True, exist_ok=True)
    return out


def run_shard(settings: Settings, cfg: ShardConfig, out_dir: str | None = None, limits: Limits | None = None) -> dict:
    """Plan, write (or reuse) every shard on the engine, register rows, write the manifest; returns it."""
    catalog = Catalog(settings.root)
    catalog.refresh()  # pick up rows of shards a crashed run finished
    out = shard_folder(catalog, out_dir)
    plans, report = plan_from_catalog(catalog, cfg)
    if not plans:
        raise ConfigError("no accepted images to shard (run `supir-data ingest` first, or check --gt-size)")
    done = _done_shards(catalog, cfg.name)
    report["stale_removed"] = _remove_stale(catalog, out, cfg.name, {p.shard for p in plans})
    run_id = new_run_id("shard")
    catalog.record_run(run_id, "shard", cfg.content() | {"name": cfg.name, "out": out.url})
    init_ray(settings)
    stage = ShardStage(cfg, out.url, run_id)
    work = [{"plan": p, "done": done.get(p.shard)} for p in plans]
    stats = run_stage(stage, work, str(catalog.root), run_id, Plan(part_items=1, limits=limits or Limits()))
    catalog.refresh()
    results = {r["shard"]: {"row": r, "skipped": r["skipped"], "sources": r["sources"]} for r in stats.collected}
    rows = [results[p.shard]["row"] for p in plans if p.shard in results]
    written = stats.outcomes.get("written", 0)
    report.update(_summary(plans, results, written))
    report["failed_shards"] = sorted(p.shard for p in plans if p.shard not in results)
    manifest = write_manifest(out, cfg, rows, report)
    return {"rows": rows, "report": report, "manifest": manifest, "written": written}


def _summary(plans: list[ShardPlan], results: dict, n_written: int) -> dict:
    """Planned vs written mix per split: source shares and the negatives fraction actually reached."""
    out = {"shards_written": n_written, "shards_skipped": len(results) - n_written, "skipped_samples": {}, "splits": {}}
    for result in results.values():
        for reason, n in result["skipped"].items():
            out["skipped_samples"][reason] = out["skipped_samples"].get(reason, 0) + n
    for split in SPLITS:
        samples = [s for p in plans if p.split == split for s in p.samples]
        groups: dict[str, int] = {}
        for s in samples:
            group = "negatives" if s.is_negative else (s.source or "?")
            groups[group] = groups.get(group, 0) + 1
        total = len(samples)
        written = sum(results[p.shard]["row"]["samples"] for p in plans if p.split == split and p.shard in results)
        out["splits"][split] = {
            "planned": total,
            "written": written,
            "shares": {g: round(n / total, 4) for g, n in sorted(groups.items())} if total else {},
            "negatives_fraction": round(groups.get("negatives", 0) / total, 4) if total else 0.0,
        }
    return out


# -- the command -----------------------------------------------------------------------------------

@click.command("shard")
@click.option("--name", default=ShardConfig.name, show_default=True, help="Shard set name: NAME-{split}-{000000}.tar.")
@click.option("--out", "out_dir", default=None, help="Output folder [default: ROOT/shards].")
@click.option("--gt-size", default=ShardConfig.gt_size, show_default=True, help="GT side in pixels (square); 0 keeps whole images.")
@click.option("--crop", type=click.Choice(["center", "random"]), default=ShardConfig.crop, show_default=True)
@click.option("--resize/--no-resize", default=ShardConfig.resize, show_default=True, help="Resize the short side to --gt-size (else a native-resolution crop).")
@click.option("--gt-format", type=click.Choice(sorted(GT_FORMATS)), default=ShardConfig.gt_format, show_default=True, help="Format of re-encoded GTs.")
@click.option("--gt-quality", default=ShardConfig.gt_quality, show_default=True, help="Quality of jpg/webp GTs.")
@click.option("--preset", default=ShardConfig.preset, show_default=True, help="Degradation preset of the LQ.")
@click.option("--lq", type=click.Choice(["precomputed", "none"]), default=ShardConfig.lq, show_default=True, help="none: the reader degrades on the fly.")
@click.option("--max-size", default="1GB", show_default=True, help="Upper bound of a shard's size.")
@click.option("--max-count", default=ShardConfig.max_count, show_default=True, help="Samples per shard at most.")
@click.option("--val-fraction", default=ShardConfig.val_fraction, show_default=True, help="Share of image ids in the val split.")
@click.option("--negatives-fraction", type=float, default=None, help="Target share of negative samples [default: all negatives once].")
@click.option("--source-weight", multiple=True, help="SRC=W: per-image inclusion rate of a source (0 drops, 2 repeats).")
@click.option("--seed", default=ShardConfig.seed, show_default=True)
@click.option("--text-encoder", default=ShardConfig.text_encoder,
              help="SDXL diffusers folder: store each sample's text embeddings (txtemb/txtpool) for data.cached_text.")
@limit_options()
@click.pass_obj
def shard_command(settings: Settings, name, out_dir, gt_size, crop, resize, gt_format, gt_quality, preset, lq,
                  max_size, max_count, val_fraction, negatives_fraction, source_weight, seed, text_encoder,
                  item_seconds, worker_memory):  # fmt: skip
    """Write WebDataset shards of (GT, LQ, caption, meta) samples that SUPIR trains on directly."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ConfigError(f"--name {name!r}: use letters, digits and underscores (it starts every shard file name)")
    cfg = ShardConfig(
        name=name, gt_size=gt_size, crop=crop, resize=resize, gt_format=gt_format, gt_quality=gt_quality,
        preset=preset, lq=lq, max_size=parse_size(max_size), max_count=max_count, val_fraction=val_fraction,
        negatives_fraction=negatives_fraction, source_weights=parse_weights(source_weight), seed=seed,
        text_encoder=text_encoder,
    )  # fmt: skip
    result = run_shard(settings, cfg, out_dir, make_limits(item_seconds, worker_memory))
    report = result["report"]
    for split, stats in report["splits"].items():
        shares = ", ".join(f"{g} {v:.1%}" for g, v in stats["shares"].items()) or "-"
        click.echo(f"{split}: {stats['written']} samples written of {stats['planned']} planned; mix: {shares}")
    if report["skipped_samples"] or report["too_small"]:
        click.echo(f"skipped: {report['skipped_samples']} too_small (not planned): {report['too_small']}")
    if report["unknown_sources"]:
        click.echo(f"warning: --source-weight names unknown sources: {', '.join(report['unknown_sources'])}")
    if report["failed_shards"]:
        click.echo(f"failed (see the `failures` table): {', '.join(report['failed_shards'])}")
    click.echo(f"{report['shards_written']} shards written, {report['shards_skipped']} already done; manifest: {result['manifest']}")
