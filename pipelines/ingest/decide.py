"""The global decisions of ingest: model-metric rejections, exact and near duplicates, best copy kept.

Runs in the driver over the whole catalog after the scan (and after any rescoring), and rewrites the
`decisions` table: every group of copies keeps its best member by the ranking below.
"""

import numpy as np
import pyarrow as pa

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from pipelines.ingest.dedup import resolve_near_duplicates
from pipelines.ingest.quality import QualityThresholds, judge_iqa

# Candidates for the global decisions, best copy first: model metric (when scored), then resolution,
# compression, noise and detail; image_id and path break ties, so the order is total.
_CANDIDATES_SQL = """
SELECT s.path, s.source, s.image_id, s.phash{iqa_cols}
FROM scan_verdicts s{iqa_join}
WHERE s.verdict IS NULL AND s.phash IS NOT NULL
ORDER BY {iqa_order}s.width * s.height DESC, coalesce(s.jpeg_quality, 101) DESC,
         s.noise_sigma ASC NULLS LAST, s.sharpness DESC NULLS LAST, s.image_id, s.path"""


def decide(catalog: Catalog, metrics: list[str], thresholds: QualityThresholds, near_dup_distance: int,
           run_id: str) -> None:
    """Rewrite `decisions` over the whole catalog: model-metric rejections, exact and near duplicates."""
    metrics = list(metrics)
    iqa_cols = iqa_join = iqa_order = ""
    if metrics:
        pivots = ", ".join(f"max(score) FILTER (WHERE metric = '{m}') AS \"{m}\"" for m in metrics)
        iqa_join = f" LEFT JOIN (SELECT image_id, {pivots} FROM iqa_scores GROUP BY image_id) q USING (image_id)"
        iqa_cols = "".join(f', q."{m}"' for m in metrics)
        first = metrics[0]
        lower = catalog.scalar("SELECT bool_or(lower_better) FROM iqa_scores WHERE metric = ?", [first])
        iqa_order = f'q."{first}" {"ASC" if lower else "DESC"} NULLS LAST, '
    ranked = catalog.query(_CANDIDATES_SQL.format(iqa_cols=iqa_cols, iqa_join=iqa_join, iqa_order=iqa_order))
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
    rows += _duplicate_rows(ranked, near_dup_distance)
    for r in rows:
        r["run_id"] = run_id
    write_part(catalog.root, "decisions", rows, name="current")
    catalog.refresh()


def _duplicate_rows(ranked: pa.Table, max_distance: int) -> list[dict]:
    paths = ranked.column("path").to_pylist()
    ids = ranked.column("image_id").to_pylist()
    sources = ranked.column("source").to_pylist()
    codes = ranked.column("phash").to_numpy(zero_copy_only=False).astype(np.uint64)
    rows, first_of = [], {}
    unique_idx = []
    for i, image_id in enumerate(ids):  # rank order: the first copy of a hash is the best one
        if image_id in first_of:
            rows.append({"path": paths[i], "source": sources[i], "status": "rejected", "reason": "duplicate",
                         "duplicate_of": image_id})
        else:
            first_of[image_id] = i
            unique_idx.append(i)
    unique_idx_arr = np.array(unique_idx, dtype=np.int64)
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
