"""The driver: run a stage's pending items on Ray as tasks or on an actor pool, whatever an item does.

Work is cut into jobs of ``part_items`` items (one job = one Ray call = one part); at most two jobs
per worker are in flight (one running, one queued, which the backstop deadline allows for). A job that
comes back is counted. A job whose worker died (a signal, the watchdog of :class:`~pipelines.engine.isolation.
ItemWatch`, the OOM killer) or that passed the driver's backstop deadline is split: the note the
worker left names the items that were running; they are retried apart from the rest, in halves, until
the culprit is alone, and a lone culprit gets a ``crashed`` or ``timeout`` row. Every other item is
retried, so the rows do not depend on batch size or worker count. Model stages run on actors that
Ray restarts after a death; their decoding runs in CPU tasks ahead of them, handed over by reference.
"""

import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from catalogs.store import is_remote
from pipelines.engine.actors import TASKS_IN_FLIGHT_PER_ACTOR, ActorPool
from pipelines.engine.isolation import JobContext
from pipelines.engine.runtime import cluster_cpus, progress
from pipelines.engine.stage import CRASHED, TIMEOUT, Limits, Stage
from pipelines.engine.stats import StageStats
from pipelines.engine.watch import died_of_timeout, read_note
from pipelines.engine.worker import EngineActor, prepare_job, record_failure, record_lost_part, run_job
from schemas.errors import SupirDataError

log = logging.getLogger(__name__)

STARTUP_SECONDS = 120.0  # backstop grace per job: a fresh worker imports torch, an actor loads a model
NEVER_STARTED_RETRIES = 3  # a job killed before any item started is resubmitted whole this often


@dataclass(frozen=True)
class Plan:
    """How a stage runs: items per job, limits, and an actor pool (model stages) or CPU tasks."""

    part_items: int
    limits: Limits = field(default_factory=Limits)
    pool: ActorPool | None = None
    task_cpus: float = 1.0


@dataclass
class Job:
    items: list[dict]
    attempts: int = 0  # resubmissions of the same items after a death before any item started


@dataclass
class Running:
    job: Job
    job_id: str
    deadline: float
    actor: int | None = None


def run_stage(stage: Stage, work: list[dict], root: str, run_id: str, plan: Plan, show_progress: bool = True,
              save_stats: bool = True) -> StageStats:
    """Run ``work`` through ``stage``; every item ends as a row, a failure, or a counted outcome."""
    stats = StageStats(stage.name, run_id, items=len(work))
    if work:
        start = time.monotonic()
        notes = notes_dir(root) / f"{run_id}-{stage.name}"  # what dying workers leave behind
        try:
            _Driver(stage, work, root, run_id, plan, notes, stats).run(show_progress)
        finally:
            shutil.rmtree(notes, ignore_errors=True)
            with contextlib.suppress(OSError):
                notes.parent.rmdir()  # when no other run is going on
        stats.seconds = time.monotonic() - start
    if save_stats:
        stats.save(root)
    return stats


def notes_dir(root: str) -> Path:
    """Where workers leave the note of the item they are on: ``<root>/.engine`` for a folder root.

    Notes are small local files a dying worker's watchdog appends to, so an object-store root keeps
    them in the local temp folder instead. A worker on another node then leaves its note where the
    driver cannot read it; the driver bisects such a job without the hint (same rows, more retries).
    """
    if is_remote(root):
        return Path(tempfile.gettempdir()) / "supir-data-engine"
    return Path(root) / ".engine"


class _Driver:
    def __init__(self, stage, work, root, run_id, plan: Plan, notes: Path, stats: StageStats):
        import ray

        self.ray, self.stage, self.plan, self.stats = ray, stage, plan, stats
        self.root, self.run_id, self.notes = root, run_id, str(notes)
        size = max(1, plan.part_items)
        self.jobs = deque(Job(work[i : i + size]) for i in range(0, len(work), size))
        self.running: dict = {}
        self.serial = 0
        self.stage_ref = ray.put(stage)
        if plan.pool is not None:
            self._start_actors(plan.pool)
            self.slots = plan.pool.actors * TASKS_IN_FLIGHT_PER_ACTOR
        else:
            self.task = ray.remote(run_job).options(num_cpus=plan.task_cpus, max_retries=0)
            workers = max(1, math.floor(cluster_cpus() / plan.task_cpus))
            # One job queued per worker hides the driver's round trip; the backstop allows for the wait.
            self.slots = 2 * workers
        self.memory_bytes = int(plan.limits.worker_memory * _physical_memory() / max(1, self.slots // 2))

    def _start_actors(self, pool: ActorPool) -> None:
        ray = self.ray
        actor_cls = ray.remote(EngineActor).options(
            num_cpus=pool.cpus_per_actor, num_gpus=pool.gpus_per_actor, max_restarts=-1, max_task_retries=0
        )
        self.actors = [actor_cls.remote(self.stage) for _ in range(pool.actors)]  # by value: restarts need it
        self.prepare = ray.remote(prepare_job).options(num_cpus=pool.prepare_cpus, max_retries=0)
        self.load: list[int] = [0] * pool.actors

    def run(self, show_progress: bool) -> None:
        bar = progress(self.stage.name, outcomes="-")
        self.bar, self.task_id = bar, bar.add_task(self.stage.name, total=self.stats.items, outcomes="-")
        try:
            with bar if show_progress else nullcontext():
                while self.jobs or self.running:
                    while self.jobs and len(self.running) < self.slots:
                        self._submit(self.jobs.popleft())
                    self._actors_ready()
                    wait = max(0.0, min(r.deadline for r in self.running.values()) - time.monotonic())
                    ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=wait)
                    for ref in ready:
                        self._collect(ref)
                    now = time.monotonic()
                    for ref in [ref for ref, r in self.running.items() if r.deadline <= now]:
                        self._stop(ref)
        finally:
            for actor in getattr(self, "actors", []):  # free the GPUs for the next stage now
                self.ray.kill(actor)

    def _actors_ready(self) -> None:
        """Once, after the first jobs went out (their decoding overlaps the model load): a model that
        cannot load fails the run here, not item by item."""
        if self.plan.pool is None or getattr(self, "_ready", False):
            return
        try:
            self.ray.get([actor.ready.remote() for actor in self.actors])
        except self.ray.exceptions.RayActorError as exc:
            raise SupirDataError(f"{self.stage.name}: the model actors could not start: {exc}") from None
        self._ready = True

    # -- submitting -------------------------------------------------------------------------------
    def _context(self) -> JobContext:
        self.serial += 1
        cpus = self.plan.pool.prepare_cpus if self.plan.pool is not None else self.plan.task_cpus
        return JobContext(self.root, self.run_id, f"job{self.serial:07d}", self.notes, self.plan.limits,
                          self.memory_bytes, threads=max(1, round(cpus)))

    def _submit(self, job: Job) -> None:
        ctx = self._context()
        cost = sum(self.stage.cost(item) for item in job.items)
        deadline = time.monotonic() + STARTUP_SECONDS + 2 * cost * self.plan.limits.item_seconds
        if self.plan.pool is None:
            ref = self.task.remote(self.stage_ref, job.items, ctx)
            self.running[ref] = Running(job, ctx.job_id, deadline)
            return
        actor = min(range(len(self.actors)), key=self.load.__getitem__)
        self.load[actor] += 1
        prepared = self.prepare.remote(self.stage_ref, job.items, ctx)
        deadline += STARTUP_SECONDS * (self.load[actor] - 1)  # queued behind the actor's other job
        ref = self.actors[actor].run.remote(prepared, ctx)
        self.running[ref] = Running(job, ctx.job_id, deadline, actor)

    # -- results ----------------------------------------------------------------------------------
    def _collect(self, ref) -> None:
        run = self.running.pop(ref)
        if run.actor is not None:
            self.load[run.actor] -= 1
        try:
            summary = self.ray.get(ref)
        except Exception as exc:
            if not _is_worker_death(self.ray, exc):
                raise  # an engine or I/O error (the disk is full...): the run must stop
            self._after_death(run, CRASHED, f"{type(exc).__name__}")
            return
        self._count(summary)

    def _count(self, summary: dict) -> None:
        self.stats.add(summary)
        if self.stage.collect:
            self.stats.collected.extend(summary.get("rows_out", []))
        self.bar.update(self.task_id, completed=self.stats.done, outcomes=self.stats.line())

    def _stop(self, ref) -> None:
        """The backstop deadline passed (the worker's own watchdog did not fire): stop the worker."""
        run = self.running.pop(ref)
        if run.actor is not None:
            self.load[run.actor] -= 1
            self.ray.kill(self.actors[run.actor], no_restart=False)  # Ray restarts it
        else:
            self.ray.cancel(ref, force=True)
        self._after_death(run, TIMEOUT, "stopped by the driver after the job's deadline")

    def _after_death(self, run: Running, reason: str, why: str) -> None:
        """Split the job around the items its note names; a lone culprit gets its failure row."""
        running, text, part = read_note(self.notes, run.job_id)
        items = run.job.items
        if running is None or running.start >= len(items):
            if run.job.attempts < NEVER_STARTED_RETRIES:  # e.g. queued on an actor that another job killed
                self.jobs.appendleft(Job(items, run.job.attempts + 1))
                return
            suspects = range(len(items))  # died outside any item, again and again: bisect it all
        else:
            suspects = range(running.start, min(running.stop, len(items)))
        if died_of_timeout(text):
            reason = TIMEOUT
        if len(items) == 1:
            detail = _death_detail(reason, why, text, self.plan.limits, self.stage.cost(items[0]))
            reduced = None if part is None else self.stage.without_part(items[0], part, reason, detail)
            if reduced is not None:  # an item of many inputs: lose the culprit input only, retry the rest
                item, lost_key = reduced
                detail = f"{detail} (input {part} of {self.stage.key(items[0])})"
                record_lost_part(self.stage, lost_key, reason, detail, self._context())
                self.jobs.appendleft(Job([item]))
                return
            self._count(record_failure(self.stage, items[0], reason, detail, self._context()))
            return
        rest = [item for i, item in enumerate(items) if i not in suspects]
        group = [items[i] for i in suspects]
        half = (len(group) + 1) // 2
        for part in ([group] if len(group) == 1 else [group[:half], group[half:]]) + ([rest] if rest else []):
            self.jobs.appendleft(Job(part))


def _death_detail(reason: str, why: str, text: str, limits: Limits, cost: float) -> str:
    if reason == TIMEOUT:
        head = f"over the time limit of {limits.item_seconds * cost:g} s per item"
    elif text:
        head = "the worker died on this item (a fatal signal)"
    else:
        head = "the worker was killed on this item (SIGKILL, e.g. the out-of-memory killer)"
    stack = " | ".join(line.strip() for line in text.splitlines()[:12] if line.strip())
    return f"{head}; {why}" + (f"; {stack}" if stack else "")


def _is_worker_death(ray, exc: BaseException) -> bool:
    """A worker or actor that died, was cancelled, or lost its output: not a Python exception of ours."""
    errors = ray.exceptions
    deaths = (errors.WorkerCrashedError, errors.RayActorError, errors.TaskCancelledError,
              errors.ObjectLostError, errors.OutOfMemoryError, errors.NodeDiedError)  # fmt: skip
    if isinstance(exc, deaths):
        return True
    cause = getattr(exc, "cause", None)
    return isinstance(exc, errors.RayTaskError) and isinstance(cause, deaths)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 8 << 30
