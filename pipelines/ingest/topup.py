"""Top-up decisions: decide only the near-duplicate components that a run's new rows touch.

A decision (pipelines.ingest.decide) is a function of one connected component of the candidates'
duplicate graph (same ``image_id``, or perceptual hashes within the distance): its members, their
signals and scores, their pixels. A top-up therefore recomputes, with the very same code, only the
union of the components that contain a new row, and keeps every other row of `decisions`:

1. *new rows*: `scans` and `iqa_scores` rows of runs the last decide did not see (the state below
   counts rows per ``run_id``);
2. *closure*: grown breadth first until nothing new joins: rows at the same path (a file scanned
   again), rows sharing an image_id, hashes within the distance of one already in (multi-index
   hashing turned around: tables over the frontier's codes, the catalog's codes streamed through
   them, pipelines.ingest.dedup.within_distance);
3. the subset's decisions replace the old rows of its paths.

The multi-index hash tables are not persisted: the catalog's codes are read from the compacted parts
in the one scan the closure needs anyway (with 32-bit path and image_id keys: 16 bytes a row in
memory), and the tables are built over the frontier's codes only (small), so nothing of catalog size
is sorted. Persisted tables over the whole
catalog would have to be rewritten on every top-up (an insert into a sorted array moves everything
after it), would cost ~50 bytes a row to hold, and could disagree with the lake after a crash.

A top-up is refused, and the full pass runs, when there is no state, the rules differ (thresholds,
metrics, distance, DECIDE_VERSION), or rows the last decide saw are gone or changed (a run's row
count differs: a removal is not a top-up). `decisions` stays one part, replaced whole by every
decide, and stays small without compaction: it holds only the rows decide rejected (at most one per
path, no history), the part is rewritten from the merged rows (O(decisions), not O(catalog)).
"""

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from catalogs.catalog import Catalog
from catalogs.lake import conform
from pipelines.ingest.dedup import within_distance

STATE_FILE = "lake/decisions/_state.json"  # beside the part it describes; not a part (no view reads it)


@dataclass(frozen=True)
class Snapshot:
    """Rows per ``run_id`` of the tables decisions read (what a decide saw)."""

    scans: dict[str, int]
    iqa_scores: dict[str, int]


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


_KEY = "CAST(hash({}) & 4294967295 AS UINTEGER)"  # 32-bit keys: a collision only links more rows


def affected_candidates(catalog: Catalog, plan: Plan, candidates_sql: str, max_distance: int) -> pa.Table:
    """The candidates (in the decision order) of every component that a new row touches.

    Closed under shared paths (`decisions` is keyed by path, so a file scanned again, with rows in two
    components, is decided whole), shared image_ids, and hashes within the distance. The closure runs
    on 32-bit hashes of path and image_id and on the 64-bit ``phash`` of every candidate (16 bytes a
    row, one scan); a hash collision only adds rows, and the set found is closed all the same, so
    the decisions stay exact.
    """
    with catalog.reader() as con:
        con.register("new_runs", pa.table({"run_id": pa.array(plan.new_runs, pa.string())}))
        keys = con.sql(
            f"SELECT {_KEY.format('s.path')} AS p, {_KEY.format('s.image_id')} AS i, s.phash AS h, "
            "coalesce(s.run_id, '') IN (SELECT run_id FROM new_runs) AS fresh "
            "FROM scan_verdicts s WHERE s.verdict IS NULL AND s.phash IS NOT NULL").fetchnumpy()
        rescored = con.sql(f"SELECT DISTINCT {_KEY.format('image_id')} AS i FROM iqa_scores "
                           "WHERE coalesce(run_id, '') IN (SELECT run_id FROM new_runs)").fetchnumpy()
        p, i, h = (np.asarray(keys[c]) for c in ("p", "i", "h"))
        member = np.asarray(keys["fresh"], dtype=bool) | _isin(i, np.sort(np.asarray(rescored["i"])))
        del keys
        member = _closure(p, i, h, member, max_distance)
        for name, column, values in (("want_p", "p", p), ("want_i", "i", i), ("want_h", "h", h)):
            con.register(name, pa.table({column: np.unique(values[member])}))
        where = (f" AND ({_KEY.format('s.path')} IN (SELECT p FROM want_p) OR {_KEY.format('s.image_id')} IN "
                 "(SELECT i FROM want_i) OR s.phash IN (SELECT h FROM want_h))")
        return con.sql(candidates_sql.format(where=where)).to_arrow_table()


def _closure(p: np.ndarray, i: np.ndarray, h: np.ndarray, member: np.ndarray, max_distance: int) -> np.ndarray:
    """``member`` grown (breadth first) by rows sharing a path or image_id key or a hash within the distance."""
    frontier = member.copy()
    while frontier.any():
        grown = _isin(p, np.unique(p[frontier])) | _isin(i, np.unique(i[frontier]))
        # equal hashes link even with near duplicates off: the subset is fetched by hash value too
        grown |= within_distance(h, h[frontier], max(max_distance, 0))
        frontier = grown & ~member
        member |= frontier
    return member


def _isin(values: np.ndarray, sorted_keys: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """``np.isin`` against a small sorted key set: a 2^24-entry table of the keys' low bits rules out
    most values with one lookup; binary search confirms the rest (no sort of ``values``)."""
    out = np.zeros(len(values), dtype=bool)
    if not len(sorted_keys):
        return out
    low = np.zeros(1 << 24, dtype=bool)
    low[sorted_keys & 0xFFFFFF] = True
    for start in range(0, len(values), chunk):
        block = values[start:start + chunk]
        maybe = np.flatnonzero(low[block & 0xFFFFFF])
        at = np.minimum(np.searchsorted(sorted_keys, block[maybe]), len(sorted_keys) - 1)
        out[start + maybe] = sorted_keys[at] == block[maybe]
    return out


def merge_decisions(catalog: Catalog, redecided_paths: pa.ChunkedArray, rows: list[dict]) -> pa.Table:
    """The previous decisions minus those of the re-decided paths, plus the new ones."""
    with catalog.reader() as con:
        con.register("redecided", pa.table({"path": redecided_paths}))
        kept = con.sql("SELECT d.* FROM decisions d ANTI JOIN redecided r ON d.path = r.path").to_arrow_table()
    return pa.concat_tables([conform("decisions", kept), conform("decisions", rows)])
