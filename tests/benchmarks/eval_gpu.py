"""`supir-data eval` at the paper's size on a GPU: a random-weight model of the released shape, 4 photos ×
5 Table 1 degradations at 1024², `--settings release` (scripts/gpu_check.py, section `eval`).

Timing comes from the results themselves: with `--part-rows 1` every restored image is one part file,
so the gaps between the parts' modification times are seconds per image (model loading excluded),
and divided by the sampler steps, seconds per image per step. Random weights: the images and metrics
mean nothing; only speed and completeness are measured.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def release_shaped_checkpoint(sdxl: Path, out: Path, tiny: bool) -> Path:
    """Our model in the released configuration (full [1, 2, 10] control model) from the SDXL folder's UNet."""
    import torch
    from diffusers import UNet2DConditionModel

    from supir.model import SupirUNet

    unet = UNet2DConditionModel.from_pretrained(str(sdxl), subfolder="unet", torch_dtype=torch.float32)
    depth = (1, 1) if tiny else (1, 2, 10)
    model = SupirUNet.from_unet(unet, depth)
    with torch.no_grad():  # non-zero connectors, so the control path does work
        for i, p in enumerate(model.trainable_parameters()):
            if not p.abs().sum():
                p.add_(1e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    ckpt = out / "release-shaped" / "step-000000"
    model.save_trainable(ckpt)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 0, "config": {"model": {"pretrained": str(sdxl)}}}))
    del model, unet
    return ckpt


def _summary(result: Path) -> list[dict]:
    import csv

    with open(result / "summary.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def measure(sdxl: Path, out: Path, tiny: bool = False, steps: int = 10, images: int = 4) -> dict:
    from tests.pipelines.eval_fixtures import make_photos

    size = 64 if tiny else 1024
    ckpt = release_shaped_checkpoint(sdxl, out, tiny)
    photos = make_photos(out / "eval-photos", images, (size + size // 4, size + size // 8))
    result = out / "eval"
    cmd = [sys.executable, "-m", "pipelines", "--num-cpus", str(min(8, os.cpu_count() or 1)), "eval",
           "--gt", str(photos), "--checkpoint", str(ckpt), "--baseline", "bicubic", "--settings", "release",
           "--metrics", "psnr,ssim,lpips,maniqa,clipiqa,musiq", "--size", str(size), "--steps", str(steps),
           "--part-rows", "1", "--out", str(result)]  # fmt: skip
    if tiny:
        cmd += ["--gpus-per-actor", "0"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - tic
    if proc.returncode != 0:
        raise RuntimeError(f"eval exited {proc.returncode}: {proc.stderr[-3000:]}")
    import pyarrow.parquet as pq

    rows = pq.read_table(result / "results.parquet").to_pylist()
    parts = sorted(result.glob("lake/eval_results/part-*.parquet"), key=lambda p: p.stat().st_mtime)
    checkpoint_parts = [p for p in parts if pq.read_table(p).column("method")[0].as_py() != "bicubic"]
    times = [p.stat().st_mtime for p in checkpoint_parts]
    gaps = [b - a for a, b in zip(times, times[1:])]
    per_image = statistics.median(gaps) if gaps else None
    return {
        "size": size,
        "settings": "release",
        "steps": steps,
        "items": len(checkpoint_parts),
        "rows": len(rows),
        "wall_s": round(wall, 1),
        "s_per_image": round(per_image, 3) if per_image else None,
        "s_per_image_step": round(per_image / steps, 4) if per_image else None,
        "psnr_ssim": [f"{x['Degradation']} | {x['Method']} | {x['PSNR']} | {x['SSIM']}" for x in _summary(result)],
    }
