"""The eval's tables: every row the stage wrote → ``results.parquet`` and a Table 1 ``summary.csv``.

``results.parquet`` is long (image × degradation × method × metric, one value each). ``summary.csv``
has Table 1's layout: one line per degradation (Table 1's wording, in its order) and method, one
column per metric (PSNR, SSIM, LPIPS↓, ManIQA, ClipIQA, MUSIQ), each the mean over the images, printed
with Table 1's decimals; a metric without weights says ``missing: put FILE at PATH`` in its cell.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from catalogs.lake import list_parts
from schemas.tables import EVAL_RESULTS
from supir.eval_metrics import DECIMALS, LABELS
from supir.eval_protocol import DEGRADATIONS, REAL

RESULT_COLUMNS = ["image", "degradation", "method", "metric", "value", "lower_better", "detail", "output"]


def read_rows(out: str | Path) -> pa.Table:
    """Every row written under ``out`` so far (killed runs included), in the table's schema."""
    parts = list_parts(out, "eval_results")
    if not parts:
        return EVAL_RESULTS.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=EVAL_RESULTS) for p in parts])


def done_keys(out: str | Path) -> set[tuple[str, str, str]]:
    """(method, degradation, image) that have their rows: the work a resumed run skips."""
    t = read_rows(out)
    return set(zip(t.column("method").to_pylist(), t.column("degradation").to_pylist(), t.column("image").to_pylist()))


def _order(rows: list[dict], methods: list[str]) -> list[dict]:
    degradations = [*DEGRADATIONS, REAL]
    return sorted(rows, key=lambda r: (degradations.index(r["degradation"]), methods.index(r["method"])
                                       if r["method"] in methods else len(methods), r["method"], r["image"],
                                       list(LABELS).index(r["metric"])))  # fmt: skip


def write_results(out: str | Path, methods: list[str]) -> list[dict]:
    """``results.parquet`` (sorted, one row per image × degradation × method × metric); its rows."""
    table = read_rows(out).select(RESULT_COLUMNS)
    rows = _order(table.to_pylist(), methods)
    keys = [(r["image"], r["degradation"], r["method"], r["metric"]) for r in rows]
    if len(keys) != len(set(keys)):  # parts are named after their items: a duplicate is a bug
        raise AssertionError("eval_results holds a result twice")
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), Path(out) / "results.parquet")
    return rows


def summary(rows: list[dict], metrics: list[str]) -> list[dict]:
    """Table 1's lines: {Degradation, Method, images, <metric label>: mean or the missing note}."""
    groups: dict[tuple[str, str], dict[str, list]] = {}
    for r in rows:
        groups.setdefault((r["degradation"], r["method"]), {}).setdefault(r["metric"], []).append(r)
    lines = []
    for (degradation, method), by_metric in groups.items():
        label = DEGRADATIONS[degradation].label if degradation in DEGRADATIONS else "Real images"
        images = len({r["image"] for rs in by_metric.values() for r in rs})
        line = {"Degradation": label, "Method": method}
        for metric in metrics:
            rs = by_metric.get(metric)
            if not rs:
                continue
            values = [r["value"] for r in rs if r["value"] is not None]
            if len(values) == len(rs):
                line[LABELS[metric]] = f"{sum(values) / len(values):.{DECIMALS[metric]}f}"
            else:
                line[LABELS[metric]] = next(r["detail"] for r in rs if r["value"] is None)
        lines.append({**line, "images": images})
    return lines


def write_summary(out: str | Path, rows: list[dict], metrics: list[str]) -> list[dict]:
    lines = summary(rows, metrics)
    columns = ["Degradation", "Method", *[LABELS[m] for m in metrics if any(LABELS[m] in x for x in lines)],
               "images"]  # fmt: skip
    with open(Path(out) / "summary.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, columns, restval="")
        writer.writeheader()
        writer.writerows(lines)
    return lines
