"""`supir-data caption`: LLaVA-1.5 captions for accepted images (paper §3.2), on a Ray actor pool.

The per-batch work is :func:`caption_images` (a loaded model + processor + PIL images -> captions,
testable without Ray); :class:`CaptionActor` wraps it for Ray and writes one Parquet part per task
(``--part-rows`` images, run ``--batch-size`` at a time).
Work = accepted images without a caption row for this (model, prompt), so runs resume and never
duplicate. Degenerate generations are stored with a ``flag`` ('empty' | 'repetitive' | 'unreadable')
and are not retried by default: greedy decoding would repeat them exactly (``--retry-flagged`` does).
"""

from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import pyarrow as pa

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from pipelines.engine.actors import (
    PoolOptions,
    load_rgb,
    part_name,
    plan_actor_pool,
    pool_options,
    run_actor_stage,
)
from schemas.errors import ConfigError, InputImageError, MissingWeightsError
from schemas.runs import new_run_id, utc_now
from supir.prompts import CAPTION_PROMPT

DEFAULT_MODEL = "llava-hf/llava-1.5-13b-hf"
LLAVA_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"  # llava-1.5's conversation format
CPU_BATCH = 8  # --batch-size 0 on CPU
MAX_AUTO_BATCH = 128  # --batch-size 0 on a GPU: at most this many images per generate() call
AUTO_MEMORY_FRACTION = 0.6  # of the free GPU memory budgeted for KV caches (see auto_batch_size)
MIN_LOOP_TOKENS = 12  # a repeated tail shorter than this is style, not a loop
LOOP_FRACTION = 0.25  # ... unless it covers this much of the caption


@dataclass(frozen=True)
class CaptionConfig:
    model: str = DEFAULT_MODEL
    prompt: str = CAPTION_PROMPT
    template: str = LLAVA_TEMPLATE
    max_new_tokens: int = 256
    dtype: str = "auto"  # auto = bf16 (fp16 without bf16 support) on GPU, fp32 on CPU
    load_in: str | None = None  # '8bit' | '4bit' (bitsandbytes, GPU only)


@dataclass(frozen=True)
class Generation:
    caption: str
    n_tokens: int
    flag: str | None  # None for a good caption


def model_key(model: str) -> str:
    """What the `model` column records: a local folder's absolute path, else the hub id as given."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else model


# -- the per-batch function (no Ray) ----------------------------------------------------------------
def load_captioner(cfg: CaptionConfig, device: str = "cpu"):
    """(model, processor) through the same `from_pretrained` path for hub ids and local folders."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if cfg.dtype == "auto":
        gpu_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        dtype = torch.float32 if device == "cpu" else (torch.bfloat16 if gpu_bf16 else torch.float16)
    else:
        dtype = dtypes[cfg.dtype]
    kwargs: dict = {"dtype": dtype}
    if cfg.load_in:
        if not device.startswith("cuda"):
            raise ConfigError(f"--load-in {cfg.load_in} needs a GPU (bitsandbytes); none is visible")
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_8bit=cfg.load_in == "8bit",
            load_in_4bit=cfg.load_in == "4bit",
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    try:
        processor = AutoProcessor.from_pretrained(cfg.model)
        model = AutoModelForImageTextToText.from_pretrained(cfg.model, **kwargs).eval()
    except OSError as exc:
        raise MissingWeightsError(
            f"cannot load captioning model {cfg.model!r}: {exc}. Give --model a local folder "
            "(save_pretrained layout) or a hub id whose files are in the Hugging Face cache."
        ) from exc
    if not cfg.load_in:
        model = model.to(device)
    processor.tokenizer.padding_side = "left"  # batched generation appends to the right
    return model, processor


def processor_min_side(processor) -> int | None:
    """The short side the processor resizes to (336 for llava-1.5): decode no larger than this."""
    ip = getattr(processor, "image_processor", None)
    sizes = [getattr(ip, "size", None), getattr(ip, "crop_size", None)]
    sides = []
    for size in sizes:
        size = dict(size) if size is not None else {}
        sides += [v for k, v in size.items() if k in ("shortest_edge", "height", "width") and v]
    return max(sides) if sides else None


def repeated_tail(token_ids: list[int]) -> int:
    """Length of the longest tail made of one block (of any period) repeated at least 3 times."""
    n, best = len(token_ids), 0
    for period in range(1, n // 3 + 1):
        k = 0
        while k + period < n and token_ids[n - 1 - k] == token_ids[n - 1 - k - period]:
            k += 1
        if (k + period) // period >= 3:
            best = max(best, k + period)
    return best


def degenerate_flag(text: str, token_ids: list[int], hit_limit: bool) -> str | None:
    """'empty', 'repetitive' (a token loop: long, or one that ran into --max-new-tokens) or None."""
    if not text.strip():
        return "empty"
    loop = repeated_tail(token_ids)
    if loop >= MIN_LOOP_TOKENS and (hit_limit or loop >= LOOP_FRACTION * len(token_ids)):
        return "repetitive"
    return None


def caption_images(model, processor, images: list, cfg: CaptionConfig) -> list[Generation]:
    """Greedy captions for a batch of PIL images (left-padded batched generation)."""
    import torch

    if not images:
        return []
    text = cfg.template.format(prompt=cfg.prompt)
    inputs = processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=cfg.max_new_tokens, do_sample=False)
    new_tokens = out[:, inputs["input_ids"].shape[1] :].tolist()
    gen = model.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    stop = {t for t in [*eos, gen.pad_token_id, processor.tokenizer.pad_token_id] if t is not None}
    results = []
    for ids in new_tokens:
        end = next((i for i, t in enumerate(ids) if t in stop), len(ids))
        ids = ids[:end]
        caption = processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
        flag = degenerate_flag(caption, ids, hit_limit=end >= cfg.max_new_tokens)
        results.append(Generation(caption=caption, n_tokens=len(ids), flag=flag))
    return results


def kv_cache_bytes_per_image(model, processor, cfg: CaptionConfig) -> int:
    """GPU memory one more image in a generate() batch takes: its key/value cache at full length.

    Prompt length from the processor itself (image tokens included: 576 for llava-1.5 at 336 px), plus
    ``max_new_tokens``. For LLaVA-1.5-13B in bf16 at 128 new tokens this is 0.56 GiB; an H200 measured
    0.55 GiB per image between batch 1 and 128 (docs/caption_negatives.md).
    """
    import torch
    from PIL import Image

    text = model.config.get_text_config()
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    side = processor_min_side(processor) or 336
    prompt = processor(
        images=[Image.new("RGB", (side, side))],
        text=[cfg.template.format(prompt=cfg.prompt)],
        return_tensors="pt",
    )
    tokens = prompt["input_ids"].shape[1] + cfg.max_new_tokens
    itemsize = torch.tensor([], dtype=model.dtype).element_size()
    return 2 * text.num_hidden_layers * kv_heads * head_dim * tokens * itemsize


def auto_batch_size(model, processor, cfg: CaptionConfig, free_bytes: int | None = None) -> int:
    """``--batch-size 0``: 8 on CPU; on a GPU as many images (1..128, rounded down to a multiple of 8
    from 8 up) as 60 % of its free memory holds at 1.25x the KV-cache estimate.

    The margin is wide on purpose. On an H200 (LLaVA-1.5-13B shape, 256 new tokens) a batch sized
    from 90 % of free memory (120 images) ran out of memory twice: the KV cache was as estimated, but
    prefill activations and allocator fragmentation held another ~40 GiB. The OOM fallback of
    :class:`CaptionActor` (halve and retry) is the safety net; a fixed ``--batch-size`` is the way to
    byte-identical captions across GPU types (batch composition can change bf16 results).
    """
    import torch

    if free_bytes is None:
        if model.device.type != "cuda":
            return CPU_BATCH
        free_bytes = torch.cuda.mem_get_info(model.device)[0]
    fits = int(AUTO_MEMORY_FRACTION * free_bytes // (1.25 * kv_cache_bytes_per_image(model, processor, cfg)))
    fits = min(MAX_AUTO_BATCH, max(1, fits))
    return fits // 8 * 8 if fits >= 8 else fits


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


# -- the Ray wrapper --------------------------------------------------------------------------------
def decode_for_captioning(batch: dict, min_side: int | None) -> dict:
    """CPU step ahead of the actors: decode each image at the processor's resolution."""
    images, errors = [], []
    for path in batch["path"]:
        try:
            images.append(np.asarray(load_rgb(str(path), min_side), dtype=np.uint8))
            errors.append("")
        except InputImageError as exc:
            images.append(np.zeros((0, 0, 3), dtype=np.uint8))  # keeps the column one tensor type
            errors.append(str(exc))
    return {"image_id": batch["image_id"], "path": batch["path"], "image": images, "error": errors}


class CaptionActor:
    """One captioning model per actor; writes one `captions` part per actor call."""

    def __init__(self, config: dict, root: str, run_id: str, torch_threads: int, batch_size: int):
        import torch

        torch.set_num_threads(torch_threads)
        self.cfg = CaptionConfig(**config)
        self.root, self.run_id, self.batch_size = root, run_id, batch_size
        self.model_id = model_key(self.cfg.model)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.processor = load_captioner(self.cfg, device)
        if not self.batch_size:  # --batch-size 0: from this actor's free GPU memory
            self.batch_size = auto_batch_size(self.model, self.processor, self.cfg)

    def _caption(self, images: list) -> list[Generation]:
        """caption_images, halving the batch (for this and later calls) when the GPU runs out of memory."""
        try:
            return caption_images(self.model, self.processor, images, self.cfg)
        except (RuntimeError, MemoryError) as exc:
            if len(images) == 1 or not _is_out_of_memory(exc):
                raise
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = (len(images) + 1) // 2
        self.batch_size = max(1, min(self.batch_size, half))
        return self._caption(images[:half]) + self._caption(images[half:])

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        ids = [str(i) for i in batch["image_id"]]
        ok = [i for i, err in enumerate(batch["error"]) if not err]
        generations = {}
        start = 0
        while start < len(ok):  # chunk by the current batch size: an OOM shrinks it for what follows
            idx = ok[start : start + self.batch_size]
            images = [Image.fromarray(batch["image"][i]) for i in idx]
            generations.update(zip(idx, self._caption(images)))
            start += len(idx)
        now, rows = utc_now(), []
        for i, image_id in enumerate(ids):
            g = generations.get(i, Generation(caption="", n_tokens=0, flag="unreadable"))
            rows.append(
                {
                    "image_id": image_id,
                    "caption": g.caption,
                    "model": self.model_id,
                    "prompt": self.cfg.prompt,
                    "n_tokens": g.n_tokens,
                    "flag": g.flag,
                    "run_id": self.run_id,
                    "created_at": now,
                }
            )
        # Named by run and batch: a task Ray retries replaces its part; another run never collides.
        write_part(self.root, "captions", rows, name=part_name(f"cap-{self.run_id}", ids))
        return {"image_id": ids, "flag": [r["flag"] or "" for r in rows]}


# -- the driver -------------------------------------------------------------------------------------
PENDING_SQL = """
SELECT i.image_id, min(i.path) AS path FROM images i
WHERE i.status = 'accepted' AND i.image_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM captions c WHERE c.image_id = i.image_id AND c.model = ?
                  AND c.prompt = ? {retry_clause})
  {uncaptioned_clause}
GROUP BY i.image_id ORDER BY i.image_id"""


def pending_images(
    catalog: Catalog,
    model: str,
    prompt: str,
    limit: int | None = None,
    retry_flagged=False,
    only_uncaptioned=False,
) -> pa.Table:
    """Accepted images with no caption row for (model, prompt): the anti-join that makes runs resumable."""
    sql = PENDING_SQL.format(
        retry_clause="AND c.flag IS NULL" if retry_flagged else "",
        uncaptioned_clause=(
            "AND NOT EXISTS (SELECT 1 FROM latest_captions l WHERE l.image_id = i.image_id)"
            if only_uncaptioned
            else ""
        ),
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return catalog.query(sql, [model, prompt])


def run_caption(
    settings,
    cfg: CaptionConfig,
    opts: PoolOptions,
    limit=None,
    retry_flagged=False,
    only_uncaptioned=False,
    echo=click.echo,
) -> dict:
    """Caption pending images; returns counts {'pending', 'captioned', 'flagged': {flag: n}}."""
    from pipelines.engine.runtime import init_ray, progress

    if "{prompt}" not in cfg.template:
        raise ConfigError(f"--template must contain '{{prompt}}', got {cfg.template!r}")
    catalog = Catalog(settings.root)
    catalog.refresh()  # parts written by a killed run become visible, so they are not redone
    work = pending_images(catalog, model_key(cfg.model), cfg.prompt, limit, retry_flagged, only_uncaptioned)
    counts = {"pending": len(work), "captioned": 0, "flagged": {}}
    if not len(work):
        echo(
            f"nothing to caption: every accepted image has a caption for model {cfg.model!r} and this prompt"
        )
        return counts
    from transformers import AutoProcessor

    try:  # fails fast, before any Ray actor, when the model is not there
        processor = AutoProcessor.from_pretrained(cfg.model)
    except OSError as exc:
        raise MissingWeightsError(
            f"cannot load the processor of {cfg.model!r}: {exc}. Give --model a local folder "
            "(save_pretrained layout) or a hub id whose files are in the Hugging Face cache."
        ) from exc
    image_token = getattr(processor, "image_token", None)
    if image_token and image_token not in cfg.template:
        raise ConfigError(
            f"--template must contain this model's image token {image_token!r}: {cfg.template!r}"
        )
    min_side = processor_min_side(processor)
    init_ray(settings)
    pool = plan_actor_pool(opts, auto_batch=True)
    run_id = new_run_id("caption")
    catalog.record_run(run_id, "caption", {**asdict(cfg), "pool": asdict(pool)})
    echo(f"captioning {len(work)} images with {pool.actors} actor(s), run {run_id}")
    with progress("caption", flagged=0) as bar:
        task = bar.add_task("caption", total=len(work), flagged=0)
        for summary in run_actor_stage(
            work,
            CaptionActor,
            {"config": asdict(cfg), "root": str(catalog.root), "run_id": run_id},
            pool,
            prepare=decode_for_captioning,
            prepare_kwargs={"min_side": min_side},
        ):
            for flag in summary["flag"]:
                if flag:
                    counts["flagged"][str(flag)] = counts["flagged"].get(str(flag), 0) + 1
                else:
                    counts["captioned"] += 1
            bar.update(task, advance=len(summary["flag"]), flagged=sum(counts["flagged"].values()))
    catalog.refresh()
    echo(f"captioned {counts['captioned']}, flagged {counts['flagged'] or 0}")
    return counts


@click.command("caption")
@click.option(
    "--model", default=DEFAULT_MODEL, show_default=True, help="Hub id or local folder (image-text-to-text)."
)
@click.option(
    "--prompt", default=CAPTION_PROMPT, show_default=True, help="The instruction given with each image."
)
@click.option(
    "--template", default=LLAVA_TEMPLATE, show_default=True, help="Conversation format; {prompt} is replaced."
)
@click.option("--max-new-tokens", type=int, default=256, show_default=True)
@click.option(
    "--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True
)
@click.option(
    "--load-in", type=click.Choice(["8bit", "4bit"]), default=None, help="Quantise with bitsandbytes (GPU)."
)
@click.option("--limit", type=int, default=None, help="Caption at most N pending images.")
@pool_options(
    batch_size=8,
    part_rows=256,
    batch_help="Images per generate() call; 0 = automatic: 8 on CPU, on a GPU sized from its free memory "
    "(at most 128). A GPU out-of-memory error halves the batch.",
)
@click.option(
    "--retry-flagged", is_flag=True, help="Also redo images whose caption was flagged (empty/repetitive)."
)
@click.option(
    "--only-uncaptioned", is_flag=True, help="Skip images with a good caption from any model or import."
)
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Import captions (.parquet/.jsonl with caption + image_id or path) instead of running a model.",
)
@click.pass_obj
def caption_command(
    settings,
    model,
    prompt,
    template,
    max_new_tokens,
    dtype,
    load_in,
    limit,
    batch_size,
    part_rows,
    actors,
    gpus_per_actor,
    retry_flagged,
    only_uncaptioned,
    from_file,
):
    """Caption accepted images with LLaVA-1.5 (or import captions). Resumable: re-run to finish."""
    if from_file:
        from pipelines.caption.importer import import_captions

        import_captions(settings, from_file)
        return
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    cfg = CaptionConfig(
        model=model,
        prompt=prompt,
        template=template,
        max_new_tokens=max_new_tokens,
        dtype=dtype,
        load_in=load_in,
    )
    opts = PoolOptions(
        batch_size=batch_size, part_rows=part_rows, actors=actors, gpus_per_actor=gpus_per_actor
    )
    run_caption(settings, cfg, opts, limit, retry_flagged, only_uncaptioned)
