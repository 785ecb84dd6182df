"""`supir-data negatives`: negative-quality samples by SDXL img2img (SDEdit) at strength 0.5 (paper §3.2).

The paper makes 100K such samples from its own images with the negative-quality prompt; their
training caption is that prompt, which teaches classifier-free guidance what to steer away from.

Planning is deterministic: accepted images are ordered by a seeded hash within each source and
interleaved by quantile, so any prefix of the plan is a stratified (proportional-by-source) sample;
slot ``i`` is image ``i mod M`` at repetition ``i div M`` with seed ``derive_seed(seed, "id:rep")``.
``--count`` is a target for the whole table: a re-run fills the first missing slots, so a crashed
run tops up and a finished one does nothing. Outputs are PNG (lossless) named by content hash.
"""

import hashlib
import io
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import pyarrow as pa

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from pipelines.engine.actors import (
    PoolOptions,
    chunks,
    load_rgb,
    part_name,
    plan_actor_pool,
    pool_options,
    run_actor_stage,
)
from schemas.errors import ConfigError, InputImageError, MissingWeightsError
from schemas.runs import derive_seed, new_run_id, utc_now
from supir.prompts import NEGATIVE_PROMPTS

DEFAULT_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
NEGATIVES_DIR = "negatives"
CPU_THREADS = 1
SLOTS = pa.schema(
    [("image_id", pa.string()), ("path", pa.string()), ("source", pa.string()), ("seed", pa.int64())]
)


@dataclass(frozen=True)
class NegativeConfig:
    model: str = DEFAULT_MODEL
    prompt: str = NEGATIVE_PROMPTS["paper"]
    strength: float = 0.5  # SDEdit: noise to t = 0.5 T, then denoise (25 of 50 steps run)
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    resolution: int = 1024  # short side of the SDEdit input (SDXL's native scale)
    dtype: str = "auto"  # auto = fp16 on GPU (the VAE upcasts itself), fp32 on CPU


# -- the per-batch function (no Ray) ----------------------------------------------------------------
def load_sdedit_pipeline(cfg: NegativeConfig, device: str = "cpu"):
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    dtype = dtypes.get(cfg.dtype) or (torch.float32 if device == "cpu" else torch.float16)
    try:
        pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(cfg.model, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(
            f"cannot load SDXL model {cfg.model!r}: {exc}. Give --model a local diffusers folder "
            "or a hub id whose files are in the Hugging Face cache."
        ) from exc
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


def save_negative(root: str | Path, data: bytes) -> tuple[str, Path]:
    """Write ``<root>/negatives/<id[:2]>/<id>.png`` atomically; returns (negative_id, path)."""
    negative_id = hashlib.sha256(data).hexdigest()
    path = Path(root) / NEGATIVES_DIR / negative_id[:2] / f"{negative_id}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{uuid.uuid4().hex}.png")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return negative_id, path


# -- the Ray wrapper --------------------------------------------------------------------------------
def decode_for_sdedit(batch: dict, min_side: int) -> dict:
    """CPU step ahead of the actors: decode each source at about the SDEdit resolution."""
    images, errors = [], []
    for path in batch["path"]:
        try:
            images.append(np.asarray(load_rgb(str(path), min_side), dtype=np.uint8))
            errors.append("")
        except InputImageError as exc:
            images.append(np.zeros((0, 0, 3), dtype=np.uint8))
            errors.append(str(exc))
    return {**batch, "image": images, "error": errors}


class NegativeActor:
    """One SDXL img2img pipeline per actor; writes PNGs and one `negatives` part per actor call."""

    def __init__(
        self, config: dict, root: str, run_id: str, model_id: str, torch_threads: int, batch_size: int
    ):
        import torch

        torch.set_num_threads(torch_threads)
        torch.backends.cudnn.benchmark = False  # autotuned kernels may differ run to run
        torch.backends.cudnn.deterministic = True
        self.cfg = NegativeConfig(**config)
        self.root, self.run_id, self.model_id, self.batch_size = root, run_id, model_id, batch_size
        self.pipe = load_sdedit_pipeline(self.cfg, "cuda" if torch.cuda.is_available() else "cpu")
        self.multiple = size_multiple(self.pipe)

    def __call__(self, batch: dict) -> dict:
        from PIL import Image

        ok = [i for i, err in enumerate(batch["error"]) if not err]
        outputs = []
        for rows in chunks(len(ok), self.batch_size):
            idx = [ok[j] for j in rows]
            sources = [
                fit_source(Image.fromarray(batch["image"][i]), self.cfg.resolution, self.multiple)
                for i in idx
            ]
            outputs += sdedit(self.pipe, sources, [int(batch["seed"][i]) for i in idx], self.cfg)
        rows, now = [], utc_now()
        for i, img in zip(ok, outputs):
            negative_id, path = save_negative(self.root, png_bytes(img))
            rows.append(
                {
                    "negative_id": negative_id,
                    "image_id": str(batch["image_id"][i]),
                    "path": str(path),
                    "prompt": self.cfg.prompt,
                    "strength": self.cfg.strength,
                    "steps": self.cfg.steps,
                    "guidance": self.cfg.guidance,
                    "seed": int(batch["seed"][i]),
                    "model": self.model_id,
                    "width": img.width,
                    "height": img.height,
                    "run_id": self.run_id,
                    "created_at": now,
                }
            )
        if rows:
            keys = [f"{r['image_id']}:{r['seed']}" for r in rows]
            write_part(self.root, "negatives", rows, name=part_name(f"neg-{self.run_id}", keys))
        return {"image_id": [str(x) for x in batch["image_id"]], "error": [str(e) for e in batch["error"]]}


# -- the driver -------------------------------------------------------------------------------------
PLAN_SQL = """
WITH accepted AS (
    SELECT image_id, min(path) AS path, min(source) AS source FROM images
    WHERE status = 'accepted' AND image_id IS NOT NULL GROUP BY image_id),
ranked AS (
    SELECT *, md5(CAST(? AS VARCHAR) || ':' || image_id) AS h FROM accepted),
quantiled AS (
    SELECT *, (row_number() OVER (PARTITION BY source ORDER BY h) - 0.5)
              / count(*) OVER (PARTITION BY source) AS q FROM ranked)
SELECT image_id, path, source FROM quantiled ORDER BY q, h LIMIT ?"""


def plan_slots(catalog: Catalog, seed: int, count: int) -> pa.Table:
    """The first missing slots (image_id, path, source, seed) needed to bring the table to ``count``."""
    existing = catalog.query("SELECT image_id, seed FROM negatives")
    have = set(zip(existing.column("image_id").to_pylist(), existing.column("seed").to_pylist()))
    need = count - len(existing)
    if need <= 0:
        return SLOTS.empty_table()
    plan = catalog.query(PLAN_SQL, [str(seed), count + len(existing)]).to_pylist()
    if not plan:
        raise InputImageError("no accepted images to make negatives from: run `supir-data ingest` first")
    slots, i = [], 0
    while len(slots) < need:  # ends: at most len(have) slots are skipped
        src = plan[i % len(plan)]
        slot_seed = derive_seed(seed, f"{src['image_id']}:{i // len(plan)}")
        if (src["image_id"], slot_seed) not in have:
            slots.append({**src, "seed": slot_seed})
        i += 1
    return pa.Table.from_pylist(slots, schema=SLOTS)


def check_model(model: str) -> None:
    """Fail fast, before any Ray actor, when the pipeline's `model_index.json` cannot be found."""
    from diffusers import DiffusionPipeline

    try:
        DiffusionPipeline.load_config(model)
    except (OSError, ValueError) as exc:
        raise MissingWeightsError(
            f"cannot load SDXL model {model!r}: {exc}. Give --model a local diffusers folder "
            "or a hub id whose files are in the Hugging Face cache."
        ) from exc


def resolve_prompt(prompt: str) -> str:
    """A preset name (paper | released) or the prompt text itself."""
    return NEGATIVE_PROMPTS.get(prompt, prompt)


def run_negatives(settings, cfg: NegativeConfig, count: int, opts: PoolOptions, echo=click.echo) -> dict:
    from pipelines.caption.command import model_key
    from pipelines.engine.runtime import init_ray, progress

    if not 0 < cfg.strength <= 1:
        raise ConfigError(f"--strength must be in (0, 1], got {cfg.strength}")
    if cfg.steps < 1 or int(cfg.steps * cfg.strength) < 1:
        raise ConfigError(f"--steps {cfg.steps} x --strength {cfg.strength} runs no denoising step")
    catalog = Catalog(settings.root)
    catalog.refresh()  # parts written by a killed run count towards --count
    slots = plan_slots(catalog, cfg.seed, count)
    counts = {"planned": len(slots), "made": 0, "unreadable": 0}
    if not len(slots):
        echo(f"nothing to do: the negatives table already holds >= {count} samples")
        return counts
    check_model(cfg.model)
    init_ray(settings)
    # One thread per CPU actor: CPU float results depend on the thread count, and a negative's bytes
    # must depend on its seed only, not on the machine's core count.
    pool = plan_actor_pool(opts, cpu_threads=CPU_THREADS)
    run_id = new_run_id("negatives")
    catalog.record_run(run_id, "negatives", {**asdict(cfg), "count": count, "pool": asdict(pool)})
    echo(f"making {len(slots)} negatives with {pool.actors} actor(s), run {run_id}")
    actor_kwargs = {
        "config": asdict(cfg),
        "root": str(catalog.root),
        "run_id": run_id,
        "model_id": model_key(cfg.model),
    }
    with progress("negatives") as bar:
        task = bar.add_task("negatives", total=len(slots))
        for summary in run_actor_stage(
            slots.drop(["source"]),
            NegativeActor,
            actor_kwargs,
            pool,
            prepare=decode_for_sdedit,
            prepare_kwargs={"min_side": cfg.resolution},
        ):
            errors = [e for e in summary["error"] if e]
            counts["unreadable"] += len(errors)
            counts["made"] += len(summary["error"]) - len(errors)
            for e in errors:
                echo(f"skipped: {e}")
            bar.update(task, advance=len(summary["error"]))
    catalog.refresh()
    echo(f"made {counts['made']} negatives; {counts['unreadable']} unreadable sources skipped")
    return counts


@click.command("negatives")
@click.option(
    "--model", default=DEFAULT_MODEL, show_default=True, help="SDXL hub id or local diffusers folder."
)
@click.option("--count", type=int, default=100_000, show_default=True, help="Target size of the whole table.")
@click.option(
    "--strength", type=float, default=0.5, show_default=True, help="SDEdit strength (fraction of steps run)."
)
@click.option("--steps", type=int, default=50, show_default=True)
@click.option("--guidance", type=float, default=7.5, show_default=True)
@click.option(
    "--prompt",
    default="paper",
    show_default=True,
    help=f"Preset ({' | '.join(NEGATIVE_PROMPTS)}) or the prompt text itself.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Global seed: plan and per-sample seeds."
)
@click.option(
    "--resolution", type=int, default=1024, show_default=True, help="Short side of the SDEdit input."
)
@click.option(
    "--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True
)
@pool_options(batch_size=1, part_rows=16)
@click.pass_obj
def negatives_command(
    settings,
    model,
    count,
    strength,
    steps,
    guidance,
    prompt,
    seed,
    resolution,
    dtype,
    batch_size,
    part_rows,
    actors,
    gpus_per_actor,
):
    """Make negative-quality samples (SDXL img2img) until the table holds --count. Resumable."""
    if count < 0 or resolution < 8:
        raise ConfigError("--count must be >= 0 and --resolution >= 8")
    cfg = NegativeConfig(
        model=model,
        prompt=resolve_prompt(prompt),
        strength=strength,
        steps=steps,
        guidance=guidance,
        seed=seed,
        resolution=resolution,
        dtype=dtype,
    )
    opts = PoolOptions(
        batch_size=batch_size, part_rows=part_rows, actors=actors, gpus_per_actor=gpus_per_actor
    )
    run_negatives(settings, cfg, count, opts)
