"""What runs inside a Ray worker: one unit of work (a job) of a stage, isolated item by item.

A job is prepared, processed, checked against the table and written as one part (deterministic
name: a retried job replaces its part). It returns a small summary to the driver: counters per
outcome, rows written, and the rows themselves for stages that collect them.
"""

from catalogs.lake import conform, write_part
from pipelines.engine.actors import part_name
from pipelines.engine.isolation import (
    FAILED,
    Failures,
    ItemWatch,
    JobContext,
    conforming_rows,
    memory_limit,
    prepare_items,
    process_items,
)
from pipelines.engine.runtime import limit_native_threads, tune_malloc
from pipelines.engine.stage import Stage
from schemas.runs import utc_now


def run_job(stage: Stage, items: list[dict], ctx: JobContext, prepared: bool = False) -> dict:
    """Prepare (unless done ahead), process and write one job; never raises for an item's sake."""
    if not stage.uses_actors:
        tune_malloc()  # image-sized buffers stay on the heap (see runtime.tune_malloc)
        limit_native_threads(ctx.threads)
    failures = Failures()
    watch = ItemWatch(ctx)
    try:
        with memory_limit(ctx.memory_bytes if stage.limit_memory and not stage.uses_actors else None):
            if not prepared:
                items = prepare_items(stage, items, watch)
            rows = process_items(stage, items, watch, failures)
    finally:
        watch.close()
    return finish_job(stage, items, rows, failures, ctx)


def prepare_job(stage: Stage, items: list[dict], ctx: JobContext) -> list[dict]:
    """The CPU step ahead of a model actor (decoding), under the same watch and memory limit."""
    tune_malloc()
    limit_native_threads(ctx.threads)
    watch = ItemWatch(ctx)
    try:
        with memory_limit(ctx.memory_bytes if stage.limit_memory else None):
            return prepare_items(stage, items, watch)
    finally:
        watch.close()


def finish_job(stage: Stage, items: list[dict], rows: list, failures: Failures, ctx: JobContext) -> dict:
    """Check rows against the table, write the part (and the failures part), count outcomes."""
    counters: dict[str, int] = {}
    good = [r for row in rows for r in (row if isinstance(row, list) else [row]) if r is not None]
    if stage.table:
        good, orphans = conforming_rows(stage, stage.table, items, rows)
        failures.extend(orphans)
    for row in good:
        key = stage.outcome(row)
        counters[key] = counters.get(key, 0) + 1
    for _, reason, _ in failures:
        counters[reason] = counters.get(reason, 0) + 1
    written = 0
    if stage.table and good:
        write_part(ctx.root, stage.table, good, name=stage.part_name(items))
        written = len(good)
    if failures:
        now = utc_now()
        records = [_failure_record(stage, stage.key(item), reason, detail, ctx, now) for item, reason, detail in failures]
        write_part(ctx.root, "failures", records, name=stage.part_name(items))
    summary = {"items": len(items), "rows": written, "counters": counters}
    if stage.collect:
        summary["rows_out"] = [_without_arrays(r) for r in good]
    return summary


def record_failure(stage: Stage, item: dict, reason: str, detail: str, ctx: JobContext) -> dict:
    """The driver's side: an item whose worker died (crashed) or was stopped (timeout) gets its row."""
    failures = Failures()
    row = failures.row(stage, {k: v for k, v in item.items() if k != FAILED}, reason, detail)
    return finish_job(stage, [item], [row], failures, ctx)


def record_lost_part(stage: Stage, key: str, reason: str, detail: str, ctx: JobContext) -> None:
    """The driver's side: the `failures` row of one input that an item of many inputs lost (a shard's
    sample that crashed its worker); the item itself is retried without it."""
    record = _failure_record(stage, key, reason, detail, ctx, utc_now())
    write_part(ctx.root, "failures", [record], name=part_name(f"{stage.name}-lost", [record["key"]]))


def _failure_record(stage: Stage, key: str, reason: str, detail: str, ctx: JobContext, now) -> dict:
    """One `failures` row; keys (paths) with undecodable bytes are escaped so the part can be written."""
    return {"stage": stage.name, "key": _printable(key), "reason": reason, "detail": _printable(detail),
            "run_id": ctx.run_id, "created_at": now}


def _printable(text: str | None) -> str | None:
    return text.encode("utf-8", "backslashreplace").decode("utf-8") if text else text


def _without_arrays(row: dict) -> dict:
    return {k: v for k, v in row.items() if not hasattr(v, "__array__")}


class EngineActor:
    """A model replica: the stage's ``setup`` runs once, then jobs arrive already prepared."""

    def __init__(self, stage: Stage):
        stage.setup()
        if stage.table:
            # pyarrow imports pandas on its first row conversion (~0.4-0.7 s): pay it at start-up,
            # not while the next part waits behind this actor's first one.
            conform(stage.table, [])
        self.stage = stage

    def run(self, items: list[dict], ctx: JobContext) -> dict:
        return run_job(self.stage, items, ctx, prepared=True)

    def ready(self) -> bool:
        return True
