"""Periodic validation: restore the val shards' LQ images and score them against GT.

PSNR and SSIM always (computed here on [0, 1] RGB); LPIPS when its two weight files are already on
disk: pyiqa's LPIPS layers and torchvision's ImageNet AlexNet, which pyiqa's LPIPS always loads (no
download is ever attempted during training; a missing file skips LPIPS with one warning).
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import torch

from schemas.runs import derive_seed
from supir.batches import prepare_images
from supir.prompts import NEGATIVE_PROMPTS
from supir.sampler import SamplerConfig

LPIPS_WEIGHTS = "LPIPS_v0.1_alex-df73285e.pth"  # pyiqa's file name for lpips (alex)
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet IMAGENET1K_V1, LPIPS's trunk
log = logging.getLogger(__name__)
_warned: set[str] = set()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, inputs in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from skimage.metrics import structural_similarity

    values = [
        structural_similarity(
            x.permute(1, 2, 0).numpy(),
            y.permute(1, 2, 0).numpy(),
            channel_axis=2,
            data_range=1.0,
            win_size=min(7, (min(x.shape[-2:]) // 2) * 2 - 1),
        )
        for x, y in zip(a.cpu(), b.cpu())
    ]
    return torch.tensor(np.array(values, dtype=np.float64))


def lpips_weight_files() -> list[Path]:
    """Where LPIPS's two weight files must be (under ``$TORCH_HOME/hub``)."""
    hub = Path(torch.hub.get_dir())
    return [hub / "pyiqa" / LPIPS_WEIGHTS, hub / "checkpoints" / ALEXNET_WEIGHTS]


def _lpips_metric(device):
    missing = [str(f) for f in lpips_weight_files() if not f.exists()]
    if missing:
        if len(missing) == 1 and "missing" not in _warned:  # one of two: the user meant to have LPIPS
            _warned.add("missing")
            log.warning("validation without LPIPS: %s is missing", missing[0])
        return None
    try:
        from supir.pyiqa_import import create_metric

        return create_metric("lpips", device=device, pretrained_model_path=str(lpips_weight_files()[0]))
    except Exception as exc:  # noqa: BLE001 - a broken metric must not stop a training run
        if "create" not in _warned:
            _warned.add("create")
            log.warning("validation without LPIPS: cannot build it (%s: %s)", type(exc).__name__, exc)
        return None


@torch.no_grad()
def validate(model, parts, val_batches, config, hint_encoder=None) -> dict[str, float]:
    """Mean PSNR / SSIM (/ LPIPS) of restorations of the first `config.val.batches` val batches."""
    from supir.restore import restore_batch

    was_training = model.training
    model.eval()
    device = next(parts.vae.parameters()).device
    sampler = SamplerConfig(
        steps=config.val.sampler_steps, cfg_scale=config.val.cfg_scale, tau_r=config.val.tau_r
    )
    lpips = _lpips_metric(device)
    scores: dict[str, list[float]] = {"psnr": [], "ssim": []}
    for i, batch in enumerate(itertools.islice(iter(val_batches), config.val.batches)):
        gt, lq, _ = prepare_images(batch, config.data.resolution, device)
        generator = torch.Generator().manual_seed(derive_seed(config.seed, f"val{i}"))
        out = restore_batch(
            model, parts, lq, list(batch["txt"]), sampler, NEGATIVE_PROMPTS["paper"], generator, hint_encoder
        )
        out01, gt01 = (out.float().cpu() + 1) / 2, (gt.float().cpu() + 1) / 2
        scores["psnr"] += psnr(out01, gt01).tolist()
        scores["ssim"] += ssim(out01, gt01).tolist()
        if lpips is not None:
            scores.setdefault("lpips", []).extend(lpips(out01.to(device), gt01.to(device)).flatten().tolist())
    model.train(was_training)
    return {k: float(np.mean(v)) for k, v in scores.items() if v}
