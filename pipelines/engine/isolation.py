"""Per-item isolation inside a worker: no single item can stop, stall or starve a batch.

Three layers, from cheap to last resort:

1. An exception anywhere in an item's path (prepare, process, row building) becomes that item's row
   (the stage's ``failure_row`` with its ``error_reason`` and the exception text in ``detail``). A
   batched (model) stage that raises is split in halves until the item that raises is alone; an
   out-of-memory error halves the model batch for this and later calls instead (the one GPU OOM
   fallback).
2. Rows whose values do not fit the table (:func:`row_problem`) become ``corrupt`` before the part
   is written, so one bad value never costs the other rows of the part.
3. What Python cannot catch: the worker keeps a note of the item it is on and a watchdog that stops
   it after the item's time limit, even inside native code holding the GIL (:mod:`pipelines.engine.watch`).
   When the worker dies (a signal, the watchdog, the OOM killer) the driver reads the note and knows the
   culprit (:mod:`pipelines.engine.executor`). ``RLIMIT_DATA`` bounds what one CPU worker may
   allocate while it runs a batch, so a decompression bomb fails in its own worker.
"""

import math
import resource
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from pipelines.engine.stage import SCHEMA, Limits, Stage
from pipelines.engine.watch import ItemWatch, died_of_timeout, read_note  # noqa: F401 - re-exported
from schemas.tables import NON_NEGATIVE, TABLES

FAILED = "_failure"  # item key holding (reason, detail) once an item has failed


@dataclass(frozen=True)
class JobContext:
    """What a worker needs to run one unit of work (picklable)."""

    root: str
    run_id: str
    job_id: str
    notes_dir: str
    limits: Limits
    memory_bytes: int | None = None  # RLIMIT_DATA budget of this worker (None: unlimited)
    threads: int = 1  # native (OpenCV) threads a CPU worker may use: the CPUs its task asked for


def describe(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frame, short enough for a `detail` column."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


def is_out_of_memory(exc: BaseException) -> bool:
    """A GPU (torch.cuda.OutOfMemoryError, or a RuntimeError saying so) or host allocation failure."""
    return isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


@contextmanager
def memory_limit(budget: int | None):
    """Let this process allocate at most ``budget`` more bytes of data segment while the block runs."""
    if not budget or not hasattr(resource, "RLIMIT_DATA"):
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = vm_data() + budget
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def vm_data() -> int:
    """This process's data segment (what RLIMIT_DATA counts), in bytes; 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# -- exceptions → rows ------------------------------------------------------------------------------
def prepare_items(stage: Stage, items: list[dict], watch: ItemWatch | None) -> list[dict]:
    """``stage.prepare`` per item; an item that raises is marked failed and passed on."""
    out = []
    for i, item in enumerate(items):
        if FAILED in item:
            out.append(item)
            continue
        if watch:
            watch.start(i, stage.cost(item))
        try:
            out.append(stage.prepare(item))
        except Exception as exc:
            out.append({**item, FAILED: (stage.error_reason, describe(exc))})
    if watch:
        watch.stop()
    return out


class Failures(list):
    """(item, reason, detail) of failed items whose stage writes no failure row (-> `failures`)."""

    def row(self, stage: Stage, item: dict, reason: str, detail: str) -> dict | None:
        row = stage.failure_row(item, reason, detail)
        if row is None:
            self.append((item, reason, detail))
        return row


def process_items(stage: Stage, items: list[dict], watch: ItemWatch | None, failures: Failures) -> list:
    """One row per item (or None); failed items get their failure row, never an exception."""
    rows: list[dict | None] = [None] * len(items)
    todo = []
    for i, item in enumerate(items):
        if FAILED in item:
            rows[i] = failures.row(stage, item, *item[FAILED])
        else:
            todo.append(i)
    if stage.batched:
        size = max(1, getattr(stage, "batch_size", 0) or len(todo))
        start = 0
        while start < len(todo):  # chunk by the current batch size: an OOM shrinks it for what follows
            idx = todo[start : start + size]
            _process_chunk(stage, items, idx, rows, watch, failures)
            start += len(idx)
            size = max(1, getattr(stage, "batch_size", 0) or size)
    else:
        for i in todo:
            if watch:
                watch.start(i, stage.cost(items[i]))
            try:
                rows[i] = stage.process_item(items[i])
            except Exception as exc:
                rows[i] = failures.row(stage, items[i], stage.error_reason, describe(exc))
    if watch:
        watch.stop()
    return rows


def _process_chunk(stage: Stage, items: list[dict], idx: list[int], rows: list, watch: ItemWatch | None,
                   failures: Failures) -> None:
    """``stage.process`` on ``idx``; on an exception split in halves (OOM: also shrink the batch size)."""
    if watch:
        watch.start(idx[0], sum(stage.cost(items[i]) for i in idx), len(idx))
    try:
        out = stage.process([items[i] for i in idx])
        if len(out) != len(idx):
            raise RuntimeError(f"{stage.name}.process returned {len(out)} rows for {len(idx)} items")
    except Exception as exc:
        if len(idx) == 1:
            rows[idx[0]] = failures.row(stage, items[idx[0]], stage.error_reason, describe(exc))
            return
        half = (len(idx) + 1) // 2
        if is_out_of_memory(exc):
            _free_gpu_cache()
            stage.batch_size = max(1, min(getattr(stage, "batch_size", half) or half, half))
        _process_chunk(stage, items, idx[:half], rows, watch, failures)
        _process_chunk(stage, items, idx[half:], rows, watch, failures)
        return
    for i, row in zip(idx, out):
        rows[i] = row


def _free_gpu_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- rows that do not fit the table -----------------------------------------------------------------
def row_problem(schema: pa.Schema, row: dict) -> str | None:
    """Why ``row`` cannot be written in ``schema`` (None: it can): a type, range or NaN problem."""
    for field in schema:
        value = row.get(field.name)
        if value is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            return f"{field.name}={value} is not a finite number"
        if field.name in NON_NEGATIVE and isinstance(value, int | float) and value < 0:
            return f"{field.name}={value} is negative"
        try:
            pa.array([value], type=field.type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
            return f"{field.name}={str(value)[:80]} does not fit {field.type}: {exc}"
    return None


def conforming_rows(stage: Stage, table: str, items: list[dict], rows: list) -> tuple[list, list[tuple]]:
    """Rows ready to write, plus (item, reason, detail) of items that have no writable row."""
    schema = TABLES[table]
    items, rows = _flatten(items, rows)
    present = [r for r in rows if r is not None]
    if present and _fast_check(schema, present):
        return present, []
    good, orphans = [], []
    for item, row in zip(items, rows):
        if row is None:
            continue
        problem = row_problem(schema, row)
        if problem is None:
            good.append(row)
            continue
        replacement = stage.failure_row(item, SCHEMA, f"value out of range for the {table} table: {problem}")
        if replacement is not None and row_problem(schema, replacement) is None:
            good.append(replacement)
        else:
            orphans.append((item, SCHEMA, problem))
    return good, orphans


def _flatten(items: list[dict], rows: list) -> tuple[list[dict], list]:
    """An item may own several rows (long tables: one per metric); pair each row with its item."""
    if not any(isinstance(r, list) for r in rows):
        return items, rows
    flat_items, flat_rows = [], []
    for item, row in zip(items, rows):
        for r in row if isinstance(row, list) else [row]:
            flat_items.append(item)
            flat_rows.append(r)
    return flat_items, flat_rows


def _fast_check(schema: pa.Schema, rows: list[dict]) -> bool:
    """The whole batch converts and has no NaN or negative size: the common case, in one pass."""
    import pyarrow.compute as pc

    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return False
    for field in schema:
        col = table.column(field.name)
        if pa.types.is_floating(field.type) and pc.any(pc.invert(pc.is_finite(col))).as_py():
            return False
        if field.name in NON_NEGATIVE and (pc.min(col).as_py() or 0) < 0:
            return False
    return True
