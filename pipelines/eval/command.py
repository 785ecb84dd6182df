"""`supir-data eval`: the paper's Table 1 on your checkpoints, reproducible, with a side-by-side gallery.

    supir-data eval --gt photos/ --checkpoint runs/a/step-N --checkpoint runs/v0q --baseline bicubic \\
        --out eval/   [--settings paper|release] [--degradations sr4,...] [--metrics psnr,...]

Synthetic mode (``--gt``): each photo is brought to the paper's protocol (short side → 1024, centre
crop 1024², `supir.eval_protocol`), degraded by each Table 1 preset (deterministic per seed and
image) and restored by every method; full- and no-reference metrics (`supir.eval_metrics`). Real mode
(``--lq``): the photo's crop is the LQ, results are resized back to the crop's original size and only
the no-reference metrics apply. Each method is one stage run on the engine's actor pool; rows are
parts under ``--out``, so a killed eval resumes where it stopped (the same command again).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from pipelines.engine.actors import PoolOptions, plan_actor_pool, pool_options
from pipelines.engine.executor import Plan, run_stage
from pipelines.engine.models import DTYPES
from pipelines.engine.options import limit_options, make_limits
from pipelines.engine.stage import Limits
from pipelines.eval.gallery import write_gallery
from pipelines.eval.inputs import list_images
from pipelines.eval.stage import EvalJob, EvalStage
from pipelines.eval.tables import done_keys, write_results, write_summary
from schemas.errors import ConfigError
from schemas.runs import new_run_id
from supir.eval_metrics import FULL_REFERENCE, LABELS, Conventions, parse_metrics
from supir.eval_protocol import DEGRADATIONS, REAL, TEST_SIZE, parse_degradations
from supir.eval_restore import BICUBIC, Method, checkpoint_methods
from supir.restore_settings import SETTINGS

MODEL_LIMITS = Limits(item_seconds=900.0)  # T = 100 steps at 1024² with CFG: minutes per image on a slow GPU
CONFIG_FILE = "eval.json"


def check_config(out: Path, config: dict) -> None:
    """A resumed --out must hold results of the same protocol and methods, else the tables mix runs."""
    path = out / CONFIG_FILE
    if path.exists():
        old = json.loads(path.read_text())
        same = ("size", "seed", "conventions", "settings", "steps", "dtype", "caption_model", "caption_max_tokens",
                "caption_size")
        changed = [k for k in same if old.get(k) != config.get(k)]
        changed += [f"method {m}" for m, ckpt in config["methods"].items() if old["methods"].get(m, ckpt) != ckpt]
        if changed:
            raise ConfigError(f"{out} holds an eval with other {', '.join(changed)}: choose another --out")
        config = {**config, "methods": {**old["methods"], **config["methods"]}}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2, sort_keys=True))


def run_eval(settings, job: EvalJob, methods: list[Method], items: list[dict], opts: PoolOptions,
             limits: Limits = MODEL_LIMITS, echo=click.echo) -> dict:
    """Every method over every item not done yet, then the tables and the gallery; returns their paths."""
    from pipelines.engine.runtime import init_ray

    out = Path(job.out)
    init_ray(settings)
    pool = plan_actor_pool(opts, cpu_threads=1)
    done = done_keys(out)
    work = [{**i, "method": m.name} for m in methods for i in items if (m.name, i["degradation"], i["image"]) not in done]
    for method in methods:
        pending = sum(1 for w in work if w["method"] == method.name)
        echo(f"{method.name}: {pending} of {len(items)} image×degradation pairs to do"
             + ("" if pending else f" (all results already in {out})"))
    if work:
        run_id = new_run_id("eval")
        echo(f"run {run_id}: {len(work)} restorations on {pool.actors} actor(s)")
        stage = EvalStage(methods, job, run_id, pool.torch_threads)
        stats = run_stage(stage, work, str(out), run_id, Plan(part_items=pool.part_rows, limits=limits, pool=pool))
        failed = {k: v for k, v in stats.outcomes.items() if k not in ("scored", "missing")}
        if failed:
            echo(f"failed items {failed} (see {out}/lake/failures; run the same command again to retry)")
    names = [m.name for m in methods]
    rows = write_results(out, names)
    lines = write_summary(out, rows, list(job.metrics))
    gallery = write_gallery(out, rows, names, lines, job.conventions.describe())
    echo(_console_table(lines))
    echo(f"wrote {out / 'results.parquet'}, {out / 'summary.csv'}, {gallery}")
    return {"results": out / "results.parquet", "summary": out / "summary.csv", "gallery": gallery}


def _console_table(lines: list[dict]) -> str:
    """summary.csv for the terminal: a missing metric reads `missing`, its note is printed once below."""
    notes = dict.fromkeys(v for line in lines for v in line.values() if str(v).startswith("missing:"))
    columns = list(dict.fromkeys(k for line in lines for k in line))
    cells = [[("missing" if str(line.get(c, "")).startswith("missing:") else str(line.get(c, ""))) for c in columns]
             for line in lines]  # fmt: skip
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    text = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    text += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(text + list(notes))


@click.command("eval")
@click.option("--checkpoint", "checkpoints", multiple=True, help="A checkpoint folder (ours, or a release imported "
              "by `python -m supir.convert import`); repeat to compare several.")
@click.option("--settings", "preset", type=click.Choice(sorted(SETTINGS)), default="paper", show_default=True,
              help="Sampler preset of every checkpoint (supir/restore_settings.py).")
@click.option("--pretrained", default=None, help="SDXL folder (default: the one each checkpoint was trained on).")
@click.option("--gt", default=None, help="Folder (or list file) of high-quality photos, or WebDataset shards (a .tar or a folder of "
              "them: the positive samples' GT): synthetic Table 1 mode.")
@click.option("--lq", default=None, help="Folder of real low-quality photos: no-reference metrics only.")
@click.option("--degradations", default=",".join(DEGRADATIONS), show_default=True, help="Table 1 presets.")
@click.option("--metrics", default=",".join(LABELS), show_default=True)
@click.option("--baseline", "baselines", multiple=True, type=click.Choice([BICUBIC]), help="Baseline method(s).")
@click.option("--limit", type=int, default=None, help="Only the first N photos (sorted by path).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the degradations and the samplers.")
@click.option("--size", type=int, default=TEST_SIZE, show_default=True, help="Protocol crop side (the paper: 1024).")
@click.option("--steps", type=int, default=None, help="Override the preset's sampler steps (quick looks, tests).")
@click.option("--caption-model", default=None, help="Local LLaVA folder: each checkpoint's cleaned LQ is captioned "
              "and the caption joined to the positive prompt (the paper's test prompt). Default: positive prompt only.")
@click.option("--caption-max-tokens", type=int, default=512, show_default=True)
@click.option("--caption-size", type=int, default=512, show_default=True, help="Short side the cleaned LQ is captioned at.")
@click.option("--fr-channel", type=click.Choice(["y", "rgb"]), default="y", show_default=True,
              help="PSNR/SSIM on BT.601 luma or on RGB.")
@click.option("--crop-border", type=int, default=0, show_default=True, help="Pixels dropped per side for PSNR/SSIM.")
@click.option("--weights-dir", default=None, help="Folder holding the no-reference metrics' weight files.")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True)
@click.option("--out", required=True, help="Output folder (results.parquet, summary.csv, gallery.html, images).")
@pool_options(batch_size=1, part_rows=4)
@limit_options(MODEL_LIMITS)
@click.pass_obj
def eval_command(settings, checkpoints, preset, pretrained, gt, lq, degradations, metrics, baselines, limit, seed,
                 size, steps, caption_model, caption_max_tokens, caption_size, fr_channel, crop_border, weights_dir,
                 dtype, out, batch_size, part_rows, actors,
                 gpus_per_actor, item_seconds, worker_memory):
    """Table 1 of the SUPIR paper for checkpoints and baselines: tables + gallery. Resumable."""
    if (gt is None) == (lq is None):
        raise ConfigError("give exactly one of --gt (synthetic degradations) or --lq (real low-quality photos)")
    if size < 16 or (steps is not None and steps < 1):
        raise ConfigError("--size must be >= 16 and --steps >= 1")
    methods = [Method(b) for b in dict.fromkeys(baselines)] + checkpoint_methods(list(checkpoints), preset,
                                                                                  pretrained, steps, caption_model,
                                                                                  caption_max_tokens, caption_size)  # fmt: skip
    if not methods:
        raise ConfigError("nothing to evaluate: give --checkpoint and/or --baseline bicubic")
    wanted = parse_metrics(metrics)
    if lq is not None:
        wanted = [m for m in wanted if m not in FULL_REFERENCE]
        if not wanted:
            raise ConfigError("--lq has no reference image: ask for a no-reference metric (maniqa, clipiqa, musiq)")
    images = list_images(gt or lq, limit)
    names = [REAL] if lq is not None else [d.name for d in parse_degradations(degradations)]
    items = [{**image, "degradation": name} for name in names for image in images]
    conventions = Conventions(fr_channel, crop_border)
    import torch

    job = EvalJob(str(Path(out).resolve()), size, seed, tuple(wanted), conventions, weights_dir, dtype,
                  torch.hub.get_dir())
    check_config(Path(job.out), {"size": size, "seed": seed, "conventions": asdict(conventions), "settings": preset,
                                 "steps": steps, "dtype": dtype, "caption_model": caption_model,
                                 "caption_max_tokens": caption_max_tokens if caption_model else None,
                                 "caption_size": caption_size if caption_model else None,
                                 "methods": {m.name: m.checkpoint for m in methods}})
    opts = PoolOptions(batch_size=batch_size, part_rows=part_rows, actors=actors, gpus_per_actor=gpus_per_actor)
    run_eval(settings, job, methods, items, opts, make_limits(item_seconds, worker_memory))
