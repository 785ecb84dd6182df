"""`supir-data eval` end to end on tiny models: 2 checkpoints + bicubic × 3 photos × 5 degradations, killed
mid-run and resumed without duplicates → complete tables and a gallery (rendered in headless Chromium)."""

import csv
import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from supir.eval_protocol import DEGRADATIONS
from tests.pipelines.chromium import chromium, screenshot
from tests.pipelines.eval_fixtures import make_checkpoints, make_photos
from tests.pipelines.kill_run import run_and_kill

SIZE = 64
FAST = ["--size", SIZE, "--steps", 2, "--part-rows", 1, "--gpus-per-actor", 0]


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    return make_photos(root / "photos", 3), make_checkpoints(root)


@pytest.fixture(scope="module")
def finished(eval_inputs, tmp_path_factory, ray_cluster):
    """One eval killed (SIGKILL) once its first results are on disk, then resumed by the same command
    (in-process); the assertions below are on the resumed output."""
    from click.testing import CliRunner

    from pipelines.cli import cli

    photos, (a, b) = eval_inputs
    out = tmp_path_factory.mktemp("eval-out") / "out"
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(out.parent / "torch")  # empty: LPIPS and NR weights are missing
    args = [str(x) for x in ("eval", "--gt", photos, "--checkpoint", a, "--checkpoint", b, "--baseline", "bicubic",
                             "--out", out, *FAST)]  # fmt: skip
    parts = out / "lake" / "eval_results"  # the real signal: results on disk
    killed_with = run_and_kill(["--num-cpus", "2", *args], lambda: len(list(parts.glob("part-*.parquet"))),
                               at_least=2, timeout=240)
    assert 2 <= killed_with < 45

    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    yield out, result.output, killed_with
    if previous is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = previous


def test_kill_mid_run_resumes_with_the_missing_results_only(finished):
    out, output, killed_with = finished
    assert f"bicubic: {max(0, 15 - killed_with)} of 15 image×degradation pairs to do" in output
    assert "run eval-" in output and f": {45 - killed_with} restorations on 1 actor(s)" in output
    assert len(list((out / "lake" / "eval_results").glob("part-*.parquet"))) == 45  # one per item, none twice


def test_tables_are_complete(finished):
    out, output, _ = finished
    rows = pq.read_table(out / "results.parquet").to_pylist()
    methods = ["bicubic", "ours-step-000001", "release-step-000001"]
    keys = {(r["image"], r["degradation"], r["method"], r["metric"]) for r in rows}
    assert len(keys) == len(rows) == 3 * 5 * 3 * 6  # image × degradation × method × metric, once each
    assert {r["method"] for r in rows} == set(methods)
    psnr = [r["value"] for r in rows if r["metric"] == "psnr"]
    assert len(psnr) == 45 and all(5 < v < 60 for v in psnr)
    missing = [r for r in rows if r["metric"] in ("lpips", "maniqa", "clipiqa", "musiq")]
    assert all(r["value"] is None and r["detail"].startswith("missing: put ") for r in missing)
    assert any("LPIPS_v0.1_alex-df73285e.pth at " in r["detail"] for r in missing)
    # the two checkpoints restore differently; bicubic's sr8 is worse than its sr4
    by = {(r["image"], r["degradation"], r["method"]): r["value"] for r in rows if r["metric"] == "psnr"}
    assert any(by[(i, d, methods[1])] != by[(i, d, methods[2])] for (i, d, m) in by if m == methods[1])
    mean = {d: np.mean([v for (i, dd, m), v in by.items() if dd == d and m == "bicubic"]) for d in DEGRADATIONS}
    assert mean["sr8"] < mean["sr4"] and mean["sr4_noise40"] < mean["sr4"]

    with open(out / "summary.csv", encoding="utf-8") as fh:
        lines = list(csv.DictReader(fh))
    assert list(lines[0])[:8] == ["Degradation", "Method", "PSNR", "SSIM", "LPIPS↓", "ManIQA", "ClipIQA", "MUSIQ"]
    assert [(x["Degradation"], x["Method"]) for x in lines] == [
        (d.label, m) for d in DEGRADATIONS.values() for m in methods]  # fmt: skip
    assert all(x["images"] == "3" and x["MUSIQ"].startswith("missing: put musiq_koniq_ckpt") for x in lines)
    assert float(lines[0]["PSNR"]) == pytest.approx(np.mean([by[(f"photo_{i}", "sr4", "bicubic")] for i in range(3)]),
                                                    abs=0.006)  # fmt: skip
    assert "wrote" in output


def test_files_follow_the_protocol(finished):
    out, _, _ = finished
    gt = Image.open(out / "inputs" / "gt" / "photo_0.png")
    assert gt.size == (SIZE, SIZE)  # short side -> --size, centre crop
    assert Image.open(out / "inputs" / "sr8" / "photo_0.png").size == (SIZE // 8, SIZE // 8)
    jpeg = Image.open(out / "inputs" / "blur2_sr4_noise20_jpeg50" / "photo_0.jpg")
    assert jpeg.format == "JPEG" and jpeg.size == (SIZE // 4, SIZE // 4)
    for method in ("bicubic", "ours-step-000001"):
        assert Image.open(out / "outputs" / method / "sr4" / "photo_2.png").size == (SIZE, SIZE)


def test_gallery_lists_every_method_and_renders(finished, tmp_path):
    out, _, _ = finished
    page = (out / "gallery.html").read_text()
    for needle in ("LQ", "bicubic", "ours-step-000001", "release-step-000001", "GT", "PSNR", "class=\"zoom\"",
                   "LPIPS↓ missing", DEGRADATIONS["sr4_noise40"].label):
        assert needle in page
    assert not re.search(r"(src|href)=\"https?:|url\(.?https?:", page) and "<script" not in page  # offline
    if chromium() is None:
        pytest.skip("chromium is not installed (scripts/setup_system.sh)")
    png = tmp_path / "gallery.png"
    assert screenshot((out / "gallery.html").as_uri(), png, tmp_path / "profile", 1400, 2000) == []
    rgb = np.asarray(Image.open(png).convert("RGB"))
    assert rgb[600:].std() > 25  # the images, not a blank page
    assert len(np.unique((rgb[600:, ::4][::4] // 16).reshape(-1, 3), axis=0)) > 100


def test_a_second_run_does_nothing_new(finished, eval_inputs, run_cli):
    out, _, _ = finished
    photos, (a, b) = eval_inputs
    before = sorted(p.name for p in (out / "lake" / "eval_results").glob("part-*.parquet"))
    result = run_cli(".", "eval", "--gt", photos, "--checkpoint", a, "--checkpoint", b, "--baseline", "bicubic",
                     "--out", out, *FAST)
    assert result.output.count("(all results already in") == 3 and "run eval-" not in result.output
    assert sorted(p.name for p in (out / "lake" / "eval_results").glob("part-*.parquet")) == before
    other = run_cli(".", "eval", "--gt", photos, "--baseline", "bicubic", "--out", out, "--size", 32,
                    expect_exit=None)
    assert other.exit_code != 0 and "other size" in str(other.exception)
