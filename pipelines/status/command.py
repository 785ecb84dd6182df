"""`status` and `query`: read-only views of the catalog."""

import csv
import json
import sys

import click
from rich.console import Console
from rich.table import Table

from catalogs.catalog import Catalog

# `decisions` only ever rejects rows whose scan verdict is NULL, so per-source counts come from two
# group-bys and no join: fast on a 20M-row catalog.
SCAN_COUNTS_SQL = "SELECT source, verdict AS reason, count(*) AS n FROM scan_verdicts GROUP BY ALL"
DECISION_COUNTS_SQL = "SELECT source, reason, count(*) AS n FROM decisions GROUP BY ALL"


def status_rows(catalog: Catalog) -> list[dict]:
    """Per source: seen, accepted, rejected and a ``reasons`` dict {reason: count} (largest first)."""
    out: dict[str, dict] = {}

    def entry(source):
        return out.setdefault(source, {"source": source, "seen": 0, "accepted": 0, "rejected": 0, "reasons": {}})

    for r in catalog.query(SCAN_COUNTS_SQL).to_pylist():
        e = entry(r["source"])
        e["seen"] += r["n"]
        if r["reason"] is None:
            e["accepted"] += r["n"]
        else:
            e["reasons"][r["reason"]] = e["reasons"].get(r["reason"], 0) + r["n"]
    for r in catalog.query(DECISION_COUNTS_SQL).to_pylist():
        e = entry(r["source"])
        e["accepted"] -= r["n"]
        e["reasons"][r["reason"]] = e["reasons"].get(r["reason"], 0) + r["n"]
    for e in out.values():
        e["rejected"] = e["seen"] - e["accepted"]
        e["reasons"] = dict(sorted(e["reasons"].items(), key=lambda kv: (-kv[1], kv[0])))
    return [out[k] for k in sorted(out, key=str)]


def render_status(rows: list[dict], console: Console) -> None:
    table = Table(title="images by source")
    for col in ("source", "seen", "accepted", "rejected", "rejected by reason"):
        table.add_column(col, justify="left" if col in ("source", "rejected by reason") else "right")
    for r in rows:
        reasons = ", ".join(f"{k}={v}" for k, v in r["reasons"].items())
        table.add_row(str(r["source"]), str(r["seen"]), str(r["accepted"]), str(r["rejected"]), reasons)
    console.print(table)


def render_stage_runs(runs: list[dict], console: Console) -> None:
    table = Table(title="last run of each stage")
    for col in ("stage", "run", "items", "rows", "outcomes", "seconds", "finished"):
        table.add_column(col, justify="right" if col in ("items", "rows", "seconds") else "left")
    for r in runs:
        outcomes = ", ".join(f"{k}={v}" for k, v in sorted(r["outcomes"].items(), key=lambda kv: (-kv[1], kv[0])))
        table.add_row(r["stage"], r["run_id"], str(r["items"]), str(r["rows"]), outcomes, f"{r['seconds']:.1f}",
                      f"{r['finished_at']:%Y-%m-%d %H:%M:%S}")
    console.print(table)


@click.command("status")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def status_command(settings, fmt):
    """Per-source counts (seen, accepted, rejected by reason) and the last run of each stage."""
    from pipelines.engine.stats import last_runs

    catalog = Catalog(settings.root)
    rows, runs = status_rows(catalog), last_runs(catalog)
    if fmt == "json":
        click.echo(json.dumps({"sources": rows, "last_runs": runs}, indent=2, default=str))
    else:
        console = Console()
        render_status(rows, console)
        if runs:
            render_stage_runs(runs, console)


@click.command("query")
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table")
@click.option("--limit", type=int, default=None, help="Show at most N rows (table format).")
@click.pass_obj
def query_command(settings, sql, fmt, limit):
    """Run read-only SQL over the catalog (views: images, scans, captions, negatives, shards, ...)."""
    result = Catalog(settings.root).query(sql)
    rows = result.to_pylist()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")  # like DuckDB's CLI, not the csv module's \r\n
        writer.writerow(result.column_names)
        for r in rows:
            writer.writerow([r[c] for c in result.column_names])
    else:
        table = Table()
        for c in result.column_names:
            table.add_column(c, overflow="fold")
        for r in rows[:limit] if limit else rows:
            table.add_row(*["" if r[c] is None else str(r[c]) for c in result.column_names])
        console = Console()
        if not console.is_terminal:  # piped output: don't squeeze columns into 80 characters
            console = Console(width=max(console.width, 200))
        console.print(table)
