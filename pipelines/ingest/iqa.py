"""pyiqa model metrics (MUSIQ, CLIP-IQA, MANIQA, TOPIQ) on Ray: one model set per actor, GPU when present.

Weights are never downloaded here (`supir.iqa_weights`: where pyiqa looks, ``--weights-dir``, how a
model is built): :func:`check_metrics` runs before any work and names every missing file, where to
put it and where to download it from.

pyiqa is licensed PolyForm Noncommercial 1.0.0 since 0.1.15 (see docs/quality.md).
"""

import numpy as np

from pipelines.engine.stage import Stage
from supir.iqa_weights import (  # noqa: F401 - the metric registry lives in supir; re-exported for ingest
    METRICS,
    check_metrics,
    load_metric,
)
from supir.pyiqa_import import create_metric, import_pyiqa, transformers_llama_guard  # noqa: F401 - re-exported

IQA_SHORT_SIDE = 512  # images are scored at this short side (MUSIQ & co. are resolution-dependent)
IQA_BATCH_SIZE = 8


def score_batch(models: dict, images: list[np.ndarray | None]) -> dict[str, list[float | None]]:
    """Score HxWx3 uint8 RGB images with each model; None for an image that could not be read."""
    import torch

    out: dict[str, list[float | None]] = {name: [] for name in models}
    for rgb in images:
        tensor = None
        if rgb is not None:
            tensor = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None].div_(255.0)
        for name, model in models.items():
            if tensor is None:
                out[name].append(None)
                continue
            with torch.inference_mode():
                score = model(tensor.to(model.device))
            out[name].append(float(torch.as_tensor(score).float().mean()))
    return out


class IqaStage(Stage):
    """pyiqa scores on the engine's actor pool: one model per metric per actor, GPU when present.

    Rows are long format (one per image and metric); an image that cannot be read gets NULL scores,
    so it is not retried forever.
    """

    name = "iqa"
    table = "iqa_scores"
    batched = True
    uses_actors = True
    limit_memory = False

    def __init__(self, metrics: list[str], weights_dir: str | None, run_id: str, short_side: int,
                 torch_threads: int, batch_size: int):
        self.metrics, self.weights_dir, self.run_id = list(dict.fromkeys(metrics)), weights_dir, run_id
        self.short_side, self.torch_threads, self.batch_size = short_side, torch_threads, batch_size

    def key(self, item: dict) -> str:
        return str(item["image_id"])

    def setup(self) -> None:
        from pipelines.engine.models import pick_device

        device = pick_device(self.torch_threads)
        self.models = {m: load_metric(m, self.weights_dir, device) for m in self.metrics}

    def prepare(self, item: dict) -> dict:
        from pipelines.engine.actors import load_rgb

        return {**item, "image": np.asarray(load_rgb(str(item["path"]), min_side=self.short_side))}

    def process(self, items: list[dict]) -> list[list[dict]]:
        from schemas.runs import utc_now

        scores = score_batch(self.models, [item["image"] for item in items])
        now = utc_now()
        return [
            [{"image_id": str(item["image_id"]), "metric": metric, "score": scores[metric][i],
              "lower_better": bool(model.lower_better), "run_id": self.run_id, "created_at": now}
             for metric, model in self.models.items()]
            for i, item in enumerate(items)
        ]  # fmt: skip

    def failure_row(self, item: dict, reason: str, detail: str) -> list[dict]:
        from schemas.runs import utc_now

        models = getattr(self, "models", {})  # set up in an actor; not in the driver
        return [{"image_id": str(item["image_id"]), "metric": metric, "score": None, "run_id": self.run_id,
                 "lower_better": bool(models[metric].lower_better) if metric in models else None,
                 "created_at": utc_now()} for metric in self.metrics]  # fmt: skip

    def outcome(self, row: dict | None) -> str:
        return "unreadable" if row is None or row.get("score") is None else "scored"

    def part_name(self, items: list[dict]) -> str:
        from pipelines.engine.actors import part_name

        return part_name("iqa-" + "-".join(sorted(self.metrics)), [self.key(i) for i in items])


def score_images(rows: list[dict], metrics: list[str], weights_dir: str | None, run_id: str, root: str,
                 short_side: int = IQA_SHORT_SIDE, batch_size: int = IQA_BATCH_SIZE, limits=None) -> int:
    """Score ``rows`` ({image_id, path}) with every metric on the engine's actor pool; returns rows written."""
    from pipelines.engine.actors import PoolOptions, plan_actor_pool
    from pipelines.engine.executor import Plan, run_stage
    from pipelines.engine.runtime import Settings, init_ray
    from pipelines.engine.stage import Limits

    check_metrics(metrics, weights_dir)
    if not rows:
        return 0
    init_ray(Settings(root=root))  # reuses the running Ray (ingest's, or a test's)
    pool = plan_actor_pool(PoolOptions(batch_size=batch_size, part_rows=batch_size))
    stage = IqaStage(metrics, weights_dir, run_id, short_side, pool.torch_threads, batch_size)
    work = [{"image_id": r["image_id"], "path": r["path"]} for r in rows]
    stats = run_stage(stage, work, root, run_id, Plan(part_items=batch_size, limits=limits or Limits(), pool=pool),
                      show_progress=False)
    return stats.rows
