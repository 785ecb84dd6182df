"""SDXL img2img (SDEdit, strength 0.5) with the negative-quality prompt, as plain functions (paper §3.2).

Testable without Ray; the negatives stage (pipelines/negatives/stage.py) runs them on the engine.
"""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from catalogs.store import Store
from pipelines.engine.models import torch_dtype, weights_error
from schemas.tables import NEGATIVES_DIR
from supir.prompts import NEGATIVE_PROMPTS

DEFAULT_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"


@dataclass(frozen=True)
class NegativeConfig:
    model: str = DEFAULT_MODEL
    prompt: str = NEGATIVE_PROMPTS["paper"]
    strength: float = 0.5  # SDEdit: noise to t = 0.5 T, then denoise (25 of 50 steps run)
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    resolution: int = 1024  # short side of the SDEdit input (SDXL's native scale)
    dtype: str = "auto"  # see pipelines.engine.models.torch_dtype


def load_sdedit_pipeline(cfg: NegativeConfig, device: str = "cpu"):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    try:
        pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(cfg.model, dtype=torch_dtype(cfg.dtype, device))
    except (OSError, ValueError) as exc:
        raise weights_error("SDXL model", cfg.model, exc, layout="diffusers") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def size_multiple(pipe) -> int:
    """Pixel sizes must survive the VAE and every UNet downsampling (SDXL: 8 x 4 = 32)."""
    return pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.down_block_types) - 1)


def sdedit_size(width: int, height: int, resolution: int, multiple: int) -> tuple[int, int]:
    """Output size: short side ``resolution``, long side at most 2x, both multiples of ``multiple``."""
    scale = resolution / min(width, height)
    w, h = round(width * scale), round(height * scale)
    w, h = min(w, 2 * resolution), min(h, 2 * resolution)
    return max(multiple, w // multiple * multiple), max(multiple, h // multiple * multiple)


def fit_source(img, resolution: int, multiple: int):
    """Resize (short side = resolution) and centre-crop to :func:`sdedit_size`."""
    from PIL import Image

    w, h = sdedit_size(img.width, img.height, resolution, multiple)
    scale = max(w / img.width, h / img.height)
    rw, rh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((rw, rh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (rw - w) // 2, (rh - h) // 2
    return img.crop((left, top, left + w, top + h))


def sdedit(pipe, images: list, seeds: list[int], cfg: NegativeConfig) -> list:
    """SDXL img2img with the negative-quality prompt; one generator per sample, batched per size."""
    import torch

    if len(images) != len(seeds):
        raise ValueError("one seed per image")
    out: list = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        by_size.setdefault(img.size, []).append(i)
    for idx in by_size.values():
        # The noise of sample i depends on its own seed only, not on its batch neighbours.
        generators = [torch.Generator(device="cpu").manual_seed(int(seeds[i])) for i in idx]
        result = pipe(
            prompt=[cfg.prompt] * len(idx),
            image=[images[i] for i in idx],
            strength=cfg.strength,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            generator=generators,
            output_type="pil",
        ).images
        for i, img in zip(idx, result):
            out[i] = img
    return out


def png_bytes(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)  # no timestamps: same pixels -> same bytes
    return buf.getvalue()


def save_negative(root: str | Path, data: bytes) -> tuple[str, str]:
    """Write ``<root>/negatives/<id[:2]>/<id>.png`` atomically (a folder or an object store);
    returns (negative_id, its path or URL). The name is the content hash: a retry rewrites nothing."""
    negative_id = hashlib.sha256(data).hexdigest()
    store = Store(root)
    rel = f"{NEGATIVES_DIR}/{negative_id[:2]}/{negative_id}.png"
    if not store.exists(rel):
        store.write_atomic(rel, lambda fh: fh.write(data))
    return negative_id, store.url_of(rel)
