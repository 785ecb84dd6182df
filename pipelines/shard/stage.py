"""The shard stage: one planned shard → one tar (appearing all at once) and its `shards` row.

:func:`write_shard` is a pure function of (plan, config): tar headers carry fixed mtime/owner and
members come in sorted order, so the same catalog + seed give byte-identical tars on any worker
count. A sample that cannot be made is skipped and counted by reason; a shard already at its target
path with the recorded size and SHA-256 is reused, not rewritten. A sample whose decoding kills the
worker (a native crash, a hang past the limit) costs that sample only: the engine retries the shard
without it (:meth:`ShardStage.without_part`), and the sample is counted and listed in `failures`.
"""

import dataclasses
import hashlib
import json

import cv2

from catalogs.lake import write_part
from catalogs.store import Store, open_file
from pipelines.engine.runtime import tune_malloc
from pipelines.engine.sources import read_bytes
from pipelines.engine.stage import Stage
from pipelines.engine.watch import note_part
from pipelines.shard.plan import SamplePlan, ShardConfig, ShardPlan
from pipelines.shard.sample import SampleSkipped, make_sample
from pipelines.shard.tar import ShardTar
from schemas.runs import utc_now


def _read(sample: SamplePlan) -> bytes:
    try:
        return read_bytes(sample.path)
    except OSError as exc:  # fsspec raises FileNotFoundError (an OSError) for missing keys too
        raise SampleSkipped("missing_file", f"{sample.path}: {exc.strerror or exc}") from None
    except ValueError as exc:  # an unknown URL scheme, a NUL in a path...
        raise SampleSkipped("unreadable", f"{sample.path}: {exc}") from None


def write_shard(plan: ShardPlan, cfg: ShardConfig, out_dir: str, root: str | None = None, run_id: str = "",
                lost: dict[str, int] | None = None) -> dict:
    """Write one planned shard atomically; return its `shards` row plus per-sample counters.

    ``out_dir`` is a folder or an fsspec URL (``s3://bucket/prefix/shards``): the tar appears all at
    once (see :class:`catalogs.store.Store`). With ``root`` the row is also written as a lake part
    named after the shard (a retry replaces it). ``lost``: samples the engine already took out of the
    plan, by reason (counted with the skipped ones).
    """
    cv2.setNumThreads(1)  # one task per core: the parallelism is Ray's
    tune_malloc()  # image-sized buffers stay on the heap (see pipelines.engine.runtime.tune_malloc)
    out = Store(out_dir)
    counts = {"written": 0, "skipped": dict(lost or {}), "sources": {}}

    def write(fh):
        tar = ShardTar(fh)
        try:
            for i, sample in enumerate(plan.samples):
                note_part(i)  # should this sample kill the worker, the engine retries without it
                _write_sample(tar, cfg, sample, counts)
            note_part(None)
        except BaseException:
            tar.abort()
            raise
        tar.close()
        if tar.size > cfg.max_size:  # the planner's bound is meant to make this impossible
            raise RuntimeError(f"{plan.shard}: {tar.size} bytes > --max-size {cfg.max_size}; size bound too low")
        counts["tar"] = tar

    final = out.write_atomic(plan.shard, write)  # a failed task leaves no half shard behind
    tar = counts["tar"]
    row = {
        "shard": plan.shard, "name": plan.name, "split": plan.split, "path": final,
        "samples": counts["written"], "bytes": tar.size, "sha256": tar.sha256.hexdigest(), "run_id": run_id,
        "created_at": utc_now(), "plan_digest": plan.digest,
        "sources_json": json.dumps(counts["sources"], sort_keys=True),
    }  # fmt: skip
    if root is not None:
        write_part(root, "shards", [row], name=_part_name(plan.shard))
    return {"row": row, "skipped": counts["skipped"], "sources": counts["sources"]}


def _write_sample(tar: ShardTar, cfg: ShardConfig, sample: SamplePlan, counts: dict) -> None:
    """One sample into the tar, or one skip counted by reason: a hostile image costs its sample only."""
    skipped = counts["skipped"]
    try:
        tar.write(make_sample(cfg, sample, _read(sample)))
    except SampleSkipped as exc:
        skipped[exc.reason] = skipped.get(exc.reason, 0) + 1
        return
    except Exception:
        skipped["corrupt"] = skipped.get("corrupt", 0) + 1
        return
    counts["written"] += 1
    group = "negatives" if sample.is_negative else (sample.source or "?")
    counts["sources"][group] = counts["sources"].get(group, 0) + 1


def _part_name(shard: str) -> str:
    return "shard-" + shard.removesuffix(".tar")


def file_sha256(path) -> str:
    """SHA-256 of a file by path or URL (an object-store tar is streamed, not downloaded first)."""
    digest = hashlib.sha256()
    with open_file(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_done(plan: ShardPlan, row: dict | None, out_dir: str) -> bool:
    """Done only when this plan's tar is at the target path with the recorded size and SHA-256."""
    if row is None or row.get("plan_digest") != plan.digest:
        return False
    out = Store(out_dir)
    if out.url_of(plan.shard) != row.get("path") or out.size(plan.shard) != row["bytes"]:
        return False
    return file_sha256(row["path"]) == row["sha256"]


class ShardStage(Stage):
    """Items: ``{"plan": ShardPlan, "done": the catalog's row of that shard or None}``; one per job."""

    name = "shard"
    table = "shards"
    collect = True

    def __init__(self, cfg: ShardConfig, out_dir: str, run_id: str):
        self.cfg, self.out_dir, self.run_id = cfg, out_dir, run_id

    def key(self, item: dict) -> str:
        return item["plan"].shard

    def cost(self, item: dict) -> float:
        return max(1.0, len(item["plan"].samples) / 4)  # the per-item limit is for a few samples

    def process_item(self, item: dict) -> dict:
        plan = item["plan"]
        if is_done(plan, item["done"], self.out_dir):
            return {**item["done"], "reused": True, "skipped": {}, "sources": {}}
        result = write_shard(plan, self.cfg, self.out_dir, run_id=self.run_id, lost=item.get("lost"))
        return {**result["row"], "reused": False, "skipped": result["skipped"], "sources": result["sources"]}

    def without_part(self, item: dict, part: int, reason: str, detail: str) -> tuple[dict, str] | None:
        """The shard without its sample ``part`` (which killed the worker). The plan keeps its digest:
        a later run finds the shard done instead of crashing on that sample again."""
        plan = item["plan"]
        if not 0 <= part < len(plan.samples):
            return None
        culprit = plan.samples[part]
        rest = plan.samples[:part] + plan.samples[part + 1 :]
        lost = dict(item.get("lost") or {})
        lost[reason] = lost.get(reason, 0) + 1
        return {**item, "plan": dataclasses.replace(plan, samples=rest), "lost": lost}, culprit.path

    def outcome(self, row: dict | None) -> str:
        return "reused" if row and row.get("reused") else "written"

    def part_name(self, items: list[dict]) -> str:
        return "shard-" + "-".join(self.key(i).removesuffix(".tar") for i in items)
