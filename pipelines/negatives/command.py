"""`supir-data negatives`: negative-quality samples by SDXL img2img (SDEdit) at strength 0.5 (paper §3.2).

The paper makes 100K such samples from its own images with the negative-quality prompt; their
training caption is that prompt, which teaches classifier-free guidance what to steer away from.

Planning is deterministic: accepted images are ordered by a seeded hash within each source and
interleaved by quantile, so any prefix of the plan is a stratified (proportional-by-source) sample;
slot ``i`` is image ``i mod M`` at repetition ``i div M`` with seed ``derive_seed(seed, "id:rep")``.
``--count`` is a target for the whole table: a re-run fills the first missing slots, so a crashed
run tops up and a finished one does nothing. Outputs are PNG (lossless) named by content hash.
The SDEdit functions live in pipelines/negatives/sdedit.py, the stage in pipelines/negatives/stage.py.
"""

from dataclasses import asdict

import click

from catalogs.catalog import Catalog
from catalogs.compaction import compact_after_run
from pipelines.engine.actors import PoolOptions, plan_actor_pool, pool_options
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.models import DTYPES, weights_error
from pipelines.engine.options import limit_options, make_limits
from pipelines.engine.stage import Limits
from pipelines.negatives.sdedit import (  # noqa: F401 - the negatives API, re-exported
    DEFAULT_MODEL,
    NegativeConfig,
    fit_source,
    load_sdedit_pipeline,
    png_bytes,
    save_negative,
    sdedit,
    sdedit_size,
    size_multiple,
)
from pipelines.negatives.stage import NegativeStage, plan_slots
from schemas.errors import ConfigError
from schemas.runs import new_run_id
from supir.prompts import NEGATIVE_PROMPTS

CPU_THREADS = 1
DEFAULT_COUNT = 100_000  # the paper's 100K negative-quality samples
MODEL_LIMITS = Limits(item_seconds=120.0)  # SDXL at 1024 px on a GPU takes seconds per image


def check_model(model: str) -> None:
    """Fail fast, before any Ray actor, when the pipeline's `model_index.json` cannot be found."""
    from diffusers import DiffusionPipeline

    try:
        DiffusionPipeline.load_config(model)
    except (OSError, ValueError) as exc:
        raise weights_error("SDXL model", model, exc, layout="diffusers") from exc


def resolve_prompt(prompt: str) -> str:
    """A preset name (paper | released) or the prompt text itself."""
    return NEGATIVE_PROMPTS.get(prompt, prompt)

def run_negatives(settings, cfg: NegativeConfig, count: int, opts: PoolOptions, echo=click.echo,
                  limits: Limits = MODEL_LIMITS) -> dict:
    from pipelines.caption.model import model_key
    from pipelines.engine.runtime import init_ray

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
    stage = NegativeStage(cfg, str(catalog.root), run_id, model_key(cfg.model), pool.torch_threads, pool.batch_size)
    stats = run_stage(stage, slots.drop(["source"]).to_pylist(), str(catalog.root), run_id,
                      Plan(part_items=pool.part_rows, limits=limits, pool=pool))
    catalog.refresh()
    compact_after_run(catalog, "negatives")  # a no-op until the table has many small parts
    counts["made"] = stats.outcomes.pop("made", 0)
    counts["unreadable"] = sum(stats.outcomes.values())
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(stats.outcomes.items()))
    echo(f"made {counts['made']} negatives; {counts['unreadable']} unusable sources skipped"
         + (f" ({skipped}; see the `failures` table)" if skipped else ""))
    return counts


@click.command("negatives")
@click.option("--model", default=NegativeConfig.model, show_default=True, help="SDXL hub id or local diffusers folder.")
@click.option("--count", type=int, default=DEFAULT_COUNT, show_default=True, help="Target size of the whole table.")
@click.option("--strength", type=float, default=NegativeConfig.strength, show_default=True,
              help="SDEdit strength (fraction of steps run).")
@click.option("--steps", type=int, default=NegativeConfig.steps, show_default=True)
@click.option("--guidance", type=float, default=NegativeConfig.guidance, show_default=True)
@click.option("--prompt", default="paper", show_default=True,
              help=f"Preset ({' | '.join(NEGATIVE_PROMPTS)}) or the prompt text itself.")
@click.option("--seed", type=int, default=NegativeConfig.seed, show_default=True,
              help="Global seed: plan and per-sample seeds.")
@click.option("--resolution", type=int, default=NegativeConfig.resolution, show_default=True,
              help="Short side of the SDEdit input.")
@click.option("--dtype", type=click.Choice(DTYPES), default=NegativeConfig.dtype, show_default=True,
              help="auto: bf16 on a GPU with bf16 (else fp16), fp32 on CPU.")
@pool_options(batch_size=1, part_rows=16)
@limit_options(MODEL_LIMITS)
@click.pass_obj
def negatives_command(settings, model, count, strength, steps, guidance, prompt, seed, resolution, dtype,
                      batch_size, part_rows, actors, gpus_per_actor, item_seconds, worker_memory):
    """Make negative-quality samples (SDXL img2img) until the table holds --count. Resumable."""
    if count < 0 or resolution < 8:
        raise ConfigError("--count must be >= 0 and --resolution >= 8")
    cfg = NegativeConfig(model=model, prompt=resolve_prompt(prompt), strength=strength, steps=steps,
                         guidance=guidance, seed=seed, resolution=resolution, dtype=dtype)
    opts = PoolOptions(batch_size=batch_size, part_rows=part_rows, actors=actors, gpus_per_actor=gpus_per_actor)
    run_negatives(settings, cfg, count, opts, limits=make_limits(item_seconds, worker_memory))
