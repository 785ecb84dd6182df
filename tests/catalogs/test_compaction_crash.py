"""A compaction killed (SIGKILL) at each of its steps leaves the views exactly as before, and the next
compaction finishes the job. The child signals the step it reached through a FIFO and then waits to be
killed, so the crash point is exact (no timing)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from catalogs.catalog import Catalog
from catalogs.compaction import STEPS, compact_table
from catalogs.lake import COMPACTED_DIR, list_parts, read_manifest, table_layout
from tests.catalogs.lake_fixtures import build_lake, snapshot

REPO = Path(__file__).resolve().parents[2]

_CHILD = """
import os, signal, sys
from catalogs.compaction import compact_table
root, crash_at, fifo = sys.argv[1:]

def on_step(name):
    if name == crash_at:
        with open(fifo, "w") as fh:
            fh.write(name)
        signal.pause()  # killed here

try:
    compact_table(root, "scans", target_rows=40, row_group_rows=8, on_step=on_step)
finally:  # never reached the step: say so, so the parent does not wait forever
    with open(fifo, "w") as fh:
        fh.write("finished without " + crash_at)
"""


def _kill_at(root: Path, step: str, fifo: Path) -> str:
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(root), step, str(fifo)],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    try:
        with open(fifo) as fh:  # blocks until the child reaches the step (or finishes)
            reached = fh.read()
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    return reached


@pytest.mark.parametrize("step", STEPS)
def test_compaction_killed_at_each_step_changes_no_view(tmp_path, step):
    root = tmp_path / "root"
    catalog = build_lake(root, n_parts=12)
    before = snapshot(catalog)
    assert _kill_at(root, step, tmp_path / "fifo") == step
    # the views as they were stored at the crash, then as any later stage refreshes them
    assert snapshot(catalog) == before
    catalog.refresh()
    assert snapshot(catalog) == before
    # the next compaction rolls forward or back, and leaves no dead file
    compact_table(catalog, "scans", target_rows=40, row_group_rows=8)
    assert snapshot(catalog) == before
    manifest = read_manifest(catalog.store, "scans")
    live = {p.file for p in manifest.parts} | {p.members for p in manifest.parts}
    on_disk = {f"{COMPACTED_DIR}/{p.name}" for p in (root / "lake" / "scans" / COMPACTED_DIR).iterdir()}
    assert on_disk == live and list_parts(root, "scans") == []
    assert table_layout(catalog.store, "scans").leftovers == []
    assert compact_table(catalog, "scans", target_rows=40, row_group_rows=8).merged == 0
    assert snapshot(Catalog(root)) == before
