"""Top-up decisions: decide only the near-duplicate components that a run's new rows touch.

A decision (pipelines.ingest.decide) is a function of one connected component of the candidates'
duplicate graph (same ``image_id``, or perceptual hashes within the distance): its members, their
signals and scores, their pixels. A top-up therefore recomputes, with the very same code, only the
union of the components that contain a new row, and keeps every other row of `decisions`:

1. *new rows*: `scans` and `iqa_scores` rows of runs the last decide did not see (the state below
   counts rows per ``run_id``);
2. *closure*: their paths, image_ids and hashes, grown until nothing new joins: rows at the same path
   (a file scanned again), rows sharing an image_id, codes within the distance of a code already in
   (a breadth-first search over the multi-index hash tables of every candidate code,
   pipelines.ingest.dedup.MultiIndex);
3. the subset's decisions replace the old rows of its paths.

The hash tables are rebuilt per top-up from the ``phash`` column (8 bytes a row, read from the
compacted parts in one scan), not persisted: persisting them would mean rewriting 3 sorted arrays of
the whole catalog on every top-up (an insert into a sorted array moves everything after it), which
costs as much as the rebuild's sorts, and they could never disagree with the lake.

A top-up is refused, and the full pass runs, when there is no state, the rules differ (thresholds,
metrics, distance, DECIDE_VERSION), or rows the last decide saw are gone or changed (a run's row
count differs: a removal is not a top-up). `decisions` stays one part, replaced whole by every
decide, and stays small without compaction: it holds only the rows decide rejected (at most one per
path, no history), the part is rewritten from the merged rows (O(decisions), not O(catalog)).
"""

import json
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from catalogs.catalog import Catalog
from catalogs.lake import conform
from pipelines.ingest.dedup import MultiIndex

STATE_FILE = "lake/decisions/_state.json"  # beside the part it describes; not a part (no view reads it)


@dataclass(frozen=True)
class Snapshot:
    """Rows per ``run_id`` of the tables decisions read (what a decide saw)."""

    scans: dict[str, int]
    iqa_scores: dict[str, int]

    @property
    def scans_rows(self) -> int:
        return sum(self.scans.values())


@dataclass(frozen=True)
class DecideState:
    """The rules the current `decisions` were made by and the rows they cover."""

    rules: dict
    seen: Snapshot

    def to_json(self) -> bytes:
        body = {"rules": self.rules, "scans": self.seen.scans, "iqa_scores": self.seen.iqa_scores}
        return (json.dumps(body, sort_keys=True) + "\n").encode()


@dataclass(frozen=True)
class Plan:
    new_runs: list[str]  # runs with rows the last decide did not see


@dataclass(frozen=True)
class Outcome:
    mode: str  # "full" | "topup" | "unchanged"
    decided: int  # candidate rows the decision rules ran over


def snapshot(catalog: Catalog) -> Snapshot:
    counts = {}
    for table in ("scans", "iqa_scores"):
        rows = catalog.query(f"SELECT coalesce(run_id, '') AS run_id, count(*) AS n FROM {table} GROUP BY 1")
        counts[table] = dict(zip(rows.column("run_id").to_pylist(), rows.column("n").to_pylist()))
    return Snapshot(**counts)


def read_state(catalog: Catalog) -> DecideState | None:
    raw = catalog.store.read_bytes(STATE_FILE)
    if raw is None:
        return None
    body = json.loads(raw)
    return DecideState(body["rules"], Snapshot(body["scans"], body["iqa_scores"]))


def write_state(catalog: Catalog, state: DecideState) -> None:
    catalog.store.write_bytes(STATE_FILE, state.to_json())


def plan(state: DecideState | None, now: Snapshot, rules: dict) -> Plan | None:
    """The runs a top-up must look at, or None when only the full pass is right."""
    if state is None or state.rules != rules:
        return None
    new = set()
    for seen, current in ((state.seen.scans, now.scans), (state.seen.iqa_scores, now.iqa_scores)):
        if any(current.get(run) != n for run, n in seen.items()):
            return None  # rows a decision was made on were removed or rewritten
        new |= current.keys() - seen.keys()
    return Plan(sorted(new))


def affected_candidates(catalog: Catalog, plan: Plan, candidates_sql: str, max_distance: int) -> pa.Table:
    """The candidates (in the decision order) of every component that a new row touches.

    Closed under shared image_ids, hashes within the distance, and shared paths: `decisions` is keyed
    by path, so a path whose file was scanned again (two rows, maybe in two components) must be
    decided whole, or its decision from the other component would be dropped.
    """
    with catalog.reader() as con:
        con.register("new_runs", pa.table({"run_id": pa.array(plan.new_runs, pa.string())}))
        paths = set(con.sql("SELECT DISTINCT path FROM scans WHERE coalesce(run_id, '') IN "
                            "(SELECT run_id FROM new_runs)").to_arrow_table().column(0).to_pylist())
        ids = set(con.sql("SELECT DISTINCT image_id FROM iqa_scores WHERE coalesce(run_id, '') IN "
                          "(SELECT run_id FROM new_runs)").to_arrow_table().column(0).to_pylist())
        codes = np.empty(0, dtype=np.uint64)
        index = None
        while True:
            subset = _fetch(con, candidates_sql, ids, codes, paths)
            found_ids = set(subset.column("image_id").to_pylist())
            found_paths = set(subset.column("path").to_pylist())
            found_codes = np.setdiff1d(subset.column("phash").to_numpy(), codes)
            if found_ids <= ids and found_paths <= paths and not len(found_codes):
                return subset
            ids |= found_ids
            paths |= found_paths
            if len(found_codes) and max_distance >= 0:
                if index is None:
                    index = MultiIndex(_candidate_codes(con), max_distance)
                found_codes = _code_closure(index, found_codes, codes)
            codes = np.union1d(codes, found_codes)


def _fetch(con: duckdb.DuckDBPyConnection, candidates_sql: str, ids: set[str], codes: np.ndarray,
           paths: set[str]) -> pa.Table:
    con.register("want_ids", pa.table({"image_id": pa.array(sorted(ids), pa.string())}))
    con.register("want_codes", pa.table({"phash": pa.array(codes, pa.uint64())}))
    con.register("want_paths", pa.table({"path": pa.array(sorted(paths), pa.string())}))
    where = (" AND (s.image_id IN (SELECT image_id FROM want_ids) OR s.phash IN (SELECT phash FROM want_codes)"
             " OR s.path IN (SELECT path FROM want_paths))")
    return con.sql(candidates_sql.format(where=where)).to_arrow_table()


def _candidate_codes(con: duckdb.DuckDBPyConnection) -> np.ndarray:
    """Every candidate's hash (a superset of the unique copies the rules pair: that only adds rows)."""
    table = con.sql("SELECT phash FROM scan_verdicts WHERE verdict IS NULL AND phash IS NOT NULL").to_arrow_table()
    return table.column(0).to_numpy().astype(np.uint64, copy=False)


def _code_closure(index: MultiIndex, start: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``start`` plus every indexed code reachable from it by steps within the distance (BFS)."""
    reached = np.union1d(known, start)
    frontier = start
    while len(frontier):
        frontier = np.setdiff1d(index.within(frontier), reached)
        reached = np.union1d(reached, frontier)
    return np.setdiff1d(reached, known)


def merge_decisions(catalog: Catalog, redecided_paths: pa.ChunkedArray, rows: list[dict]) -> pa.Table:
    """The previous decisions minus those of the re-decided paths, plus the new ones."""
    with catalog.reader() as con:
        con.register("redecided", pa.table({"path": redecided_paths}))
        kept = con.sql("SELECT d.* FROM decisions d ANTI JOIN redecided r ON d.path = r.path").to_arrow_table()
    return pa.concat_tables([conform("decisions", kept), conform("decisions", rows)])
