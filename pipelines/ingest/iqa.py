"""pyiqa model metrics (MUSIQ, CLIP-IQA, MANIQA, TOPIQ) on Ray: one model set per actor, GPU when present.

Weights are never downloaded here: pyiqa looks for each checkpoint, under the basename of its URL, in
its cache ``torch.hub.get_dir()/pyiqa`` (``$TORCH_HOME/hub/pyiqa``), or in ``--weights-dir`` when
given (we point pyiqa's cache at it). :func:`check_metrics` runs before any work and names every
missing file, where to put it and where to download it from. Models are then built by pyiqa's own
``create_metric`` and its own checkpoint loading: a test that saves a randomly initialised state
dict under the real file name exercises exactly the path a real run takes.

pyiqa is licensed PolyForm Noncommercial 1.0.0 since 0.1.15 (see docs/quality.md).
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.engine.stage import Stage
from schemas.errors import ConfigError, MissingWeightsError
from supir.pyiqa_import import create_metric, import_pyiqa, transformers_llama_guard  # noqa: F401 - re-exported

_HF_WEIGHTS = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
_CLIP_RN50 = (
    "https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"
)
IQA_SHORT_SIDE = 512  # images are scored at this short side (MUSIQ & co. are resolution-dependent)
IQA_BATCH_SIZE = 8


@dataclass(frozen=True)
class WeightFile:
    name: str  # basename pyiqa looks for
    url: str
    cache: str  # "pyiqa" (pyiqa's cache or --weights-dir) or "clip" (torch hub's clip folder or --weights-dir)


@dataclass(frozen=True)
class MetricSpec:
    files: tuple[WeightFile, ...]
    options: tuple[tuple[str, object], ...] = ()  # create_metric overrides that avoid any other download
    hf_backbone: str | None = None  # a timm backbone pyiqa always fetches from the Hugging Face cache


METRICS: dict[str, MetricSpec] = {
    "musiq": MetricSpec((WeightFile("musiq_koniq_ckpt-e95806b9.pth", _HF_WEIGHTS + "musiq_koniq_ckpt-e95806b9.pth",
                                    "pyiqa"),)),
    # The TOPIQ checkpoint holds the ResNet-50 too, so the ImageNet backbone need not be fetched first.
    "topiq_nr": MetricSpec((WeightFile("cfanet_nr_koniq_res50-9a73138b.pth",
                                       _HF_WEIGHTS + "cfanet_nr_koniq_res50-9a73138b.pth", "pyiqa"),),
                           options=(("backbone_pretrain", False),)),
    "clipiqa": MetricSpec((WeightFile("RN50.pt", _CLIP_RN50, "clip"),)),
    "maniqa": MetricSpec((WeightFile("ckpt_koniq10k.pt", _HF_WEIGHTS + "ckpt_koniq10k.pt", "pyiqa"),),
                         hf_backbone="timm/vit_base_patch8_224.augreg2_in21k_ft_in1k"),
}


def _torch_hub_dir() -> Path:
    import torch

    return Path(torch.hub.get_dir())


def weight_path(file: WeightFile, weights_dir: str | None) -> Path:
    """Where pyiqa will read ``file``: ``--weights-dir`` if given, else its default cache."""
    if weights_dir:
        return Path(weights_dir) / file.name
    return _torch_hub_dir() / file.cache / file.name


def _hf_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and os.path.exists(found):
            return True
    return False


def check_metrics(metrics: list[str], weights_dir: str | None) -> None:
    """Fail before any work if a metric is unknown or one of its weight files is not on disk."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown --metric {', '.join(unknown)}; supported: {', '.join(sorted(METRICS))}")
    if weights_dir and not Path(weights_dir).is_dir():
        raise MissingWeightsError(f"--weights-dir {weights_dir} is not a folder")
    missing = []
    for metric in dict.fromkeys(metrics):
        spec = METRICS[metric]
        for file in spec.files:
            path = weight_path(file, weights_dir)
            if not path.is_file():
                missing.append(f"  {metric}: {file.name} -> put it at {path} (download: {file.url})")
        if spec.hf_backbone and not _hf_cached(spec.hf_backbone):
            missing.append(f"  {metric}: the timm backbone {spec.hf_backbone} is not in the Hugging Face cache "
                           f"(run `huggingface-cli download {spec.hf_backbone}` where a network is available)")
    if missing:
        where = f"--weights-dir {weights_dir}" if weights_dir else f"pyiqa's cache {_torch_hub_dir() / 'pyiqa'}"
        raise MissingWeightsError(
            "pyiqa weights are missing (nothing is downloaded offline); looked in "
            f"{where}:\n" + "\n".join(missing) + "\nor pass --weights-dir DIR holding these files."
        )


def load_metric(metric: str, weights_dir: str | None, device: str = "cpu"):
    """Build ``metric`` with pyiqa's ``create_metric``, loading its checkpoint from the cache / weights dir."""
    import_pyiqa()  # before any pyiqa submodule: see transformers_llama_guard
    import pyiqa.utils.download_util as download_util

    check_metrics([metric], weights_dir)
    spec = METRICS[metric]
    options = dict(spec.options)
    # pyiqa resolves every checkpoint URL to DEFAULT_CACHE_DIR/<basename> when it loads it.
    download_util.DEFAULT_CACHE_DIR = str(Path(weights_dir).resolve() if weights_dir else _torch_hub_dir() / "pyiqa")
    for file in spec.files:
        if file.cache == "clip":
            options["backbone"] = str(weight_path(file, weights_dir))  # pyiqa's CLIP loader takes a file
    return create_metric(metric, device=device, **options)


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
