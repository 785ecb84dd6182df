"""The report's HTML: plain markup and one inline stylesheet, no scripts, no external resources."""

import json
import time
from html import escape
from pathlib import PurePath

from pipelines.report import plots, samples, thumbs
from pipelines.report.aggregate import Bound

STYLE = """
:root{--fg:#212529;--muted:#6c757d;--line:#dee2e6;--ok:#2a9d8f;--bad:#e63946;--bg:#f8f9fa}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}header{background:#1d3557;color:#fff;padding:20px 32px}
header h1{margin:0 0 4px;font-size:22px}header p{margin:0;color:#cfd8e3}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid var(--line);padding:8px 32px;z-index:1}
nav a{margin-right:16px;color:#1d3557;text-decoration:none;font-weight:600}
main{padding:8px 32px 40px}section{background:#fff;border:1px solid var(--line);border-radius:8px;
padding:16px 20px;margin:18px 0}h2{margin:0 0 12px;font-size:18px}h3{margin:18px 0 8px;font-size:15px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-top:14px}.stat{background:#fff;color:var(--fg);
border-radius:8px;padding:10px 16px;min-width:130px}.stat b{display:block;font-size:22px}
.stat span{color:var(--muted);font-size:12px}
table{border-collapse:collapse;margin:6px 0}td,th{border-bottom:1px solid var(--line);padding:4px 10px;
text-align:right}th{background:var(--bg)}td:first-child,th:first-child,.t{text-align:left}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px}
.plots svg{width:100%;height:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
figure{margin:0;border:1px solid var(--line);border-radius:6px;overflow:hidden;background:#fff}
figure img,.noimg{display:block;width:100%;height:130px;object-fit:cover;background:#e9ecef}
.noimg{display:flex;align-items:center;justify-content:center;color:var(--muted);font-size:12px}
figcaption{padding:5px 7px;font-size:11.5px;overflow-wrap:anywhere}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:11px;
height:11px;margin-right:5px;vertical-align:-1px;border-radius:2px}.why{color:var(--bad);font-weight:600}
.muted{color:var(--muted)}.group{display:flex;gap:10px;overflow-x:auto;padding:8px 0;
border-bottom:1px dashed var(--line)}.group figure{flex:0 0 170px}figure.kept{border:3px solid var(--ok)}
.badge{display:inline-block;border-radius:4px;padding:0 6px;font-size:11px;font-weight:700;color:#fff;
background:var(--ok)}.badge.bad{background:var(--bad)}.captions{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:10px}
.caption{display:flex;gap:12px}.caption figure{flex:0 0 130px}.caption p{margin:0}.pairs{display:grid;
grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:10px}.pair{display:flex;gap:6px}
.pair figure{flex:1}img.preview{max-width:100%;border:1px solid var(--line)}
"""


def _img(uri: str | None, alt: str) -> str:
    return f'<img src="{uri}" alt="{escape(alt)}">' if uri else '<div class="noimg">no preview</div>'


def _num(v) -> str:
    return "-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:.3g}"


def why_rejected(row: dict, thresholds: dict[str, Bound], kept: dict[str, dict]) -> str:
    """One line: the signal value against its bound, the kept copy of a duplicate, or the detail."""
    reason = row.get("reason") or ""
    signal = reason.removeprefix("low_quality:")
    if reason.startswith("low_quality:") and signal in thresholds and row.get(signal) is not None:
        b, v = thresholds[signal], row[signal]
        op = f"< min {b.min:g}" if b.min is not None and v < b.min else f"> max {b.max:g}" if b.max is not None else ""
        return f"{signal} {v:.3g} {op}".strip()
    if row.get("duplicate_of"):
        k = kept.get(row["duplicate_of"])
        return f"copy of {short_name(k['path'])}" if k else f"copy of {row['duplicate_of'][:12]}"
    return (row.get("detail") or reason)[:140]


def short_name(path: str) -> str:
    """The file name with its folder: copies often share a name (photos/a.png, copies/a.png)."""
    p = PurePath(path)
    return f"{p.parent.name}/{p.name}" if p.parent.name else p.name


def _card(row: dict, uris: dict, why: str = "", cls: str = "", badge: str = "", note: str = "") -> str:
    name = short_name(row["path"])
    size = f"{row['width']}×{row['height']}" if row.get("width") else "size unknown"
    badge_html = f'<span class="badge{"" if cls == "kept" else " bad"}">{escape(badge)}</span> ' if badge else ""
    why_html = f'<br><span class="why">{escape(why)}</span>' if why else ""
    why_html += f"<br><span class=muted>{escape(note)}</span>" if note else ""
    return (f'<figure class="{cls}" title="{escape(row["path"])}">{_img(uris.get(row["path"]), name)}<figcaption>'
            f"{badge_html}<b>{escape(name)}</b><br><span class=muted>{escape(str(row.get('source')))} · {size}"
            f"</span>{why_html}</figcaption></figure>")


def _counts(data) -> str:
    sources = sorted({str(r["source"]) for r in data.reasons})
    table: dict[str, dict[str, int]] = {}
    for r in data.reasons:
        table.setdefault(r["reason"] or samples.ACCEPTED, {})[str(r["source"])] = r["n"]
    order = sorted(table, key=lambda k: (k != samples.ACCEPTED, -sum(table[k].values()), k))
    head = "".join(f"<th>{escape(s)}</th>" for s in sources)
    rows = "".join(
        f"<tr><td>{escape(k)}</td>" + "".join(f"<td>{_num(table[k].get(s, 0))}</td>" for s in sources)
        + f"<td><b>{_num(sum(table[k].values()))}</b></td></tr>" for k in order)
    totals = "".join(f"<td><b>{_num(sum(t.get(s, 0) for t in table.values()))}</b></td>" for s in sources)
    grand = sum(r["n"] for r in data.reasons)
    return (f"<table><tr><th>outcome</th>{head}<th>all sources</th></tr>{rows}"
            f"<tr><td><b>seen</b></td>{totals}<td><b>{_num(grand)}</b></td></tr></table>")


def _signals(data) -> str:
    rows = "".join(
        f"<tr><td>{escape(h.name)}</td><td class=t>{escape(h.bound.text())}</td>"
        f"<td>{_num(h.total if h.measured is None else h.measured)}</td>"
        f"<td>{_num(sum(h.counts.get(plots.CATEGORIES[1], [])) if h.rejected is None else h.rejected)}</td></tr>"
        for h in data.histograms + data.iqa_histograms)
    svgs = "".join(f"<div>{plots.histogram_svg(h)}</div>" for h in data.histograms + data.iqa_histograms)
    notes = {plots.CATEGORIES[0]: " (every per-file check; duplicates are decided after)"}
    legend = "".join(f'<span><i style="background:{c}"></i>{escape(k)}{notes.get(k, "")}</span>'
                     for k, c in plots.COLOURS.items())
    return ("<p class=muted>Thresholds as stored in the catalog settings (the rules the <code>images</code> view "
            "applies). Bars are stacked by verdict; values outside the plotted range are counted in the edge bars."
            f"{_sample_note(data)}</p><table><tr><th>signal</th><th class=t>accepted range</th><th>measured</th><th>rejected by it</th></tr>{rows}"
            f"</table><p class=legend>{legend}</p><div class=plots>{svgs}</div>")


def _sample_note(data) -> str:
    every = max((h.every for h in data.histograms), default=1)
    if every == 1:
        return ""
    return (f" The bars count a deterministic 1-in-{every:,} sample of the images (by a hash of the stored "
            "perceptual hash); the table's counts are exact.")


def _samples(data, uris) -> tuple[str, str]:
    accepted = data.groups.get(samples.ACCEPTED, {"n": 0, "rows": []})
    acc = (f"<p class=muted>{_num(len(accepted['rows']))} of {_num(accepted['n'])} accepted images "
           "(a deterministic sample).</p><div class=grid>"
           + "".join(_card(r, uris) for r in accepted["rows"]) + "</div>")
    rej = []
    for reason, g in data.groups.items():
        if reason == samples.ACCEPTED:
            continue
        cards = "".join(_card(r, uris, why_rejected(r, data.thresholds, data.kept)) for r in g["rows"])
        rej.append(f"<h3>{escape(reason)} <span class=muted>({_num(g['n'])}, showing {len(g['rows'])})</span></h3>"
                   f"<div class=grid>{cards}</div>")
    return acc, "".join(rej) or "<p>No rejected images.</p>"


def _duplicates(data, uris) -> str:
    out = [f"<p class=muted>{_num(data.duplicate_total)} groups of copies; showing {len(data.duplicates)}. "
           "The kept copy (green) is the accepted one every other copy points at.</p>"]
    for g in data.duplicates:
        kept = g["kept"]
        cells = [_card(kept, uris, "", "kept", "kept", _ranking(kept))] if kept else [
            f"<figure class=kept><div class=noimg>kept {escape(g['kept_id'][:12])}</div></figure>"]
        cells += [_card(c, uris, "", "", c["reason"] or "", _ranking(c)) for c in g["copies"]]
        out.append(f'<div class="group">{"".join(cells)}</div>')
    return "".join(out) if data.duplicates else "<p>No duplicates.</p>"


def _ranking(row: dict) -> str:
    """The values the best-copy ranking looks at, to see why one copy won."""
    q = f"JPEG q{row['jpeg_quality']:.0f}" if row.get("jpeg_quality") is not None else str(row.get("format") or "")
    return f"{q} · noise {_num(row['noise_sigma'])} · sharpness {_num(row['sharpness'])}"


def _captions(data, uris) -> str:
    s = data.caption_stats
    if not s["by_flag"]:
        return "<p>No captions yet (<code>supir-data caption</code>).</p>"
    flags = "".join(f"<tr><td>{escape(r['model'])}</td><td class=t>{escape(r['flag'])}</td><td>{_num(r['n'])}</td></tr>"
                    for r in s["by_flag"])
    q = s["q"] or [None] * 3
    stats = (f"<p>{_num(s['n'])} good captions; tokens per caption: mean {_num(s['mean'])}, "
             f"5 / 50 / 95 % {_num(q[0])} / {_num(q[1])} / {_num(q[2])}.</p>")
    plot = f"<div class=plots><div>{plots.histogram_svg(data.caption_lengths)}</div></div>" if data.caption_lengths else ""

    def example(r, flag=""):
        why = f'<span class="badge bad">{escape(flag)}</span> ' if flag else ""
        thumb = _img(uris.get(r["path"]), r["image_id"][:12]) if r.get("path") else _img(None, "")
        return (f'<div class="caption"><figure>{thumb}</figure><p>{why}{escape(r["caption"] or "(empty)")}'
                f"<br><span class=muted>{escape(r['model'])} · {_num(r['n_tokens'])} tokens</span></p></div>")

    good = "".join(example(r) for r in data.captions)
    bad = "".join(example(r, f) for f, rows in data.flagged_captions.items() for r in rows)
    return (f"{stats}<table><tr><th>model</th><th class=t>flag</th><th>captions</th></tr>{flags}</table>{plot}"
            f"<h3>Examples</h3><div class=captions>{good}</div>"
            + (f"<h3>Flagged (not used)</h3><div class=captions>{bad}</div>" if bad else ""))


def _negatives(data, uris) -> str:
    if not data.negative_stats:
        return "<p>No negative-quality samples yet (<code>supir-data negatives</code>).</p>"
    rows = "".join(f"<tr><td>{escape(r['model'])}</td><td>{_num(r['strength'])}</td><td>{_num(r['steps'])}</td>"
                   f"<td>{_num(r['n'])}</td><td>{_num(r['sources'])}</td><td class=t>{escape(r['prompt'][:90])}</td></tr>"
                   for r in data.negative_stats)
    pairs = "".join(
        f'<div class="pair"><figure>{_img(uris.get(n["source_path"]), "source")}<figcaption>source</figcaption></figure>'
        f'<figure>{_img(uris.get(n["path"]), "negative")}<figcaption>negative · seed {n["seed"]}</figcaption>'
        "</figure></div>" for n in data.negatives)
    return (f"<table><tr><th>model</th><th>strength</th><th>steps</th><th>samples</th><th>sources</th>"
            f"<th class=t>prompt</th></tr>{rows}</table><div class=pairs>{pairs}</div>")


def _shards(data, preview) -> str:
    if data.shard_mix:
        rows = "".join(f"<tr><td>{escape(r['name'])}</td><td class=t>{escape(r['split'])}</td><td>{_num(r['shards'])}</td>"
                       f"<td>{_num(r['samples'])}</td><td>{r['bytes'] / 1e6:,.1f} MB</td></tr>" for r in data.shard_mix)
        recipes = "".join(f"<h3>{escape(str(n))}: options of the newest run</h3>{_recipe(c)}"
                          for n, c in sorted(data.shard_configs.items(), key=lambda kv: str(kv[0])))
        out = (f"<table><tr><th>name</th><th class=t>split</th><th>shards</th><th>samples</th><th>size</th></tr>{rows}"
               f"</table>{_source_mix(data.shard_sources)}{recipes}")
    else:
        out = "<p>No shards yet (<code>supir-data shard</code>).</p>"
    if preview:
        name, png = preview
        out += (f"<h3>Degradation preview: preset <code>{escape(name)}</code> (GT left, LQ right)</h3>"
                f'<img class="preview" alt="degradation preview" src="{thumbs.data_uri(png, "image/png")}">')
    return out


def _source_mix(rows: list[dict]) -> str:
    """Samples per source and split of each shard set, as written (the `shards` rows' source counts)."""
    out = []
    for name in sorted({r["name"] for r in rows}, key=str):
        mine = [r for r in rows if r["name"] == name]
        splits = sorted({r["split"] for r in mine}, key=str)
        cell = {(r["source"], r["split"]): r for r in mine}
        sources = sorted({r["source"] for r in mine}, key=lambda s: (-sum(r["samples"] for r in mine if r["source"] == s), s))
        head = "".join(f"<th>{escape(str(sp))}</th>" for sp in splits)
        body = "".join(
            f"<tr><td>{escape(src)}</td>" + "".join(
                f"<td>{_num(cell[(src, sp)]['samples'])} ({cell[(src, sp)]['share']:.1%})</td>" if (src, sp) in cell
                else "<td>-</td>" for sp in splits) + "</tr>" for src in sources)
        out.append(f"<h3>{escape(str(name))}: samples per source and split</h3>"
                   f"<table class=mix><tr><th>source</th>{head}</tr>{body}</table>")
    return "".join(out)


def _recipe(config_json: str) -> str:
    keep = ("gt_size", "crop", "resize", "lq", "preset", "val_fraction", "negatives_fraction", "source_weights", "seed")
    config = json.loads(config_json)
    cells = "".join(f"<tr><td>{escape(k)}</td><td class=t><code>{escape(json.dumps(config[k]))}</code></td></tr>"
                    for k in keep if k in config)
    return f"<table>{cells}</table>"


def render(data, preview: tuple[str, bytes] | None = None) -> str:
    paths = [r["path"] for g in data.groups.values() for r in g["rows"]]
    paths += [c["path"] for g in data.duplicates for c in ([g["kept"]] if g["kept"] else []) + g["copies"]]
    paths += [r.get("path") for r in data.captions + [x for v in data.flagged_captions.values() for x in v]]
    paths += [p for n in data.negatives for p in (n["path"], n["source_path"])]
    uris = thumbs.thumbnails(paths)
    seen = sum(r["n"] for r in data.reasons)
    accepted = sum(r["n"] for r in data.reasons if r["reason"] is None)
    cards = [("images seen", seen), ("accepted", accepted), ("rejected", seen - accepted),
             ("good captions", data.caption_stats["n"]), ("negatives", sum(r["n"] for r in data.negative_stats)),
             ("shard samples", sum(r["samples"] for r in data.shard_mix))]
    acc, rej = _samples(data, uris)
    sections = [("counts", "Counts by source and outcome", _counts(data)),
                ("signals", "Quality signals and thresholds", _signals(data)),
                ("accepted", "Accepted images", acc), ("rejected", "Rejected images, by reason", rej),
                ("duplicates", "Duplicate groups", _duplicates(data, uris)),
                ("captions", "Captions", _captions(data, uris)), ("negatives", "Negative-quality samples",
                                                                    _negatives(data, uris)),
                ("shards", "Shards and degradation", _shards(data, preview))]
    nav = "".join(f'<a href="#{sid}">{escape(title.split(",")[0])}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{escape(title)}</h2>{html}</section>' for sid, title, html in sections)
    stats = "".join(f"<div class=stat><b>{_num(v)}</b><span>{escape(k)}</span></div>" for k, v in cards)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>supir-data report</title>'
            f'<link rel="icon" href="{_FAVICON}"><meta name="viewport" content="width=device-width">'
            f"<style>{STYLE}</style></head><body><header><h1>supir-data catalog report</h1>"
            f"<p>{escape(data.root)} · generated {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}</p>"
            f'<div class="cards">{stats}</div></header><nav>{nav}</nav><main>{body}</main></body></html>')


# Without an icon link a browser requests /favicon.ico: a failed load in the console.
_FAVICON = ("data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
            "%3Crect width='16' height='16' rx='3' fill='%231d3557'/%3E%3C/svg%3E")
