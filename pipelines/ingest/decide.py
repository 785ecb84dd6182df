"""The global decisions of ingest: model-metric rejections, exact and near duplicates, best copy kept.

Runs in the driver after the scan (and after any rescoring) and rewrites the `decisions` table. Exact
copies are one file (any path will do: the smallest is kept). Near-duplicate groups (connected
components of the perceptual-hash pairs) are ranked by comparing their members' pixels
(pipelines.ingest.best_copy: a blurred, denoised, re-compressed, down-up-scaled or cropped copy loses
to its original); the greedy resolution then keeps the best copy of each group.

Every decision depends only on the near-duplicate component it belongs to (its members, their
signals, scores and pixels), so a top-up run decides only the components its new rows touch
(pipelines.ingest.topup) and keeps every other row of the previous `decisions`; ``full=True`` (ingest
``--full``) recomputes everything. Both give the same rows (``run_id`` aside: it names the run that
made the decision).
"""

import json
import logging

import numpy as np
import pyarrow as pa

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from pipelines.engine.sources import read_bytes
from pipelines.ingest import topup
from pipelines.ingest.best_copy import Copy, rank_group
from pipelines.ingest.decode import decode
from pipelines.ingest.dedup import near_duplicate_pairs, resolve_near_duplicates
from pipelines.ingest.quality import QualityThresholds, analysis_luma, judge_iqa, thresholds_to_dict

log = logging.getLogger(__name__)
MAX_GROUP = 64  # larger near-duplicate groups (bursts, product shots) keep the signal order below
DECIDE_VERSION = 1  # bump when a rule below changes: a top-up then recomputes everything once

# Candidates for the global decisions, in the order used where pixels are not compared (exact copies,
# unreadable files, groups over MAX_GROUP): model metric (when scored), resolution, compression,
# detail, noise; image_id and path break ties, so the order is total. {where} narrows it to a top-up.
_CANDIDATES_SQL = """
SELECT s.path, s.source, s.image_id, s.phash, s.width, s.height, s.jpeg_quality{iqa_cols}
FROM scan_verdicts s{iqa_join}
WHERE s.verdict IS NULL AND s.phash IS NOT NULL{{where}}
ORDER BY {iqa_order}s.width * s.height DESC, coalesce(s.jpeg_quality, 101) DESC,
         s.sharpness DESC NULLS LAST, s.noise_sigma ASC NULLS LAST, s.image_id, s.path"""


def decide(catalog: Catalog, metrics: list[str], thresholds: QualityThresholds, near_dup_distance: int,
           run_id: str, full: bool = False) -> topup.Outcome:
    """Bring `decisions` up to date: model-metric rejections, exact and near duplicates.

    Incremental unless ``full`` or the last decisions were made under other rules (or rows they saw
    were removed since); see pipelines.ingest.topup. Crash-safe: the decisions part is replaced
    first, the state that says which rows it covers second, so a crash in between leaves an older
    state, whose top-up recomputes a superset of what changed: running the same command again
    gives the same decisions.
    """
    metrics = list(metrics)
    catalog.refresh()  # decide what the lake holds now (parts written since the last registration too)
    sql, sign = _candidates_sql(catalog, metrics)
    rules = json.loads(json.dumps({  # as the state file stores them, so that equal rules compare equal
        "version": DECIDE_VERSION, "metrics": metrics, "score_sign": sign, "near_dup_distance": near_dup_distance,
        "thresholds": thresholds_to_dict(thresholds), "quality_reason_sql": catalog.settings().get("quality_reason_sql"),
    }, sort_keys=True))
    now = topup.snapshot(catalog)
    plan = None if full else topup.plan(topup.read_state(catalog), now, rules)
    if plan is not None and not plan.new_runs:
        return topup.Outcome("unchanged", decided=0)  # nothing new since: decisions and state stand
    if plan is None:
        ranked = catalog.query(sql.format(where=""))
    else:
        ranked = topup.affected_candidates(catalog, plan, sql, near_dup_distance)
    rows = _decision_rows(ranked, metrics, thresholds, near_dup_distance, sign)
    for r in rows:
        r["run_id"] = run_id
    if plan is not None:
        rows = topup.merge_decisions(catalog, ranked.column("path"), rows)
    write_part(catalog.root, "decisions", rows, name="current")
    topup.write_state(catalog, topup.DecideState(rules, now))
    catalog.refresh()
    log.info("decisions: %s pass over %d candidate rows", "full" if plan is None else "top-up", len(ranked))
    return topup.Outcome("full" if plan is None else "topup", decided=len(ranked))


def _candidates_sql(catalog: Catalog, metrics: list[str]) -> tuple[str, float]:
    """The candidates query (with a ``{where}`` slot) and the sign that makes the first metric higher-better."""
    iqa_cols = iqa_join = iqa_order = ""
    sign = 1.0
    if metrics:
        pivots = ", ".join(f"max(score) FILTER (WHERE metric = '{m}') AS \"{m}\"" for m in metrics)
        iqa_join = f" LEFT JOIN (SELECT image_id, {pivots} FROM iqa_scores GROUP BY image_id) q USING (image_id)"
        iqa_cols = "".join(f', q."{m}"' for m in metrics)
        first = metrics[0]
        lower = catalog.scalar("SELECT bool_or(lower_better) FROM iqa_scores WHERE metric = ?", [first])
        iqa_order = f'q."{first}" {"ASC" if lower else "DESC"} NULLS LAST, '
        sign = -1.0 if lower else 1.0
    return _CANDIDATES_SQL.format(iqa_cols=iqa_cols, iqa_join=iqa_join, iqa_order=iqa_order), sign


def _decision_rows(ranked: pa.Table, metrics: list[str], thresholds: QualityThresholds, near_dup_distance: int,
                   sign: float) -> list[dict]:
    """The decisions over ``ranked`` (candidates in the query's order, closed under duplicates)."""
    rows = []
    if metrics:
        keep = []
        for i, scores in enumerate(zip(*(ranked.column(m).to_pylist() for m in metrics))):
            reason = judge_iqa({m: v for m, v in zip(metrics, scores) if v is not None}, thresholds)
            if reason:
                rows.append({"path": ranked.column("path")[i].as_py(), "source": ranked.column("source")[i].as_py(),
                             "status": "rejected", "reason": reason, "duplicate_of": None})
            else:
                keep.append(i)
        ranked = ranked.take(pa.array(keep, type=pa.int64()))
    scores = None
    if metrics:
        scores = [None if v is None else sign * v for v in ranked.column(metrics[0]).to_pylist()]
    return rows + _duplicate_rows(ranked, near_dup_distance, scores)


def _components(n: int, pairs: np.ndarray) -> list[list[int]]:
    """Connected components (union-find) of the near-duplicate pairs, each sorted; singletons left out."""
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs.tolist():
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _group_order(group: list[int], table: pa.Table, scores: list | None) -> list[int]:
    """``group`` (rows of ``table``) best copy first, by pixels; the given order if a file cannot be read."""
    if len(group) > MAX_GROUP:
        log.warning("near-duplicate group of %d images: ranked by signals, not by pixels", len(group))
        return group
    copies, lumas = [], []
    for i in group:
        row = {c: table.column(c)[i].as_py() for c in ("path", "image_id", "width", "height", "jpeg_quality")}
        try:
            decoded = decode(read_bytes(row["path"]), 0, 1 << 62)
        except Exception as exc:  # gone or changed since the scan: keep the signal order for this group
            log.warning("best copy of %s by signals: %s", row["path"], exc)
            return group
        copies.append(Copy(row["image_id"], row["width"], row["height"], row["jpeg_quality"],
                           None if scores is None else scores[i]))
        lumas.append(analysis_luma(decoded.pixels, decoded.order))
    return [group[k] for k in rank_group(copies, lumas)]


def _duplicate_rows(ranked: pa.Table, max_distance: int, scores: list | None = None) -> list[dict]:
    paths = ranked.column("path").to_pylist()
    ids = ranked.column("image_id").to_pylist()
    sources = ranked.column("source").to_pylist()
    codes = ranked.column("phash").to_numpy(zero_copy_only=False).astype(np.uint64)
    rows, first_of = [], {}
    unique_idx = []
    for i, image_id in enumerate(ids):  # exact copies are one file: the first path in order is kept
        if image_id in first_of:
            rows.append({"path": paths[i], "source": sources[i], "status": "rejected", "reason": "duplicate",
                         "duplicate_of": image_id})
        else:
            first_of[image_id] = i
            unique_idx.append(i)
    unique_idx_arr = _best_copy_first(ranked, np.array(unique_idx, dtype=np.int64), codes, max_distance, scores)
    near_of: dict[str, str] = {}
    for dup, kept in resolve_near_duplicates(codes[unique_idx_arr], max_distance).tolist():
        d, k = unique_idx_arr[dup], unique_idx_arr[kept]
        near_of[ids[d]] = ids[k]
        rows.append({"path": paths[d], "source": sources[d], "status": "rejected", "reason": "near_duplicate",
                     "duplicate_of": ids[k]})
    for r in rows:  # an exact copy of a near duplicate points at the copy that was finally kept
        if r["reason"] == "duplicate" and r["duplicate_of"] in near_of:
            r["duplicate_of"] = near_of[r["duplicate_of"]]
    return rows


def _best_copy_first(ranked: pa.Table, unique: np.ndarray, codes: np.ndarray, max_distance: int,
                     scores: list | None) -> np.ndarray:
    """``unique`` reordered so that each near-duplicate group lists its members best copy first.

    Pairs only exist within a group, so where a group sits in the order does not matter; it takes
    the place of its first member.
    """
    if max_distance < 0 or len(unique) < 2:
        return unique
    groups = _components(len(unique), near_duplicate_pairs(codes[unique], max_distance))
    if not groups:
        return unique
    order = list(range(len(unique)))
    for group in groups:
        best_first = _group_order([int(unique[g]) for g in group], ranked, scores)
        position = {int(unique[g]): g for g in group}
        for slot, row in zip(sorted(group), best_first):
            order[slot] = position[row]
    return unique[np.array(order, dtype=np.int64)]
