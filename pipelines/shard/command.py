"""`supir-data shard`: accepted images (+ negatives, + latest captions) → WebDataset tars for the trainer.

The driver plans every shard (pipelines/shard/plan.py); one Ray task per shard runs
:func:`write_shard`, a pure function of (plan, config) that writes ``NAME-{split}-{000000}.tar`` under
a temporary name, renames it, and writes its `shards` row. Tar headers carry fixed mtime/owner and
members come in sorted order, so the same catalog + seed give byte-identical tars on any worker count.
A shard whose plan digest, file and size match the catalog is skipped (resume at shard granularity).
"""

import hashlib
import json
import os
import re
import tarfile
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import click
import cv2

from catalogs.catalog import Catalog
from catalogs.lake import list_parts, write_part
from pipelines.engine.runtime import Settings, cluster_cpus, init_ray, progress, tune_malloc
from pipelines.engine.sources import read_bytes
from pipelines.shard.plan import (
    GT_FORMATS,
    SamplePlan,
    ShardConfig,
    ShardPlan,
    brace_pattern,
    pack_shards,
    parse_size,
    parse_weights,
    select_samples,
)
from pipelines.shard.sample import SampleSkipped, make_sample
from schemas.errors import ConfigError
from schemas.runs import new_run_id, utc_now
from schemas.sample import SAMPLE_SPEC_VERSION, SPLITS, manifest_name
from schemas.tables import QUALITY_SIGNALS

TAR_MTIME = 0  # fixed header fields: webdataset's TarWriter stamps "now" unless told (not reproducible)
TAR_OWNER = "supir"


class ShardTar:
    """Writes samples as tar members byte-for-byte like webdataset's ``TarWriter(encoder=False, mtime=0,
    user="supir", group="supir")`` (tested), but straight to the file: no 10 KB re-chunking by tarfile's
    stream, and a helper thread writes and hashes (both release the GIL) while the next sample is built.
    """

    def __init__(self, fh):
        self.fh, self.sha256, self.size = fh, hashlib.sha256(), 0
        self._pool = ThreadPoolExecutor(max_workers=1)  # one worker: chunks stay in order
        self._pending: deque[Future] = deque()

    def _drain(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.fh.write(chunk)
            self.sha256.update(chunk)

    def _emit(self, chunks: list[bytes]) -> None:
        self.size += sum(len(c) for c in chunks)
        self._pending.append(self._pool.submit(self._drain, chunks))
        if len(self._pending) > 8:  # bound memory: a few samples in flight
            self._pending.popleft().result()

    def write(self, sample: dict) -> None:
        """One sample: members in sorted order (webdataset's), fixed header fields (reproducible)."""
        chunks = []
        for ext in sorted(k for k in sample if not k.startswith("_")):
            data = sample[ext]
            info = tarfile.TarInfo(f"{sample['__key__']}.{ext}")
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), TAR_MTIME, 0o444, TAR_OWNER, TAR_OWNER
            chunks += [info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"), data]
            if len(data) % tarfile.BLOCKSIZE:
                chunks.append(tarfile.NUL * (tarfile.BLOCKSIZE - len(data) % tarfile.BLOCKSIZE))
        self._emit(chunks)

    def close(self) -> None:
        """End-of-archive blocks padded to the record size (as tarfile does), then wait for the writes."""
        end = 2 * tarfile.BLOCKSIZE
        self._emit([tarfile.NUL * (end + (-(self.size + end)) % tarfile.RECORDSIZE)])
        self.abort()

    def abort(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()  # re-raises a write error
        finally:
            self._pool.shutdown()


# -- one shard (the per-unit pure function) ---------------------------------------------------------


def _read(sample: SamplePlan) -> bytes:
    try:
        return read_bytes(sample.path)
    except OSError as exc:  # fsspec raises FileNotFoundError (an OSError) for missing keys too
        raise SampleSkipped("missing_file", f"{sample.path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an unknown URL scheme, a NUL in a path...
        raise SampleSkipped("unreadable", f"{sample.path}: {exc}") from None


def write_shard(plan: ShardPlan, cfg: ShardConfig, out_dir: str, root: str | None = None, run_id: str = "") -> dict:
    """Write one planned shard atomically; return its `shards` row plus per-sample counters.

    With ``root`` the row is also written as a lake part named after the shard (a retry replaces it).
    """
    cv2.setNumThreads(1)  # one task per core: the parallelism is Ray's
    tune_malloc()  # image-sized buffers stay on the heap (see pipelines.engine.runtime.tune_malloc)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / plan.shard
    tmp = out / f".{plan.shard}.tmp-{uuid.uuid4().hex[:8]}"
    written, skipped, sources = 0, {}, {}
    try:
        with open(tmp, "wb") as fh:
            tar = ShardTar(fh)
            try:
                for sample in plan.samples:
                    try:
                        tar.write(make_sample(cfg, sample, _read(sample)))
                    except SampleSkipped as exc:
                        skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
                        continue
                    written += 1
                    group = "negatives" if sample.is_negative else (sample.source or "?")
                    sources[group] = sources.get(group, 0) + 1
            except BaseException:
                tar.abort()
                raise
            tar.close()
            fh.flush()
            os.fsync(fh.fileno())
        if tar.size > cfg.max_size:  # the planner's bound is meant to make this impossible
            raise RuntimeError(f"{plan.shard}: {tar.size} bytes > --max-size {cfg.max_size}; size bound too low")
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed task leaves no half shard behind
        raise
    os.replace(tmp, final)
    row = {
        "shard": plan.shard, "name": plan.name, "split": plan.split, "path": str(final.resolve()),
        "samples": written, "bytes": tar.size, "sha256": tar.sha256.hexdigest(), "run_id": run_id,
        "created_at": utc_now(), "plan_digest": plan.digest,
    }  # fmt: skip
    if root is not None:
        write_part(root, "shards", [row], name=_part_name(plan.shard))
    return {"row": row, "skipped": skipped, "sources": sources}


def _part_name(shard: str) -> str:
    return "shard-" + shard.removesuffix(".tar")


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

    def negatives():
        for row in rows(_NEGATIVES_SQL):  # negatives' paths may be relative to the data root
            path = Path(row["path"])
            path = path if path.is_absolute() else catalog.root / path
            row["path"] = str(path)
            row["bytes"] = path.stat().st_size if path.exists() else 0
            yield row

    selected, report = select_samples(cfg, rows(_POSITIVES_SQL), negatives())
    return pack_shards(cfg, selected), report


def _done_shards(catalog: Catalog, name: str) -> dict[str, dict]:
    rows = catalog.query(
        "SELECT * FROM shards WHERE name = ? QUALIFY row_number() OVER (PARTITION BY shard ORDER BY created_at DESC) = 1",
        [name],
    ).to_pylist()
    return {r["shard"]: r for r in rows}


def _is_done(plan: ShardPlan, row: dict | None) -> bool:
    if row is None or row.get("plan_digest") != plan.digest:
        return False
    path = Path(row["path"])
    return path.exists() and path.stat().st_size == row["bytes"]


def _remove_stale(root: Path, out: Path, name: str, keep: set[str]) -> list[str]:
    """Tars of an earlier plan under the same name (e.g. more shards before) and their rows go."""
    removed = []
    for tar in sorted(out.glob(f"{name}-*-*.tar")) + sorted(out.glob(f".{name}-*.tmp-*")):
        if re.fullmatch(rf"\.?{re.escape(name)}-(train|val)-\d{{6}}\.tar(\.tmp-\w+)?", tar.name) and tar.name not in keep:
            tar.unlink()
            removed.append(tar.name)
    for part in list_parts(root, "shards"):
        shard = part.name.removeprefix("part-shard-").removesuffix(".parquet") + ".tar"
        if shard.startswith(f"{name}-") and shard not in keep:
            part.unlink()
    return removed


def write_manifest(out: Path, cfg: ShardConfig, rows: list[dict], report: dict) -> Path:
    splits = {}
    for split in SPLITS:
        mine = sorted((r for r in rows if r["split"] == split), key=lambda r: r["shard"])
        entries = [{k: r[k] for k in ("shard", "samples", "bytes", "sha256")} | {"path": r["shard"]} for r in mine]
        pattern = brace_pattern(cfg.name, split, len(mine))
        splits[split] = {
            "pattern": pattern,  # relative to this manifest's folder
            "url": str(out.resolve() / pattern) if pattern else None,
            "samples": sum(r["samples"] for r in mine),
            "bytes": sum(r["bytes"] for r in mine),
            "shards": entries,
        }
    manifest = {"name": cfg.name, "spec_version": SAMPLE_SPEC_VERSION, "config": cfg.content(), "splits": splits, "report": report}
    path = out / manifest_name(cfg.name)
    tmp = out / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def run_shard(settings: Settings, cfg: ShardConfig, out_dir: str | None = None) -> dict:
    """Plan, write the shards that are not done on Ray, register rows, write the manifest; returns it."""
    import ray

    catalog = Catalog(settings.root)
    catalog.refresh()  # pick up rows of shards a crashed run finished
    out = Path(out_dir) if out_dir else catalog.root / "shards"
    out.mkdir(parents=True, exist_ok=True)
    plans, report = plan_from_catalog(catalog, cfg)
    if not plans:
        raise ConfigError("no accepted images to shard (run `supir-data ingest` first, or check --gt-size)")
    done = _done_shards(catalog, cfg.name)
    todo = [p for p in plans if not _is_done(p, done.get(p.shard))]
    report["stale_removed"] = _remove_stale(catalog.root, out, cfg.name, {p.shard for p in plans})
    run_id = new_run_id("shard")
    catalog.record_run(run_id, "shard", cfg.content() | {"name": cfg.name, "out": str(out)})
    todo_names = {p.shard for p in todo}
    results = {p.shard: {"row": done[p.shard], "skipped": {}, "sources": {}} for p in plans if p.shard not in todo_names}
    if todo:
        init_ray(settings)
        task = ray.remote(num_cpus=1)(write_shard)
        cfg_ref, pending = ray.put(cfg), []
        queue, limit = list(todo), 2 * cluster_cpus()
        with progress("shard", written="0") as bar:
            job = bar.add_task("shards", total=len(todo), written="0")
            while queue or pending:
                while queue and len(pending) < limit:
                    plan = queue.pop(0)
                    pending.append(task.remote(plan, cfg_ref, str(out), str(catalog.root), run_id))
                ready, pending = ray.wait(pending, num_returns=1)
                result = ray.get(ready[0])
                results[result["row"]["shard"]] = result
                bar.update(job, advance=1, written=str(sum(r["row"]["samples"] for r in results.values())))
    catalog.refresh()
    rows = [results[p.shard]["row"] for p in plans]
    report.update(_summary(plans, results, len(todo)))
    write_manifest(out, cfg, rows, report)
    return {"rows": rows, "report": report, "manifest": str(out / manifest_name(cfg.name)), "written": len(todo)}


def _summary(plans: list[ShardPlan], results: dict, n_written: int) -> dict:
    """Planned vs written mix per split: source shares and the negatives fraction actually reached."""
    out = {"shards_written": n_written, "shards_skipped": len(plans) - n_written, "skipped_samples": {}, "splits": {}}
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
        written = sum(results[p.shard]["row"]["samples"] for p in plans if p.split == split)
        out["splits"][split] = {
            "planned": total,
            "written": written,
            "shares": {g: round(n / total, 4) for g, n in sorted(groups.items())} if total else {},
            "negatives_fraction": round(groups.get("negatives", 0) / total, 4) if total else 0.0,
        }
    return out


# -- the command -----------------------------------------------------------------------------------

@click.command("shard")
@click.option("--name", default="supir", show_default=True, help="Shard set name: NAME-{split}-{000000}.tar.")
@click.option("--out", "out_dir", default=None, help="Output folder [default: ROOT/shards].")
@click.option("--gt-size", default=1024, show_default=True, help="GT side in pixels (square); 0 keeps whole images.")
@click.option("--crop", type=click.Choice(["center", "random"]), default="center", show_default=True)
@click.option("--resize/--no-resize", default=True, show_default=True, help="Resize the short side to --gt-size (else a native-resolution crop).")
@click.option("--gt-format", type=click.Choice(sorted(GT_FORMATS)), default="png", show_default=True, help="Format of re-encoded GTs.")
@click.option("--gt-quality", default=95, show_default=True, help="Quality of jpg/webp GTs.")
@click.option("--preset", default="supir", show_default=True, help="Degradation preset of the LQ.")
@click.option("--lq", type=click.Choice(["precomputed", "none"]), default="precomputed", show_default=True, help="none: the reader degrades on the fly.")
@click.option("--max-size", default="1GB", show_default=True, help="Upper bound of a shard's size.")
@click.option("--max-count", default=10000, show_default=True, help="Samples per shard at most.")
@click.option("--val-fraction", default=0.005, show_default=True, help="Share of image ids in the val split.")
@click.option("--negatives-fraction", type=float, default=None, help="Target share of negative samples [default: all negatives once].")
@click.option("--source-weight", multiple=True, help="SRC=W: per-image inclusion rate of a source (0 drops, 2 repeats).")
@click.option("--seed", default=0, show_default=True)
@click.pass_obj
def shard_command(settings: Settings, name, out_dir, gt_size, crop, resize, gt_format, gt_quality, preset, lq,
                  max_size, max_count, val_fraction, negatives_fraction, source_weight, seed):  # fmt: skip
    """Write WebDataset shards of (GT, LQ, caption, meta) samples that SUPIR trains on directly."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ConfigError(f"--name {name!r}: use letters, digits and underscores (it starts every shard file name)")
    cfg = ShardConfig(
        name=name, gt_size=gt_size, crop=crop, resize=resize, gt_format=gt_format, gt_quality=gt_quality,
        preset=preset, lq=lq, max_size=parse_size(max_size), max_count=max_count, val_fraction=val_fraction,
        negatives_fraction=negatives_fraction, source_weights=parse_weights(source_weight), seed=seed,
    )  # fmt: skip
    result = run_shard(settings, cfg, out_dir)
    report = result["report"]
    for split, stats in report["splits"].items():
        shares = ", ".join(f"{g} {v:.1%}" for g, v in stats["shares"].items()) or "-"
        click.echo(f"{split}: {stats['written']} samples written of {stats['planned']} planned; mix: {shares}")
    if report["skipped_samples"] or report["too_small"]:
        click.echo(f"skipped: {report['skipped_samples']} too_small (not planned): {report['too_small']}")
    if report["unknown_sources"]:
        click.echo(f"warning: --source-weight names unknown sources: {', '.join(report['unknown_sources'])}")
    click.echo(f"{report['shards_written']} shards written, {report['shards_skipped']} already done; manifest: {result['manifest']}")
