"""LLaVA-1.5 captioning (paper §3.2) as plain functions: load, size batches, caption, flag loops.

Testable without Ray; the caption stage (pipelines/caption/stage.py) runs them on the engine.
"""

from dataclasses import dataclass
from pathlib import Path

from pipelines.engine.models import torch_dtype, weights_error
from schemas.errors import ConfigError
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


def load_captioner(cfg: CaptionConfig, device: str = "cpu"):
    """(model, processor) through the same `from_pretrained` path for hub ids and local folders."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

    dtype = torch_dtype(cfg.dtype, device)
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
        raise weights_error("captioning model", cfg.model, exc) from exc
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
    the engine (halve and retry) is the safety net; a fixed ``--batch-size`` is the way to
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
