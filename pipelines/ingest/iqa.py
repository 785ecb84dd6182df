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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.errors import ConfigError, MissingWeightsError

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


# pyiqa's Q-Align architecture replaces these transformers Llama classes process-wide when pyiqa is
# imported; its attention reads `config.rope_theta`, which transformers 5 configs no longer have, so
# any Llama (LLaVA) built later in the same process fails. We put the originals back.
_LLAMA_PATCHED = {
    "transformers.models.llama.configuration_llama": ("LlamaConfig",),
    "transformers.models.llama.modeling_llama": (
        "LlamaAttention", "LlamaFlashAttention2", "LlamaSdpaAttention", "LlamaDecoderLayer",
    ),
}


@contextmanager
def _transformers_llama_guard():
    """Put back transformers' Llama classes that pyiqa replaces while importing its architectures."""
    import importlib

    missing = object()
    saved = {}
    for module_name, names in _LLAMA_PATCHED.items():
        module = importlib.import_module(module_name)
        for name in names:
            saved[(module, name)] = getattr(module, name, missing)
    try:
        yield
    finally:
        for (module, name), value in saved.items():
            if value is missing:
                if hasattr(module, name):
                    delattr(module, name)
            else:
                setattr(module, name, value)


def import_pyiqa():
    """Import pyiqa without letting it patch transformers' Llama classes for the whole process."""
    with _transformers_llama_guard():
        import pyiqa

        try:  # the patch runs once, when this module is first imported: do it here, under the guard
            import pyiqa.archs.q_align.modeling_llama2  # noqa: F401
        except Exception:  # Q-Align needs extras we don't use; nothing to undo then
            pass
    return pyiqa


def create_metric(metric: str, **options):
    """``pyiqa.create_metric``, which imports architectures lazily, under the same guard."""
    pyiqa = import_pyiqa()
    with _transformers_llama_guard():
        return pyiqa.create_metric(metric, **options)


def load_metric(metric: str, weights_dir: str | None, device: str = "cpu"):
    """Build ``metric`` with pyiqa's ``create_metric``, loading its checkpoint from the cache / weights dir."""
    import_pyiqa()  # before any pyiqa submodule: see _transformers_llama_guard
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


class IqaScorer:
    """Ray Data actor: holds one pyiqa model per metric, scores a batch of (image_id, path), writes a part.

    Input batch columns: ``image_id``, ``path``. Output: the ``iqa_scores`` rows it wrote.
    """

    def __init__(self, metrics: list[str], weights_dir: str | None, run_id: str, root: str,
                 short_side: int = IQA_SHORT_SIDE, torch_threads: int = 1):
        import torch

        torch.set_num_threads(max(1, torch_threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.models = {m: load_metric(m, weights_dir, device) for m in metrics}
        self.run_id, self.root, self.short_side = run_id, root, short_side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from catalogs.lake import write_part
        from pipelines.engine.actors import load_rgb, part_name
        from schemas.errors import InputImageError
        from schemas.runs import utc_now

        ids = [str(i) for i in batch["image_id"]]
        images = []
        for path in batch["path"]:
            try:
                images.append(np.asarray(load_rgb(str(path), min_side=self.short_side)))
            except InputImageError:
                images.append(None)  # recorded as a NULL score, so it is not retried forever
        scores = score_batch(self.models, images)
        now = utc_now()
        rows = [
            {"image_id": image_id, "metric": metric, "score": scores[metric][i],
             "lower_better": bool(model.lower_better), "run_id": self.run_id, "created_at": now}
            for metric, model in self.models.items()
            for i, image_id in enumerate(ids)
        ]
        write_part(self.root, "iqa_scores", rows, name=part_name("iqa-" + "-".join(sorted(self.models)), ids))
        return {
            "image_id": np.array([r["image_id"] for r in rows], dtype=object),
            "metric": np.array([r["metric"] for r in rows], dtype=object),
            "score": np.array([np.nan if r["score"] is None else r["score"] for r in rows], dtype=np.float64),
        }


def _actor_pool() -> tuple[int, float, float, int]:
    """(actors, GPUs per actor, CPUs per actor, torch threads): one actor per GPU, else one CPU actor.

    Actors never hold every CPU: the read tasks that feed them need some, or the dataset hangs.
    """
    from pipelines.engine.runtime import cluster_cpus, cluster_gpus

    cpus, gpus = cluster_cpus(), cluster_gpus()
    if gpus:
        return gpus, 1.0, max(0.1, min(1.0, (cpus - 0.5) / gpus)), 1
    cpus_per_actor = max(0.1, cpus - 0.5)
    return 1, 0.0, cpus_per_actor, max(1, round(cpus_per_actor))


def score_images(rows: list[dict], metrics: list[str], weights_dir: str | None, run_id: str, root: str,
                 short_side: int = IQA_SHORT_SIDE, batch_size: int = IQA_BATCH_SIZE) -> int:
    """Score ``rows`` ({image_id, path}) with every metric on a Ray actor pool; returns rows written."""
    from pipelines.engine.runtime import Settings, init_ray

    check_metrics(metrics, weights_dir)
    if not rows:
        return 0
    init_ray(Settings(root=root))  # reuses the running Ray (ingest's, or a test's)
    import ray

    work = pa.table({"image_id": [r["image_id"] for r in rows], "path": [r["path"] for r in rows]})
    actors, gpus, cpus, threads = _actor_pool()
    blocks = [work.slice(start, batch_size) for start in range(0, len(work), batch_size)]
    ds = ray.data.from_arrow(blocks).map_batches(
        IqaScorer,
        fn_constructor_kwargs={"metrics": list(dict.fromkeys(metrics)), "weights_dir": weights_dir,
                               "run_id": run_id, "root": root, "short_side": short_side, "torch_threads": threads},
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=batch_size,  # required by Ray whenever num_gpus is given, even 0
        batch_format="numpy",
        num_gpus=gpus,
        num_cpus=cpus,
    )
    return sum(len(out["image_id"]) for out in ds.iter_batches(batch_size=None, batch_format="numpy"))
