"""What a dying worker leaves behind: the note of the item it is on, and the watchdog that stops a hang.

Before each item the worker writes the item's index to a note (a 2 µs ``pwrite``) and arms a kernel
timer (``setitimer``, 1 µs) whose ``SIGALRM`` is handled in C by :mod:`faulthandler` (it writes every
thread's stack, then the default action ends the process), so even a native decoder spinning with the
GIL held is stopped after the item's time limit. faulthandler's own watchdog thread
(``dump_traceback_later``) costs a thread start and join per item (0.1–1.4 ms measured, ~5 % of a 22 ms
scan); it remains the fallback off the main thread. When the worker dies, the driver reads the note
(:func:`read_note`) and knows the culprit (:mod:`pipelines.engine.executor`). An item made of many
inputs (a shard) also notes the input it is on (:func:`note_part`), so a crash costs that input only.
"""

import faulthandler
import os
import signal
import sys
import threading
from pathlib import Path

_IDLE = -1
_NO_PART = _IDLE.to_bytes(8, "little", signed=True)  # bytes 16..24 of a note: the input of the item
_current: "ItemWatch | None" = None  # the watch of the job this process runs (note_part writes to it)


class ItemWatch:
    """The note a worker keeps while it runs a job: which item is running, and the watchdog for it."""

    def __init__(self, ctx):  # a pipelines.engine.isolation.JobContext
        notes = Path(ctx.notes_dir)
        notes.mkdir(parents=True, exist_ok=True)
        self.item_seconds = ctx.limits.item_seconds
        self.fd = os.open(notes / f"{ctx.job_id}.idx", os.O_CREAT | os.O_RDWR, 0o644)
        self.log = open(notes / f"{ctx.job_id}.log", "a")  # faulthandler writes the dying stack here
        self._was_enabled = faulthandler.is_enabled()
        faulthandler.enable(file=self.log)
        self.alarm = _arm_alarm_handler(self.log)
        self.stop()
        global _current
        _current = self

    def start(self, index: int, cost: float = 1.0, count: int = 1) -> None:
        """Items ``index .. index+count-1`` run now, within ``cost × item_seconds``."""
        os.pwrite(self.fd, index.to_bytes(8, "little", signed=True) + count.to_bytes(8, "little") + _NO_PART, 0)
        seconds = self.item_seconds * max(cost, 1e-3)
        if self.alarm:
            signal.setitimer(signal.ITIMER_REAL, seconds)
        else:
            faulthandler.dump_traceback_later(seconds, exit=True, file=self.log)

    def stop(self) -> None:
        if self.alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
        else:
            faulthandler.cancel_dump_traceback_later()
        os.pwrite(self.fd, _IDLE.to_bytes(8, "little", signed=True) + bytes(8) + _NO_PART, 0)

    def part(self, index: int | None) -> None:
        os.pwrite(self.fd, _NO_PART if index is None else index.to_bytes(8, "little", signed=True), 16)

    def close(self) -> None:
        global _current
        if _current is self:
            _current = None
        self.stop()
        if self.alarm:
            faulthandler.unregister(signal.SIGALRM)
        faulthandler.enable(file=sys.stderr) if self._was_enabled else faulthandler.disable()
        os.close(self.fd)
        self.log.close()


def note_part(index: int | None) -> None:
    """The running item is now on its input ``index`` (None: on none of them, e.g. writing its output).

    A 1 µs ``pwrite``; a no-op outside an engine job (a stage's function called directly)."""
    if _current is not None:
        _current.part(index)


def _arm_alarm_handler(log) -> bool:
    """SIGALRM → faulthandler's C handler (all stacks to ``log``), chained to the default action
    (end the process). Only on the main thread (where ``signal`` may set handlers) and where no other
    handler owns SIGALRM; else False and the watchdog thread is used."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGALRM) not in (signal.SIG_DFL, None):
        return False
    faulthandler.register(signal.SIGALRM, file=log, all_threads=True, chain=True)
    return True


def died_of_timeout(text: str) -> bool:
    """What the dying worker wrote says its item ran out of time (and did not crash).

    The watchdog thread writes "Timeout (h:mm:ss)!"; the SIGALRM handler writes the stacks alone; a
    fatal signal (SIGSEGV, SIGBUS...) writes "Fatal Python error"; SIGKILL (the OOM killer) nothing.
    """
    return text.startswith("Timeout") or (bool(text) and "Fatal Python error" not in text)


def read_note(notes_dir: str, job_id: str) -> tuple[range | None, str, int | None]:
    """(the items running when the worker died, or None; what faulthandler wrote; the input of the
    running item it was on (:func:`note_part`), or None)."""
    notes = Path(notes_dir)
    try:
        raw = (notes / f"{job_id}.idx").read_bytes()[:24]
    except OSError:
        return None, "", None
    index = int.from_bytes(raw[:8], "little", signed=True) if len(raw) >= 16 else _IDLE
    try:
        text = (notes / f"{job_id}.log").read_text(errors="replace").strip()
    except OSError:
        text = ""
    count = int.from_bytes(raw[8:16], "little") if len(raw) >= 16 else 0
    part = int.from_bytes(raw[16:24], "little", signed=True) if len(raw) == 24 else _IDLE
    running = None if index == _IDLE else range(index, index + max(1, count))
    return running, text, None if part < 0 else part
