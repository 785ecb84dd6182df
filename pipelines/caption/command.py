"""`supir-data caption`: LLaVA-1.5 captions for accepted images (paper §3.2), on the engine's actor pool.

The model functions live in pipelines/caption/model.py, the stage (pending work, rows) in
pipelines/caption/stage.py. Work = accepted images without a caption row for this (model, prompt),
so runs resume and never duplicate; ``--retry-flagged`` also redoes flagged captions.
"""

from dataclasses import asdict

import click

from catalogs.catalog import Catalog
from catalogs.compaction import compact_after_run
from pipelines.caption.model import (  # noqa: F401 - the caption API, re-exported
    DEFAULT_MODEL,
    LLAVA_TEMPLATE,
    MAX_AUTO_BATCH,
    CaptionConfig,
    Generation,
    auto_batch_size,
    caption_images,
    degenerate_flag,
    kv_cache_bytes_per_image,
    load_captioner,
    model_key,
    processor_min_side,
    repeated_tail,
)
from pipelines.caption.stage import CaptionStage, pending_images
from pipelines.engine.actors import PoolOptions, plan_actor_pool, pool_options
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.models import DTYPES, weights_error
from pipelines.engine.options import limit_options, make_limits
from pipelines.engine.stage import Limits
from schemas.errors import ConfigError
from schemas.runs import new_run_id

MODEL_LIMITS = Limits(item_seconds=120.0)  # a 13B model on a busy GPU; CPU runs of real models need more


def run_caption(
    settings,
    cfg: CaptionConfig,
    opts: PoolOptions,
    limit=None,
    retry_flagged=False,
    only_uncaptioned=False,
    echo=click.echo,
    limits: Limits = MODEL_LIMITS,
) -> dict:
    """Caption pending images; returns counts {'pending', 'captioned', 'flagged': {flag: n}}."""
    from pipelines.engine.runtime import init_ray

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
        raise weights_error("the processor of", cfg.model, exc) from exc
    image_token = getattr(processor, "image_token", None)
    if image_token and image_token not in cfg.template:
        raise ConfigError(
            f"--template must contain this model's image token {image_token!r}: {cfg.template!r}"
        )
    init_ray(settings)
    pool = plan_actor_pool(opts, auto_batch=True)
    run_id = new_run_id("caption")
    catalog.record_run(run_id, "caption", {**asdict(cfg), "pool": asdict(pool)})
    echo(f"captioning {len(work)} images with {pool.actors} actor(s), run {run_id}")
    stage = CaptionStage(cfg, run_id, processor_min_side(processor), pool.torch_threads, pool.batch_size)
    stats = run_stage(stage, work.to_pylist(), str(catalog.root), run_id,
                      Plan(part_items=pool.part_rows, limits=limits, pool=pool))
    catalog.refresh()
    compact_after_run(catalog, "captions")  # a no-op until the table has many small parts
    counts["captioned"] = stats.outcomes.pop("captioned", 0)
    counts["flagged"] = stats.outcomes
    echo(f"captioned {counts['captioned']}, flagged {counts['flagged'] or 0}")
    return counts


@click.command("caption")
@click.option("--model", default=CaptionConfig.model, show_default=True, help="Hub id or local folder (image-text-to-text).")
@click.option("--prompt", default=CaptionConfig.prompt, show_default=True, help="The instruction given with each image.")
@click.option("--template", default=CaptionConfig.template, show_default=True, help="Conversation format; {prompt} is replaced.")
@click.option("--max-new-tokens", type=int, default=CaptionConfig.max_new_tokens, show_default=True)
@click.option("--dtype", type=click.Choice(DTYPES), default=CaptionConfig.dtype, show_default=True,
              help="auto: bf16 on a GPU with bf16 (else fp16), fp32 on CPU.")
@click.option("--load-in", type=click.Choice(["8bit", "4bit"]), default=CaptionConfig.load_in,
              help="Quantise with bitsandbytes (GPU).")
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
@limit_options(MODEL_LIMITS)
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
    item_seconds,
    worker_memory,
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
    limits = make_limits(item_seconds, worker_memory)
    run_caption(settings, cfg, opts, limit, retry_flagged, only_uncaptioned, limits=limits)
