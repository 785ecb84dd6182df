"""Tiny inputs for the eval tests: photos made here, two tiny SUPIR checkpoints on one tiny SDXL."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_photos(folder: Path, n: int, size: tuple[int, int] = (96, 80)) -> Path:
    """Smooth colour gradients with a few sharp shapes (texture for the metrics), sizes above --size."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        rng = np.random.default_rng(i)
        img = np.stack([xx / w, yy / h, 0.5 + 0.5 * np.sin((xx + yy) / (6 + i))], axis=2) * 200 + 20
        for _ in range(6):
            x0, y0 = rng.integers(0, w - 16), rng.integers(0, h - 16)
            img[y0 : y0 + rng.integers(4, 16), x0 : x0 + rng.integers(4, 16)] = rng.integers(0, 256, 3)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"photo_{i}.png")
    return folder


def make_checkpoints(root: Path, names=("ours", "release")) -> list[Path]:
    """Checkpoint folders (trainable parts perturbed differently) that `supir.restore_loading` reads."""
    from supir.conditioning import load_sdxl
    from supir.model import SupirUNet
    from supir.tiny_sdxl import build_tiny_sdxl

    sdxl = build_tiny_sdxl(root / "sdxl")
    parts = load_sdxl(sdxl)
    out = []
    for k, name in enumerate(names):
        model = SupirUNet.from_unet(parts.unet, (1, 1))
        with torch.no_grad():
            for i, p in enumerate(model.trainable_parameters()):
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1000 * k + i)))
        ckpt = root / name / "step-000001"
        model.save_trainable(ckpt)
        (ckpt / "trainer_state.json").write_text(json.dumps({"step": 1, "config": {"model": {"pretrained": str(sdxl)}}}))
        out.append(ckpt)
    return out
