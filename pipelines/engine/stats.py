"""The one stats type of a stage run, saved as a `stage_runs` row and shown by `status`."""

import json
from dataclasses import dataclass, field

from catalogs.lake import write_part
from schemas.runs import utc_now


@dataclass
class StageStats:
    stage: str
    run_id: str
    items: int = 0  # pending items handed to the run
    rows: int = 0  # rows written
    outcomes: dict[str, int] = field(default_factory=dict)  # outcome or reason -> count
    seconds: float = 0.0
    done: int = 0  # items finished so far (progress)
    started_at: object = field(default_factory=utc_now)
    collected: list[dict] = field(default_factory=list)  # rows sent back by stages that collect them

    def add(self, summary: dict) -> None:
        """Fold in one job's summary (see pipelines.engine.worker.finish_job)."""
        self.done += summary["items"]
        self.rows += summary["rows"]
        for key, n in summary["counters"].items():
            self.outcomes[key] = self.outcomes.get(key, 0) + n

    def line(self, top: int = 4) -> str:
        """``ok=10 corrupt=2 ...``: the largest outcomes, for the progress bar."""
        ranked = sorted(self.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return " ".join(f"{k}={v}" for k, v in ranked) or "-"

    def save(self, root: str) -> None:
        row = {
            "run_id": self.run_id,
            "stage": self.stage,
            "items": self.items,
            "rows": self.rows,
            "outcomes_json": json.dumps(dict(sorted(self.outcomes.items()))),
            "seconds": round(self.seconds, 3),
            "started_at": self.started_at,
            "finished_at": utc_now(),
        }
        write_part(root, "stage_runs", [row], name=f"stats-{self.run_id}-{self.stage}")


LAST_RUNS_SQL = """
SELECT stage, run_id, items, rows, outcomes_json, seconds, finished_at FROM stage_runs
QUALIFY row_number() OVER (PARTITION BY stage ORDER BY finished_at DESC) = 1 ORDER BY stage"""


def last_runs(catalog) -> list[dict]:
    """The last run of each stage, outcomes decoded."""
    rows = catalog.query(LAST_RUNS_SQL).to_pylist()
    for r in rows:
        r["outcomes"] = json.loads(r.pop("outcomes_json") or "{}")
    return rows
