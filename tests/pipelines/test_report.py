"""`report` on a real catalog (the demo corpus ingested, captions, negatives, shards) rendered by Chromium,
and `explain` on its verdicts."""

import base64
import hashlib
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from schemas.runs import utc_now
from tests.pipelines.chromium import chromium, screenshot

needs_chromium = pytest.mark.skipif(chromium() is None, reason="chromium is not installed (scripts/setup_system.sh)")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory, ray_cluster):
    """The demo corpus (photos at 512 px) ingested, plus caption and negative rows and real shards."""
    from click.testing import CliRunner

    from pipelines.cli import cli
    from pipelines.devtools.demo_corpus import make_demo_corpus

    def run(*args):
        result = CliRunner().invoke(cli, ["--root", str(root), *map(str, args)])
        assert result.exit_code == 0, result.output
        return result

    base = tmp_path_factory.mktemp("report")
    root = base / "root"
    make_demo_corpus(base / "corpus", seed=0, min_side=512)
    run("ingest", base / "corpus", "--source", "demo", "--min-side", 512)
    catalog = Catalog(root)
    accepted = catalog.query("SELECT image_id, path FROM images WHERE status = 'accepted' ORDER BY path").to_pylist()
    captions = [{"image_id": r["image_id"], "caption": f"a detailed photo, number {i}, in a natural style",
                 "model": "tiny-llava", "prompt": "Describe this image", "n_tokens": 9 + i,
                 "flag": "repetitive" if i == 0 else None, "run_id": "t", "created_at": utc_now()}
                for i, r in enumerate(accepted)]
    write_part(root, "captions", captions, name="test-captions")
    negatives = []
    for i, r in enumerate(accepted[:2]):  # "negative quality": a posterised copy, stored as the stage stores it
        with Image.open(r["path"]) as img:
            buf = io.BytesIO()
            img.convert("RGB").resize((256, 256)).quantize(8).convert("RGB").save(buf, "PNG")
        nid = hashlib.sha256(buf.getvalue()).hexdigest()
        path = root / "negatives" / nid[:2] / f"{nid}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.getvalue())
        negatives.append({"negative_id": nid, "image_id": r["image_id"], "path": str(path), "prompt": "oil painting",
                          "strength": 0.5, "steps": 4, "guidance": 7.5, "seed": i, "model": "tiny-sdxl",
                          "width": 256, "height": 256, "run_id": "t", "created_at": utc_now()})
    write_part(root, "negatives", negatives, name="test-negatives")
    catalog.refresh()
    run("shard", "--name", "demo", "--gt-size", 256, "--lq", "none", "--val-fraction", 0.2)
    run("report", "--out", root / "report.html", "--per-group", 6)
    return root


class _Resources(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_report_is_self_contained_and_shows_every_part(demo_root):
    html = (demo_root / "report.html").read_text()
    parser = _Resources()
    parser.feed(html)
    assert parser.urls and all(u.startswith(("data:", "#")) for u in parser.urls)  # opens offline, no CDN
    images = [u for u in parser.urls if u.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))]
    assert len(images) > 20
    for uri in images:  # every embedded picture decodes
        Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).verify()
    catalog = Catalog(demo_root)
    for reason in catalog.query("SELECT DISTINCT reason FROM images WHERE reason IS NOT NULL").column(0).to_pylist():
        assert f">{reason} <" in html  # a heading per rejection reason
    assert 'class="kept"' in html and "near_duplicate" in html
    sharpness_min = catalog.settings()["quality_thresholds"]["sharpness"]["min"]
    assert f"min {sharpness_min:g}" in html  # the threshold drawn on the sharpness histogram
    assert "a detailed photo, number 1" in html and "repetitive" in html
    assert "negative · seed 0" in html and "Degradation preview" in html
    assert ">train<" in html and ">val<" in html
    # the shard stage records each tar's samples per source; the page shows that mix per split
    shards = catalog.query("SELECT samples, sources_json FROM shards WHERE name = 'demo'").to_pylist()
    assert shards and all(sum(json.loads(r["sources_json"]).values()) == r["samples"] for r in shards)
    mix = html.split("demo: samples per source and split", 1)[1].split("</table>", 1)[0]
    assert "<td>demo</td>" in mix  # the corpus was ingested as source "demo"


def test_report_is_deterministic_apart_from_its_timestamp(demo_root, tmp_path):
    from pipelines.report.command import build_report

    pages = [build_report(Catalog(demo_root), tmp_path / f"r{i}.html")[0].read_text() for i in range(2)]
    stamp = re.compile(r"generated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
    assert stamp.search(pages[0])
    assert stamp.sub("", pages[0]) == stamp.sub("", pages[1])


@needs_chromium
def test_report_renders_in_headless_chromium_without_console_errors(demo_root, tmp_path):
    png = tmp_path / "report.png"
    messages = screenshot((demo_root / "report.html").as_uri(), png, tmp_path / "profile", height=4000)
    assert messages == []
    with Image.open(png) as img:
        rgb = np.asarray(img.convert("RGB"))
    assert rgb.shape[:2] == (4000, 1400)
    # the header, counts and plots; then thumbnails further down (photos: many more colours)
    for part, min_colours in ((rgb[:1500], 30), (rgb[2000:], 200)):
        assert part.std() > 25
        colours = np.unique((part[::4, ::4] // 16).reshape(-1, 3), axis=0)  # 4 bits per channel
        assert len(colours) > min_colours


@needs_chromium
def test_console_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><body><p>x</p><script>console.error('boom'); missingFunction();</script>")
    messages = screenshot(page.as_uri(), tmp_path / "broken.png", tmp_path / "profile", 400, 300)
    assert any("boom" in m for m in messages) and any("missingFunction" in m for m in messages)


def test_explain_prints_signals_thresholds_decision_and_kept_copy(demo_root, run_cli):
    catalog = Catalog(demo_root)
    noisy = catalog.query("SELECT path FROM images WHERE reason = 'low_quality:noise_sigma' ORDER BY path LIMIT 1")
    out = run_cli(demo_root, "explain", noisy.column(0)[0].as_py()).output
    assert "decision  rejected: low_quality:noise_sigma" in out
    line = next(x for x in out.splitlines() if x.strip().startswith("noise_sigma"))
    noise_max = catalog.settings()["quality_thresholds"]["noise_sigma"]["max"]
    assert f"max {noise_max:g}" in line and line.endswith("FAIL (the reason)")
    assert next(x for x in out.splitlines() if x.strip().startswith("clipping")).endswith("pass")

    dup = catalog.query("SELECT path, duplicate_of FROM images WHERE reason = 'near_duplicate' LIMIT 1").to_pylist()[0]
    kept = catalog.query("SELECT path FROM images WHERE image_id = ? AND status = 'accepted'",
                         [dup["duplicate_of"]]).column(0)[0].as_py()
    out = run_cli(demo_root, "explain", dup["path"]).output
    assert f"kept copy {kept}" in out and f"image_id {dup['duplicate_of']}" in out
    header = next(x for x in out.splitlines() if x.strip().startswith("signal"))
    assert header.endswith("kept copy")  # the kept copy's values, to see why the ranking kept it

    image_id = catalog.query("SELECT image_id FROM images WHERE reason = 'duplicate' LIMIT 1").column(0)[0].as_py()
    out = run_cli(demo_root, "explain", image_id).output  # an id: every path holding those bytes
    assert "decision  accepted" in out and "decision  rejected: duplicate" in out


def test_explain_unknown_path_is_a_clear_error(demo_root, capsys):
    from pipelines.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--root", str(demo_root), "explain", "no/such/photo.jpg"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "no image with path or image_id" in err and "photo.jpg" in err


@needs_chromium
def test_bound_labels_stay_inside_their_plot(tmp_path):
    """A max close to the right end of the axis (clipping's 0.35 of 0..0.37) is labelled left of its line."""
    from pipelines.report.aggregate import CATEGORIES, Bound, Histogram
    from pipelines.report.plots import histogram_svg

    counts = {CATEGORIES[0]: [5] * 18 + [0, 0], CATEGORIES[1]: [0] * 18 + [2, 2]}
    cases = [Histogram("clipping", 0.0, 0.37, counts, Bound(max=0.35)),
             Histogram("sharpness", 0.0, 2.0, counts, Bound(min=0.02, max=1.99))]
    # The page reports every <text> that leaves its <svg> as a console message (the only script here).
    check = ("for (const s of document.querySelectorAll('svg')) { const b = s.getBoundingClientRect();"
             " for (const t of s.querySelectorAll('text')) { const r = t.getBoundingClientRect();"
             " if (r.right > b.right + 0.5 || r.left < b.left - 0.5) console.log('overflow: ' + t.textContent); } }")
    page = tmp_path / "plots.html"
    page.write_text("<!doctype html><meta charset=utf-8><body style='width:500px'>"
                    + "".join(f"<div>{histogram_svg(h)}</div>" for h in cases) + f"<script>{check}</script>")
    messages = screenshot(page.as_uri(), tmp_path / "plots.png", tmp_path / "profile", width=600, height=800)
    assert not [m for m in messages if "overflow" in m], messages
