"""`supir-data explain PATH_OR_ID`: why the catalog accepted or rejected one image.

    supir-data explain photos/cat.jpg
    supir-data explain 3f5a…   (an image_id: every path holding those bytes)

For each input path it prints every quality signal with the accepted range the catalog judged it by
(the thresholds stored in the catalog settings), whether it passes, the final decision, and for a
duplicate the copy that was kept (path and image_id). Read-only, through the catalog's views.
"""

import math
from pathlib import Path

import click

from catalogs.catalog import Catalog
from pipelines.report.aggregate import Bound, stored_thresholds
from pipelines.report.reader import reading
from schemas.errors import CatalogError
from schemas.tables import QUALITY_SIGNALS

_LOOKUP_SQL = "SELECT * FROM images WHERE path = ANY($1) OR image_id = $2 ORDER BY path"
_KEPT_SQL = "SELECT * FROM images WHERE image_id = $1 AND status = 'accepted' ORDER BY path LIMIT 1"


def _candidates(path_or_id: str) -> list[str]:
    """The argument as given, and as the absolute local path ingest records for a relative one."""
    out = [path_or_id]
    if "://" not in path_or_id:
        out.append(str(Path(path_or_id).expanduser().resolve()))
    if path_or_id.startswith("file://"):
        out.append(path_or_id.removeprefix("file://"))
    return out


def lookup(catalog: Catalog, path_or_id: str) -> list[dict]:
    """The `images` rows of a path or an image_id; a clear error when there is none."""
    rows = catalog.query(_LOOKUP_SQL, [_candidates(path_or_id), path_or_id.lower()]).to_pylist()
    if not rows:
        raise CatalogError(
            f"no image with path or image_id {path_or_id!r} in the catalog at {catalog.root}. Paths are "
            "stored as ingest saw them (absolute for local files); find one with: supir-data query "
            f"\"SELECT path, image_id FROM images WHERE path LIKE '%{Path(path_or_id).name}%'\""
        )
    return rows


def _value(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "not measured"
    return f"{v:.4g}"


def signal_lines(row: dict, signals: dict[str, Bound], iqa: dict[str, Bound]) -> list[tuple[str, str, str, str]]:
    """(signal, value, accepted range, verdict) for every cheap signal and every scored model metric."""
    reason = row.get("reason") or ""
    checks = [(name, row.get(name), signals.get(name, Bound())) for name in QUALITY_SIGNALS]
    checks += [(k, v, iqa.get(k.removeprefix("iqa_"), Bound())) for k, v in row.items() if k.startswith("iqa_")]
    out = []
    for name, value, bound in checks:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            verdict = "-"
        elif bound.fails(value):
            verdict = "FAIL (the reason)" if reason == f"low_quality:{name.removeprefix('iqa_')}" else "FAIL"
        else:
            verdict = "pass"
        out.append((name, _value(value), bound.text(), verdict))
    return out


def explain_row(catalog: Catalog, row: dict, signals: dict[str, Bound], iqa: dict[str, Bound]) -> list[str]:
    """The lines `explain` prints for one input path."""
    size = f"{row['width']}x{row['height']}" if row.get("width") else "size unknown"
    lines = [f"path      {row['path']}", f"image_id  {row['image_id'] or '-'}",
             f"source    {row['source']}  ·  {row.get('format') or '?'} {size}  ·  {row.get('bytes') or 0:,} bytes"]
    decision = "accepted" if row["status"] == "accepted" else f"rejected: {row['reason']}"
    lines.append(f"decision  {decision}")
    if row.get("detail"):
        lines.append(f"detail    {row['detail']}")
    kept = None
    if row.get("duplicate_of"):
        found = catalog.query(_KEPT_SQL, [row["duplicate_of"]]).to_pylist()
        if found:
            kept = found[0]
            lines.append(f"kept copy {kept['path']}")
            lines.append(f"          image_id {kept['image_id']}  ·  {kept['width']}x{kept['height']}")
        else:
            lines.append(f"kept copy image_id {row['duplicate_of']} (no accepted row holds it now)")
    if any(v is not None for v in (row.get(s) for s in QUALITY_SIGNALS)):
        lines.append("")
        extra = f"{'kept copy':>14}" if kept else ""  # the values the best-copy ranking compared
        lines.append(f"  {'signal':<16}{'value':>14}  {'accepted range':<22}{'verdict':<19}{extra}")
        for name, value, rng, verdict in signal_lines(row, signals, iqa):
            other = f"{_value(kept.get(name)):>14}" if kept else ""
            lines.append(f"  {name:<16}{value:>14}  {rng:<22}{verdict:<19}{other}".rstrip())
    else:
        lines.append("(no quality signals: the file was rejected before its pixels were judged)")
    return lines


@click.command("explain")
@click.argument("path_or_id")
@click.pass_obj
def explain_command(settings, path_or_id):
    """Why one image (a path, or an image_id) was accepted or rejected: each signal, threshold and decision."""
    with reading(Catalog(settings.root)) as catalog:
        signals, iqa = stored_thresholds(catalog)
        rows = lookup(catalog, path_or_id)
        text = "\n\n".join("\n".join(explain_row(catalog, row, signals, iqa)) for row in rows)
    click.echo(text)
