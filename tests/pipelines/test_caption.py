"""`supir-data caption`: end to end through the CLI and Ray with the tiny LLaVA, plus its pure parts."""

import json
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import skimage.data
import torch
from PIL import Image

from catalogs.catalog import Catalog
from catalogs.lake import list_parts
from pipelines.caption.command import (
    MAX_AUTO_BATCH,
    CaptionConfig,
    auto_batch_size,
    caption_images,
    degenerate_flag,
    kv_cache_bytes_per_image,
    load_captioner,
    pending_images,
    processor_min_side,
    repeated_tail,
)
from pipelines.caption.stage import CaptionStage
from pipelines.engine.actors import load_rgb
from pipelines.engine.isolation import JobContext
from pipelines.engine.stage import Limits
from pipelines.engine.worker import run_job
from schemas.errors import ConfigError, MissingWeightsError
from supir.prompts import CAPTION_PROMPT
from tests.pipelines import kill_run
from tests.scan_rows import register_scans, scan_row

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry")


def make_catalog(root: Path, n: int, sources=("flickr", "ffhq")) -> list[dict]:
    """A catalog of ``n`` accepted JPEGs (real photos, resized) registered as `scans` rows."""
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        photo = Image.fromarray(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])())
        img = photo.resize((80 + 8 * i, 72))  # sizes differ: exercises padding and size grouping
        path = src / f"img{i:02d}.jpg"
        img.save(path, quality=95)
        rows.append(scan_row(path, sources[i % len(sources)]))
    register_scans(root, rows, name="test-scans")
    return rows


def run_and_kill(root: Path, args: list[str], table: str) -> int:
    """Kill `supir-data --root ROOT ARGS` once its first `table` part exists; how many parts it wrote."""
    return kill_run.run_and_kill(["--root", root, "--num-cpus", "2", *args], lambda: len(list_parts(root, table)))


def captions(root) -> list[dict]:
    return Catalog(root).query("SELECT * FROM captions ORDER BY image_id, created_at").to_pylist()


def test_caption_cli_creates_rows_once(tmp_path, ray_cluster, run_cli, tiny_models):
    rows = make_catalog(tmp_path, 5)
    moved = Path(rows[0]["path"]).rename(tmp_path / "moved.jpg")  # accepted, then lost: flagged
    model = tiny_models["llava"]
    args = ("caption", "--model", model, "--batch-size", 2, "--part-rows", 3, "--max-new-tokens", 8)
    run_cli(tmp_path, *args)
    got = {r["image_id"]: r for r in captions(tmp_path)}
    assert sorted(got) == sorted(r["image_id"] for r in rows)
    assert got[rows[0]["image_id"]]["flag"] == "unreadable"
    good = [got[r["image_id"]] for r in rows[1:]]
    for r in good:
        assert r["model"] == str(Path(model).resolve())
        assert r["prompt"] == CAPTION_PROMPT
        assert r["flag"] is None and r["caption"]
        assert 1 <= r["n_tokens"] <= 8
    assert len({r["caption"] for r in good}) > 1  # the tiny model's captions depend on the image
    assert Catalog(tmp_path).scalar("SELECT count(*) FROM latest_captions") == 4
    n_parts = len(list_parts(tmp_path, "captions"))

    result = run_cli(tmp_path, *args)  # idempotent: flagged images are not retried by default
    assert "nothing to caption" in result.output
    assert len(captions(tmp_path)) == 5 and len(list_parts(tmp_path, "captions")) == n_parts

    moved.rename(rows[0]["path"])  # the file is back: --retry-flagged redoes only that image
    run_cli(tmp_path, *args, "--retry-flagged")
    assert len(captions(tmp_path)) == 6
    latest = Catalog(tmp_path).query("SELECT image_id FROM latest_captions").column("image_id").to_pylist()
    assert sorted(latest) == sorted(r["image_id"] for r in rows)


@contextmanager
def one_thread():
    """In-process models on one thread, as the stages' actors on a 2-CPU Ray (and fast on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@one_thread()
def test_batched_equals_unbatched(tmp_path, tiny_models):
    rows = make_catalog(tmp_path, 4)
    cfg = CaptionConfig(model=str(tiny_models["llava"]), max_new_tokens=12)
    model, processor = load_captioner(cfg)
    assert processor_min_side(processor) == 32
    images = [load_rgb(r["path"], processor_min_side(processor)) for r in rows]
    batched = caption_images(model, processor, images, cfg)
    one_by_one = [caption_images(model, processor, [img], cfg)[0] for img in images]
    assert batched == one_by_one
    assert len({g.caption for g in batched}) > 1


@one_thread()
def test_kv_cache_estimate_matches_the_cache_generate_builds(tiny_models):
    cfg = CaptionConfig(model=str(tiny_models["llava"]), max_new_tokens=12)
    model, processor = load_captioner(cfg)
    side = processor_min_side(processor)
    inputs = processor(images=[Image.new("RGB", (side, side))], text=[cfg.template.format(prompt=cfg.prompt)],
                       return_tensors="pt")  # fmt: skip
    out = model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                         return_dict_in_generate=True)  # fmt: skip
    cache = getattr(out, "cache", None) or out.past_key_values
    actual = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    estimate = kv_cache_bytes_per_image(model, processor, cfg)
    assert actual <= estimate <= 1.05 * actual  # the estimate counts the last token's slot too

    assert auto_batch_size(model, processor, cfg) == 8  # on CPU
    assert auto_batch_size(model, processor, cfg, free_bytes=10 * estimate) == 4  # 0.6 x 10 / 1.25
    assert auto_batch_size(model, processor, cfg, free_bytes=50 * estimate) == 24  # 0.6 x 50 / 1.25
    assert auto_batch_size(model, processor, cfg, free_bytes=estimate // 10) == 1
    assert auto_batch_size(model, processor, cfg, free_bytes=10**6 * estimate) == MAX_AUTO_BATCH


@one_thread()
def test_out_of_memory_halves_the_batch_and_loses_nothing(tmp_path, tiny_models):
    """The engine's one OOM fallback, on the caption stage in this process (no Ray)."""
    rows = make_catalog(tmp_path, 5)
    cfg = CaptionConfig(model=str(tiny_models["llava"]), max_new_tokens=12)
    stage = CaptionStage(cfg, "run-oom", torch_threads=1, batch_size=0)
    stage.setup()
    assert stage.batch_size == 8  # automatic, on CPU
    stage.min_side = processor_min_side(stage.processor)
    items = [stage.prepare({"image_id": r["image_id"], "path": r["path"]}) for r in rows]
    images = [Image.fromarray(i["image"]) for i in items]
    expected = caption_images(stage.model, stage.processor, images, cfg)

    generate = stage.model.generate
    calls = []

    def small_gpu(**inputs):  # a GPU that holds 2 images per call
        n = len(inputs["input_ids"])
        calls.append((n, n <= 2))
        if n > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return generate(**inputs)

    stage.model.generate = small_gpu
    root = tmp_path / "root"
    ctx = JobContext(str(root), "run-oom", "job1", str(tmp_path / "notes"), Limits())
    summary = run_job(stage, items, ctx, prepared=True)
    flags = [g.flag or "captioned" for g in expected]
    assert summary["counters"] == {f: flags.count(f) for f in set(flags)}
    assert stage.batch_size == 2 and calls[0] == (5, False)
    assert sum(n for n, ok in calls if ok) == 5  # every image captioned exactly once
    (part,) = list_parts(root, "captions")
    assert pq.read_table(part).column("caption").to_pylist() == [g.caption for g in expected]

    # The next call chunks by the smaller size from the start: no second out-of-memory.
    calls.clear()
    stage.batch_size = 4  # as if the GPU had been sized for 4
    more = [{**item, "image_id": f"{item['image_id']}-{k}"} for k, item in enumerate(items * 2)]
    assert run_job(stage, more, ctx, prepared=True)["rows"] == 10
    assert [ok for _, ok in calls].count(False) == 1 and stage.batch_size == 2


def test_degenerate_generations_are_flagged():
    assert degenerate_flag("  ", [], hit_limit=False) == "empty"
    loop = [5, 6, 7] * 10
    assert repeated_tail(loop) == 30
    assert degenerate_flag("of a tree " * 10, loop, hit_limit=True) == "repetitive"
    varied = list(range(40)) + [9, 9, 9]  # "very very very" at the end of a real sentence
    assert degenerate_flag("a photo", varied, hit_limit=False) is None
    # A loop that ran into the token limit is flagged even when the caption before it was long.
    long = list(range(100)) + [1, 2] * 8
    assert degenerate_flag("x", long, hit_limit=True) == "repetitive"
    assert degenerate_flag("x", long, hit_limit=False) is None


def test_decode_at_processor_resolution(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(skimage.data.astronaut()).resize((1024, 768)).save(path, quality=90)
    img = load_rgb(str(path), 336)
    assert img.mode == "RGB" and min(img.size) == 336 and img.size == (448, 336)
    assert load_rgb(str(path)).size == (1024, 768)
    assert load_rgb(str(path), 4096).size == (1024, 768)  # never upscales


def test_import_captions_from_file(tmp_path, ray_cluster, run_cli):
    rows = make_catalog(tmp_path, 3)
    jsonl = tmp_path / "mine.jsonl"
    lines = [
        {"path": rows[0]["path"], "caption": "a woman in a space suit"},
        {"path": "/nowhere.jpg", "caption": "lost"},
    ]
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run_cli(tmp_path, "caption", "--from-file", jsonl)
    assert "1 rows matched no image" in result.output
    run_cli(tmp_path, "caption", "--from-file", jsonl)  # re-import replaces, never duplicates
    parquet = tmp_path / "mine.parquet"
    pq.write_table(
        pa.table({"image_id": [rows[1]["image_id"]], "caption": ["a cup"], "model": ["human"]}), parquet
    )
    run_cli(tmp_path, "caption", "--from-file", parquet)
    got = (
        Catalog(tmp_path)
        .query("SELECT image_id, caption, model FROM latest_captions ORDER BY caption")
        .to_pylist()
    )
    assert got == [
        {"image_id": rows[1]["image_id"], "caption": "a cup", "model": "human"},
        {"image_id": rows[0]["image_id"], "caption": "a woman in a space suit", "model": "imported"},
    ]
    # What a model run would still do: every image for a new (model, prompt); with
    # --only-uncaptioned just the image no import covered; --limit caps it.
    catalog = Catalog(tmp_path)
    assert len(pending_images(catalog, "m", CAPTION_PROMPT)) == 3
    only = pending_images(catalog, "m", CAPTION_PROMPT, only_uncaptioned=True).column("image_id").to_pylist()
    assert only == [rows[2]["image_id"]]
    assert len(pending_images(catalog, "m", CAPTION_PROMPT, limit=2)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"file": "x", "text": "y"}) + "\n")
    result = run_cli(tmp_path, "caption", "--from-file", bad, expect_exit=1)  # in-process: the error object
    assert isinstance(result.exception, ConfigError) and "needs a `caption` column" in str(result.exception)


def test_bad_model_or_options_are_clear_errors(tmp_path, ray_cluster, run_cli, tiny_models):
    make_catalog(tmp_path, 1)
    for stage in ("caption", "negatives"):
        result = run_cli(tmp_path, stage, "--model", tmp_path / "no-such-model", expect_exit=1)
        assert isinstance(result.exception, MissingWeightsError) and "no-such-model" in str(result.exception)
    result = run_cli(
        tmp_path, "caption", "--model", tiny_models["llava"], "--template", "{prompt}", expect_exit=1
    )
    assert isinstance(result.exception, ConfigError) and "<image>" in str(result.exception)
    result = run_cli(tmp_path, "negatives", "--model", tiny_models["sdxl"], "--steps", 1, expect_exit=1)
    assert isinstance(result.exception, ConfigError) and "no denoising step" in str(result.exception)
    assert (
        Catalog(tmp_path).scalar("SELECT (SELECT count(*) FROM captions) + (SELECT count(*) FROM negatives)")
        == 0
    )


def test_caption_resumes_after_kill(tmp_path, ray_cluster, run_cli, tiny_models):
    """SIGKILL a real `python -m pipelines caption` mid-run; the re-run completes without duplicates."""
    rows = make_catalog(tmp_path, 12)
    args = [
        "caption",
        "--model",
        str(tiny_models["llava"]),
        "--batch-size",
        "1",
        "--part-rows",
        "2",
        "--max-new-tokens",
        "32",
    ]
    written = run_and_kill(tmp_path, args, "captions")
    assert 1 <= written < 6, "the kill should land mid-run"

    run_cli(tmp_path, *args)
    got = captions(tmp_path)
    assert sorted(r["image_id"] for r in got) == sorted(r["image_id"] for r in rows)
    assert all(r["flag"] is None for r in got)


@one_thread()
def test_other_image_text_to_text_model(tmp_path):
    """A LLaVA-NeXT (another processor, any-resolution tiling) captions through the same code."""
    from transformers import (
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessor,
        LlavaNextProcessor,
    )

    from pipelines.devtools.tiny_models import IMAGE_TOKEN, _tiny_tokenizer

    tok = _tiny_tokenizer()
    grid = [[32, 64], [64, 32], [64, 64]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=grid
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = LlavaNextConfig(
        text_config={"model_type": "llama", **small, "vocab_size": len(tok), "initializer_range": 0.2},
        vision_config={"model_type": "clip_vision_model", **small, "image_size": 32, "patch_size": 8},
        image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        image_grid_pinpoints=grid,
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(config).save_pretrained(tmp_path / "next")
    processor.save_pretrained(tmp_path / "next")

    rows = make_catalog(tmp_path, 3)
    cfg = CaptionConfig(model=str(tmp_path / "next"), max_new_tokens=6)
    model, processor = load_captioner(cfg)
    assert type(model).__name__ == "LlavaNextForConditionalGeneration"
    images = [load_rgb(r["path"], processor_min_side(processor)) for r in rows]
    batched = caption_images(model, processor, images, cfg)
    assert batched == [caption_images(model, processor, [img], cfg)[0] for img in images]
    assert all(g.n_tokens >= 1 for g in batched)
