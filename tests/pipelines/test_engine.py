"""The stage engine: per-item isolation, rows that do not fit the table, native crashes and hangs.

The stages here are real stages run by the real engine on a real Ray; the "hostile" items kill
their own worker with a signal or block on one, as a native decoder would.
"""

import os
import signal

import pyarrow.parquet as pq
import pytest

from catalogs.lake import list_parts
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.isolation import JobContext, memory_limit, row_problem
from pipelines.engine.stage import Limits, Stage
from pipelines.engine.worker import run_job
from schemas.tables import SCANS


class ProbeStage(Stage):
    """Writes one `scans` row per path; the path's name says how the item misbehaves."""

    name = "probe"
    table = "scans"
    error_reason = "corrupt"

    def process_item(self, item: dict) -> dict:
        path = item["path"]
        if "segv" in path:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "sigkill" in path:
            os.kill(os.getpid(), signal.SIGKILL)
        if "hang" in path:
            signal.pause()  # blocks until a signal arrives: the watchdog's
        if "raise" in path:
            raise TypeError("Missing dimensions")
        if "huge" in path:
            return {"path": path, "source": "t", "width": 4294967169, "height": 10}
        if "negative" in path:
            return {"path": path, "source": "t", "width": -1, "height": 10}
        if "nan" in path:
            return {"path": path, "source": "t", "width": 10, "height": 10, "sharpness": float("nan")}
        if "alloc" in path:
            import numpy as np

            np.ones(1 << 30, dtype=np.uint8)  # 1 GiB, over the test's memory budget
        return {"path": path, "source": "t", "width": 10, "height": 10}

    def failure_row(self, item: dict, reason: str, detail: str) -> dict:
        return {"path": item["path"], "source": "t", "reason": reason, "detail": detail}


def rows_of(root) -> dict[str, dict]:
    rows = [r for part in list_parts(root, "scans") for r in pq.read_table(part).to_pylist()]
    by_path = {r["path"]: r for r in rows}
    assert len(by_path) == len(rows), "one row per path"
    return by_path


def context(root, memory=None) -> JobContext:
    return JobContext(str(root), "run-test", "job0", str(root / "notes"), Limits(), memory)


def test_process_isolates_exceptions_and_values_that_do_not_fit(tmp_path):
    """No Ray: one job in this process. Every item gets a row; the bad ones say why."""
    paths = ["ok-1", "raise-2", "huge-3", "negative-4", "nan-5", "ok-6"]
    summary = run_job(ProbeStage(), [{"path": p} for p in paths], context(tmp_path))
    rows = rows_of(tmp_path)
    assert sorted(rows) == sorted(paths) and summary["rows"] == 6
    assert rows["ok-1"]["reason"] is None and rows["ok-6"]["width"] == 10
    assert rows["raise-2"]["reason"] == "corrupt" and "TypeError: Missing dimensions" in rows["raise-2"]["detail"]
    for bad in ("huge-3", "negative-4", "nan-5"):
        assert rows[bad]["reason"] == "corrupt" and rows[bad]["width"] is None, bad
    assert "4294967169" in rows["huge-3"]["detail"]
    assert summary["counters"] == {"ok": 2, "corrupt": 4}


def test_row_problem_names_the_column():
    assert row_problem(SCANS, {"path": "a", "width": 2**31}).startswith("width=2147483648")
    assert "negative" in row_problem(SCANS, {"path": "a", "bytes": -5})
    assert "finite" in row_problem(SCANS, {"path": "a", "noise_sigma": float("inf")})
    assert "does not fit" in row_problem(SCANS, {"path": "a", "width": "wide"})
    assert row_problem(SCANS, {"path": "a", "width": 7, "sharpness": 0.5}) is None


def test_memory_limit_fails_the_allocation_not_the_process(tmp_path):
    summary = run_job(ProbeStage(), [{"path": "alloc-1"}, {"path": "ok-2"}], context(tmp_path, memory=256 << 20))
    rows = rows_of(tmp_path)
    assert rows["alloc-1"]["reason"] == "corrupt" and "MemoryError" in rows["alloc-1"]["detail"]
    assert rows["ok-2"]["reason"] is None and summary["rows"] == 2
    import numpy as np

    with memory_limit(None):
        assert np.ones(1 << 28, dtype=np.uint8).sum() == 1 << 28  # the limit was lifted afterwards


@pytest.mark.parametrize("part_items", [1, 64])
def test_a_native_crash_is_isolated_to_its_item(tmp_path, ray_cluster, part_items):
    """SIGSEGV on one item and SIGKILL on another: both `crashed`, every other item has its row."""
    paths = [f"item-{i:02d}" for i in range(20)]
    paths[5], paths[13] = "segv-05", "sigkill-13"
    stats = run_stage(ProbeStage(), [{"path": p} for p in paths], str(tmp_path), "run-crash",
                      Plan(part_items=part_items), show_progress=False)
    rows = rows_of(tmp_path)
    assert sorted(rows) == sorted(paths)
    assert {p for p, r in rows.items() if r["reason"]} == {"segv-05", "sigkill-13"}
    assert rows["segv-05"]["reason"] == rows["sigkill-13"]["reason"] == "crashed"
    assert "fatal signal" in rows["segv-05"]["detail"] and "Segmentation fault" in rows["segv-05"]["detail"]
    assert stats.outcomes == {"ok": 18, "crashed": 2} and stats.rows == 20


def test_a_hanging_item_times_out_alone(tmp_path, ray_cluster):
    """An item that blocks forever is stopped by the worker's watchdog after its limit: `timeout`."""
    paths = ["a-1", "hang-2", "b-3", "c-4"]
    stats = run_stage(ProbeStage(), [{"path": p} for p in paths], str(tmp_path), "run-hang",
                      Plan(part_items=4, limits=Limits(item_seconds=2)), show_progress=False)
    rows = rows_of(tmp_path)
    assert sorted(rows) == sorted(paths)
    assert rows["hang-2"]["reason"] == "timeout" and "time limit of 2 s" in rows["hang-2"]["detail"]
    assert all(rows[p]["reason"] is None for p in ("a-1", "b-3", "c-4"))
    assert stats.outcomes == {"ok": 3, "timeout": 1}
    saved = pq.read_table(list_parts(tmp_path, "stage_runs")[0]).to_pylist()[0]
    assert saved["stage"] == "probe" and saved["items"] == 4 and '"timeout": 1' in saved["outcomes_json"]
