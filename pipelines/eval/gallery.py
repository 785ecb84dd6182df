"""``gallery.html``: LQ | bicubic | each checkpoint | GT side by side, metrics under each, zoom crops.

One static page next to the images it shows (relative links under ``--out``): it opens offline, runs
no script and loads nothing from elsewhere. Every cell shows the whole image and a zoom crop (the
centre quarter, magnified 4× with nearest-neighbour pixels, so texture and artefacts are visible);
the LQ is drawn at the result's size, pixelated, as the methods received it.
"""

from __future__ import annotations

import html
from pathlib import Path

from pipelines.eval.stage import gt_file, lq_file
from supir.eval_metrics import DECIMALS, LABELS
from supir.eval_protocol import DEGRADATIONS

CELL = 256  # displayed side of every image, in CSS pixels
ZOOM = 4

STYLE = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ccc; }}
table.summary {{ border-collapse: collapse; margin: 12px 0; }}
table.summary td, table.summary th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
table.summary td:first-child, table.summary td:nth-child(2) {{ text-align: left; }}
.row {{ display: flex; gap: 10px; margin: 12px 0; align-items: flex-start; }}
.cell {{ width: {CELL}px; background: #fff; border: 1px solid #ddd; padding: 4px; }}
.cell img {{ width: {CELL}px; height: {CELL}px; display: block; image-rendering: pixelated; }}
.zoom {{ width: {CELL}px; height: {CELL}px; margin-top: 4px; background-repeat: no-repeat;
        background-size: {ZOOM * 100}% {ZOOM * 100}%; background-position: 50% 50%; image-rendering: pixelated; }}
.name {{ font-weight: 600; }} .metrics {{ font-size: 12px; color: #444; }} .missing {{ color: #a40; }}
.image {{ font-size: 13px; color: #666; margin-top: 18px; }}
"""


def _cell(title: str, src: str, metrics: str = "") -> str:
    s = html.escape(src, quote=True)
    return (f'<div class="cell"><div class="name">{html.escape(title)}</div><img src="{s}" alt="{html.escape(title)}">'
            f'<div class="zoom" style="background-image:url(\'{s}\')"></div><div class="metrics">{metrics}</div></div>')


def _metric_line(rows: list[dict]) -> str:
    parts = []
    for r in sorted(rows, key=lambda r: list(LABELS).index(r["metric"])):
        if r["value"] is None:
            parts.append(f'<span class="missing" title="{html.escape(r["detail"] or "", quote=True)}">'
                         f'{LABELS[r["metric"]]} missing</span>')
        else:
            parts.append(f'{LABELS[r["metric"]]} {r["value"]:.{DECIMALS[r["metric"]]}f}')
    return " · ".join(parts)


def _summary_table(lines: list[dict]) -> str:
    """Table 1's layout; a missing metric reads "missing" and its note is listed once below."""
    if not lines:
        return ""
    notes = list(dict.fromkeys(str(v) for line in lines for v in line.values() if str(v).startswith("missing:")))
    columns = list(dict.fromkeys(k for line in lines for k in line))

    def cell(value) -> str:
        text = str(value)
        if text in notes:
            return f'<td class="missing">missing [{notes.index(text) + 1}]</td>'
        return f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(line.get(c, "")) for c in columns) + "</tr>" for line in lines)
    listed = "".join(f'<li class="missing">{html.escape(n)}</li>' for n in notes)
    return f'<table class="summary"><tr>{head}</tr>{body}</table>' + (f"<ol>{listed}</ol>" if listed else "")


def write_gallery(out: str | Path, rows: list[dict], methods: list[str], summary_lines: list[dict],
                  conventions: str, per_degradation: int = 12) -> Path:
    """The page, with up to ``per_degradation`` images per degradation; returns its path."""
    cells: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in rows:
        cells.setdefault((r["degradation"], r["image"]), {}).setdefault(r["method"], []).append(r)
    sections = []
    for degradation in dict.fromkeys(r["degradation"] for r in rows):
        label = DEGRADATIONS[degradation].label if degradation in DEGRADATIONS else "Real images (no reference)"
        images = sorted({img for (d, img) in cells if d == degradation})[:per_degradation]
        blocks = []
        for image in images:
            by_method = cells[(degradation, image)]
            row = [_cell("LQ", lq_file(image, degradation))]
            row += [_cell(m, by_method[m][0]["output"], _metric_line(by_method[m])) for m in methods if m in by_method]
            if degradation in DEGRADATIONS:
                row.append(_cell("GT", gt_file(image)))
            blocks.append(f'<div class="image">{html.escape(image)}</div><div class="row">{"".join(row)}</div>')
        sections.append(f"<h2>{html.escape(label)}</h2>{''.join(blocks)}")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>supir-data eval</title>'
        f"<style>{STYLE}</style></head><body><h1>supir-data eval</h1>"
        f"<p>{html.escape(conventions)}. Zoom: the centre quarter, {ZOOM}× nearest-neighbour.</p>"
        f"{_summary_table(summary_lines)}{''.join(sections)}</body></html>"
    )
    path = Path(out) / "gallery.html"
    path.write_text(page, encoding="utf-8")
    return path
