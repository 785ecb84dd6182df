"""Where pyiqa's model metrics (MUSIQ, CLIP-IQA, MANIQA, TOPIQ) find their weights offline, and building them.

Weights are never downloaded: pyiqa looks for each checkpoint, under the basename of its URL, in its
cache ``torch.hub.get_dir()/pyiqa`` (``$TORCH_HOME/hub/pyiqa``), or in a weights folder when given
(we point pyiqa's cache at it). :func:`missing_weights` names every missing file, where to put it and
where to download it from; :func:`load_metric` builds the model with pyiqa's own ``create_metric``
and checkpoint loading, so a test that saves a randomly initialised state dict under the real file
name exercises exactly the path a real run takes. Shared by ingest's scores and `supir-data eval`.

pyiqa is licensed PolyForm Noncommercial 1.0.0 since 0.1.15 (see docs/quality.md).
"""

import os
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import ConfigError, MissingWeightsError
from supir.pyiqa_import import create_metric, import_pyiqa

_HF_WEIGHTS = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
_CLIP_RN50 = (
    "https://openaipublic.azureedge.net/clip/models/"
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"
)


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


def missing_weights(metric: str, weights_dir: str | None) -> list[str]:
    """One line per weight file of ``metric`` that is not on disk: the file, where to put it, its URL."""
    spec = METRICS[metric]
    missing = []
    for file in spec.files:
        path = weight_path(file, weights_dir)
        if not path.is_file():
            missing.append(f"{file.name} -> put it at {path} (download: {file.url})")
    if spec.hf_backbone and not _hf_cached(spec.hf_backbone):
        missing.append(f"the timm backbone {spec.hf_backbone} is not in the Hugging Face cache "
                       f"(run `huggingface-cli download {spec.hf_backbone}` where a network is available)")
    return missing


def check_metrics(metrics: list[str], weights_dir: str | None) -> None:
    """Fail before any work if a metric is unknown or one of its weight files is not on disk."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown --metric {', '.join(unknown)}; supported: {', '.join(sorted(METRICS))}")
    if weights_dir and not Path(weights_dir).is_dir():
        raise MissingWeightsError(f"--weights-dir {weights_dir} is not a folder")
    missing = [f"  {metric}: {line}" for metric in dict.fromkeys(metrics) for line in missing_weights(metric, weights_dir)]
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
