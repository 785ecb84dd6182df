"""The rows a stage writes do not depend on how the work is cut or how many workers run it (issue 10).

The real ingest scan stage, on the real engine, over a slice of the hostile corpus (valid files of every
format, mutants, bombs, non-images): one worker with one item per job, two workers with 64 items per job,
and two workers with an odd job size must give the same rows, item for item, apart from the run's own
stamps. Parts are named by their items, so only the number of parts may differ.
"""

import pyarrow.parquet as pq
import pytest

from catalogs.lake import list_parts
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.stage import Limits
from pipelines.ingest.scan import ScanConfig, ScanStage
from tests.pipelines.hostile_corpus import build_hostile_corpus

_STAMPS = ("run_id", "ingested_at")  # what differs between two runs by design


def _rows(root) -> dict[str, dict]:
    rows = [r for part in list_parts(root, "scans") for r in pq.read_table(part).to_pylist()]
    by_path = {r["path"]: {k: v for k, v in r.items() if k not in _STAMPS} for r in rows}
    assert len(by_path) == len(rows), "one row per path"
    return by_path


@pytest.mark.timeout(900)
def test_scan_rows_do_not_depend_on_workers_or_job_size(tmp_path, ray_cluster):
    files = build_hostile_corpus(tmp_path / "corpus", seed=3, public=False)[::4]
    items = [{"path": str(p), "source": "hostile"} for p in files]
    stage = ScanStage(ScanConfig(min_side=16), "run-det")
    results = {}
    for name, plan in {
        "1 worker, 1 item per job": Plan(part_items=1, task_cpus=2.0, limits=Limits(item_seconds=20)),
        "2 workers, 64 items per job": Plan(part_items=64, task_cpus=1.0, limits=Limits(item_seconds=20)),
        "2 workers, 7 items per job": Plan(part_items=7, task_cpus=1.0, limits=Limits(item_seconds=20)),
    }.items():
        root = tmp_path / name.replace(" ", "_").replace(",", "")
        stats = run_stage(stage, items, str(root), "run-det", plan, show_progress=False)
        assert stats.rows == len(items), name
        results[name] = (_rows(root), dict(stats.outcomes))
    (first_rows, first_outcomes), *others = results.values()
    assert sorted(first_rows) == sorted(str(p) for p in files)
    reasons = {r["reason"] for r in first_rows.values()}
    assert {None, "corrupt", "unsupported"} <= reasons, reasons  # the slice exercises several paths
    for name, (rows, outcomes) in list(results.items())[1:]:
        assert outcomes == first_outcomes, name
        differing = [p for p in first_rows if rows[p] != first_rows[p]]
        assert not differing, f"{name}: {len(differing)} rows differ, e.g. {differing[:3]}"
