"""What a stage declares; everything else about running it belongs to the engine.

A stage, in one sentence (DESIGN.md): *pending work from the catalog → ``process(items) -> rows``
(pure, no Ray) → parts written atomically → registered*. Like datatrove's pipeline steps, a stage is
one small class; the engine (:mod:`pipelines.engine.executor`) runs it as Ray tasks or on an actor
pool, isolates every item (:mod:`pipelines.engine.isolation`), counts outcomes and saves the run's
stats (:mod:`pipelines.engine.stats`). A stage never imports Ray.

Items are plain dicts (one row of the pending-work table); rows are dicts in the stage's lake table
schema, one per item and in the same order (``None``: this item writes no row; a list: several rows,
as in long tables). Keys a row holds
beyond the schema (per-sample counters, say) travel back to the driver but are not written.
"""

import hashlib
from dataclasses import dataclass

# Reason codes the engine itself gives an item (README, "Reason codes"). The stage's own codes stay its own.
CRASHED = "crashed"  # the worker died on this item (a signal: segfault, the OOM killer...)
TIMEOUT = "timeout"  # this item ran past its time limit; the worker was stopped
SCHEMA = "corrupt"  # the row's values do not fit the table (negative or > 2^31 sizes, NaN, wrong types)
ENGINE_REASONS = (CRASHED, TIMEOUT)


@dataclass(frozen=True)
class Limits:
    """Per-item limits (CLI: ``--item-seconds``, ``--worker-memory``).

    ``item_seconds`` bounds one item (times its :meth:`Stage.cost`); a worker past it is stopped and
    the item recorded as ``timeout``. ``worker_memory`` is the share of the machine's memory one CPU
    worker may add while it runs a batch (``RLIMIT_DATA``): an allocation past it fails in that worker
    (``MemoryError``, or a native abort → ``crashed``) instead of the kernel's OOM killer picking a
    victim. Model actors hold their weights and are not limited.
    """

    item_seconds: float = 30.0
    worker_memory: float = 0.5  # fraction of physical memory, split among the workers running at once

    def __post_init__(self):
        if not self.item_seconds > 0:
            raise ValueError(f"item time limit must be > 0 seconds, got {self.item_seconds}")
        if not 0 < self.worker_memory <= 1:
            raise ValueError(f"worker memory must be a fraction in (0, 1], got {self.worker_memory}")


class Stage:
    """Base class of a stage. Override what differs; the defaults suit a per-item CPU stage."""

    name = "stage"
    table: str | None = None  # lake table its rows go to (None: rows only go back to the driver)
    batched = False  # True: process() sees the whole chunk (a model batch); else process_item() per item
    error_reason = "error"  # reason of an item whose own code raised
    collect = False  # send rows back to the driver (small outputs: shard rows, verify results)
    uses_actors = False  # one long-lived worker per model replica (setup() once), else Ray tasks
    limit_memory = True  # apply Limits.worker_memory (CPU stages)

    def setup(self) -> None:
        """Once per worker before any item (a model stage loads its model here)."""

    def prepare(self, item: dict) -> dict:
        """A CPU step before process (decoding); model stages run it in tasks ahead of the actors."""
        return item

    def process_item(self, item: dict) -> dict | None:
        raise NotImplementedError

    def process(self, items: list[dict]) -> list[dict | None]:
        """The pure per-batch function: one row (or None) per item, in order."""
        return [self.process_item(item) for item in items]

    def failure_row(self, item: dict, reason: str, detail: str) -> dict | None:
        """The row that records a failed item (None: the engine records it in `failures`)."""
        return None

    def outcome(self, row: dict | None) -> str:
        """The counter one row adds to the run's stats."""
        if row is None:
            return "no_row"
        return row.get("reason") or "ok"

    def key(self, item: dict) -> str:
        """A stable name of an item: parts and failures are named after keys."""
        return str(item.get("path") or item.get("image_id"))

    def cost(self, item: dict) -> float:
        """Relative work of an item (its time limit is ``cost × item_seconds``)."""
        return 1.0

    def without_part(self, item: dict, part: int, reason: str, detail: str) -> tuple[dict, str] | None:
        """For an item made of many inputs (a shard of samples), which names the input it is on with
        :func:`pipelines.engine.watch.note_part`: when the worker dies on input ``part``, the item to
        retry without it (and having recorded it as ``reason``), and the key of the lost input for the
        `failures` table. None (the default): the whole item is recorded as ``reason``."""
        return None

    def part_name(self, items: list[dict]) -> str:
        """Deterministic part name of a unit of work: a retried batch replaces its own part."""
        digest = hashlib.sha256("\n".join(sorted(self.key(i) for i in items)).encode()).hexdigest()[:24]
        return f"{self.name}-{digest}"
