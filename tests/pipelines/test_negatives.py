"""`supir-data negatives`: end to end through the CLI and Ray with the tiny SDXL, plus its pure parts."""

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from catalogs.catalog import Catalog
from pipelines.engine.actors import load_rgb
from pipelines.negatives.command import (
    NegativeConfig,
    fit_source,
    load_sdedit_pipeline,
    plan_slots,
    png_bytes,
    sdedit,
    sdedit_size,
    size_multiple,
)
from schemas.runs import derive_seed
from supir.prompts import NEGATIVE_PROMPT_PAPER, NEGATIVE_PROMPT_RELEASED
from tests.pipelines.test_caption import make_catalog, one_thread, run_and_kill

FAST = ("--steps", 4, "--resolution", 64)  # 2 denoising steps at strength 0.5, 64-px short side


def negatives(root) -> list[dict]:
    return Catalog(root).query("SELECT * FROM negatives ORDER BY image_id, seed").to_pylist()


@pytest.fixture(scope="module")
def tiny_pipe(tiny_models):
    return load_sdedit_pipeline(NegativeConfig(model=str(tiny_models["sdxl"])))


@one_thread()
def test_negatives_cli_creates_reproducible_rows_and_tops_up(
    tmp_path, ray_cluster, run_cli, tiny_models, tiny_pipe
):
    sources = {r["image_id"]: r for r in make_catalog(tmp_path, 3)}
    model = tiny_models["sdxl"]
    run_cli(tmp_path, "negatives", "--model", model, "--count", 2, *FAST, "--seed", 7)
    first = negatives(tmp_path)
    assert len(first) == 2 and len({r["image_id"] for r in first}) == 2
    cfg = NegativeConfig(model=str(model), prompt=NEGATIVE_PROMPT_PAPER, steps=4, seed=7, resolution=64)
    for r in first:
        src = sources[r["image_id"]]
        assert r["seed"] == derive_seed(7, f"{r['image_id']}:0")
        assert (r["prompt"], r["strength"], r["steps"], r["guidance"]) == (NEGATIVE_PROMPT_PAPER, 0.5, 4, 7.5)
        data = Path(r["path"]).read_bytes()
        assert Path(r["path"]).parent.parent == tmp_path / "negatives"
        assert hashlib.sha256(data).hexdigest() == r["negative_id"] == Path(r["path"]).stem
        with Image.open(r["path"]) as img:
            assert img.format == "PNG" and img.size == (r["width"], r["height"])
        assert (r["width"], r["height"]) == sdedit_size(src["width"], src["height"], 64, 16)
        # Same seed -> same bytes, made here without Ray (one thread, as the stage's CPU actors).
        source = fit_source(load_rgb(src["path"], 64), 64, size_multiple(tiny_pipe))
        assert png_bytes(sdedit(tiny_pipe, [source], [r["seed"]], cfg)[0]) == data

    result = run_cli(tmp_path, "negatives", "--model", model, "--count", 2, *FAST, "--seed", 7)
    assert "nothing to do" in result.output and len(negatives(tmp_path)) == 2

    # --count is a target for the table: 3 images, 5 samples -> every image once, two a second time.
    run_cli(tmp_path, "negatives", "--model", model, "--count", 5, *FAST, "--seed", 7, "--prompt", "released")
    rows = negatives(tmp_path)
    assert len(rows) == 5 and len({(r["image_id"], r["seed"]) for r in rows}) == 5
    assert {r["negative_id"] for r in first} <= {r["negative_id"] for r in rows}
    assert len({r["image_id"] for r in rows}) == 3
    assert sum(r["prompt"] == NEGATIVE_PROMPT_RELEASED for r in rows) == 3


@one_thread()
def test_strength_half_runs_half_the_steps(tiny_pipe):
    calls = []
    hook = tiny_pipe.unet.register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        img = Image.new("RGB", (32, 32), (120, 80, 40))
        out = sdedit(tiny_pipe, [img], [1], NegativeConfig(steps=50, strength=0.5, guidance=7.5))
        assert len(calls) == 25  # CFG batches cond + uncond into one UNet call per step
        assert out[0].size == (32, 32)
        calls.clear()
        sdedit(tiny_pipe, [img], [1], NegativeConfig(steps=10, strength=1.0))
        assert len(calls) == 10
    finally:
        hook.remove()


def test_plan_is_stratified_and_seeded(tmp_path):
    rows = make_catalog(tmp_path, 8, sources=("a", "a", "a", "b"))  # 6 from a, 2 from b
    catalog = Catalog(tmp_path)
    source = {r["image_id"]: r["source"] for r in rows}
    plan = plan_slots(catalog, seed=0, count=4).to_pylist()
    assert [source[s["image_id"]] for s in plan].count("b") == 1  # proportional: 4 x 2/8
    assert plan == plan_slots(catalog, seed=0, count=4).to_pylist()
    assert plan != plan_slots(catalog, seed=1, count=4).to_pylist()
    # A target beyond the catalog repeats images with new seeds.
    more = plan_slots(catalog, seed=0, count=10).to_pylist()
    assert len(more) == 10 and len({(s["image_id"], s["seed"]) for s in more}) == 10
    assert more[:4] == plan


def test_size_rules():
    assert sdedit_size(1600, 1200, 1024, 32) == (1344, 1024)  # short side 1024, multiples of 32
    assert sdedit_size(4000, 1000, 1024, 32) == (2048, 1024)  # long side capped at 2x
    img = fit_source(Image.new("RGB", (300, 200)), 64, 16)
    assert img.size == (96, 64)


def test_negatives_resume_after_kill(tmp_path, ray_cluster, run_cli, tiny_models):
    """SIGKILL a real `python -m pipelines negatives` mid-run; the re-run tops up to --count, no dupes."""
    make_catalog(tmp_path, 6)
    args = [
        "negatives",
        "--model",
        str(tiny_models["sdxl"]),
        "--count",
        "8",
        "--steps",
        "16",
        "--resolution",
        "64",
        "--part-rows",
        "1",
    ]
    written = run_and_kill(tmp_path, args, "negatives")
    assert 1 <= written < 8, "the kill should land mid-run"

    run_cli(tmp_path, *args)
    rows = negatives(tmp_path)
    assert len(rows) == 8 and len({(r["image_id"], r["seed"]) for r in rows}) == 8
    assert all(Path(r["path"]).is_file() for r in rows)
