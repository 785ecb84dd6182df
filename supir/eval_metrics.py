"""Table 1's six metrics through pyiqa (imported only via `supir.pyiqa_import`), with their conventions.

SUPIR Table 1 reports full-reference PSNR, SSIM, LPIPS [96] and no-reference ManIQA [86], CLIP-IQA
[76], MUSIQ [43], without saying how PSNR/SSIM were taken. We state ours (:class:`Conventions`):
by default PSNR and SSIM on the Y channel of BT.601 YCbCr (the MATLAB/BasicSR convention of the SR
literature; ``channel="rgb"`` for all three channels), no border cropped (the whole 1024² crop is
degraded and restored; ``crop_border`` crops that many pixels per side, e.g. the scale, as BasicSR),
SSIM with pyiqa's 11×11 σ=1.5 Gaussian window and no downsampling; LPIPS v0.1 with the AlexNet trunk
on [0, 1] RGB (pyiqa maps it to [-1, 1]).

Weights are never downloaded (the machines are offline): PSNR/SSIM need none; LPIPS needs pyiqa's
LPIPS layers and torchvision's AlexNet where training's validation looks for them
(`supir.validation.lpips_weight_files`); the no-reference metrics need the files of
`supir.iqa_weights`. A metric whose files are missing is not skipped: every result of it says
``missing: put FILE at PATH``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from schemas.errors import ConfigError

FULL_REFERENCE = ("psnr", "ssim", "lpips")
NO_REFERENCE = ("maniqa", "clipiqa", "musiq")
LABELS = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS↓", "maniqa": "ManIQA", "clipiqa": "ClipIQA",
          "musiq": "MUSIQ"}  # fmt: skip
DECIMALS = {"psnr": 2, "ssim": 4, "lpips": 4, "maniqa": 4, "clipiqa": 4, "musiq": 2}  # as Table 1 prints them
LOWER_BETTER = {"lpips"}
_URLS = {
    "LPIPS_v0.1_alex-df73285e.pth": "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
    "LPIPS_v0.1_alex-df73285e.pth",
    "alexnet-owt-7be5be79.pth": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
}


@dataclass(frozen=True)
class Conventions:
    channel: str = "y"  # "y": BT.601 luma; "rgb": all three channels
    crop_border: int = 0  # pixels dropped on every side before PSNR/SSIM

    def __post_init__(self):
        if self.channel not in ("y", "rgb") or self.crop_border < 0:
            raise ConfigError(f"PSNR/SSIM channel must be y or rgb and crop border >= 0, got {self}")

    def describe(self) -> str:
        space = "Y of BT.601 YCbCr" if self.channel == "y" else "RGB"
        return f"PSNR/SSIM on {space}, crop border {self.crop_border} px; LPIPS v0.1 (AlexNet) on RGB"


def parse_metrics(text: str) -> list[str]:
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in LABELS]
    if unknown or not names:
        raise ConfigError(f"unknown metric {', '.join(unknown) or '(none)'}; choose from {', '.join(LABELS)}")
    return [m for m in LABELS if m in names]  # Table 1's column order


def missing_weights(metric: str, weights_dir: str | None = None) -> str | None:
    """``missing: put FILE at PATH ...`` for a metric whose weights are not on disk, else None."""
    from supir import iqa_weights

    if metric in ("psnr", "ssim"):
        return None
    if metric == "lpips":
        from supir.validation import lpips_weight_files

        lines = [f"{f.name} at {f} (download: {_URLS[f.name]})" for f in lpips_weight_files() if not f.exists()]
    else:
        lines = iqa_weights.missing_weights(metric, weights_dir)
        if weights_dir is None or not lines:
            lines = [line.replace(" -> put it at ", " at ") for line in lines]
        else:
            lines = [line.replace(" -> put it at ", " at ") + " or --weights-dir" for line in lines]
    return "missing: put " + "; ".join(lines) if lines else None


def build_metric(metric: str, device: str, conventions: Conventions, weights_dir: str | None = None):
    """The pyiqa model of ``metric`` (call :func:`missing_weights` first)."""
    from supir.pyiqa_import import create_metric

    if metric in ("psnr", "ssim"):
        return create_metric(metric, device=device, test_y_channel=conventions.channel == "y",
                             color_space="ycbcr", crop_border=conventions.crop_border)  # fmt: skip
    if metric == "lpips":
        from supir.validation import lpips_weight_files

        return create_metric("lpips", device=device, pretrained_model_path=str(lpips_weight_files()[0]))
    from supir.iqa_weights import load_metric

    return load_metric(metric, weights_dir, device)


def to_tensor(rgb: np.ndarray, device: str):
    import torch

    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)[None].to(device)


class Scorer:
    """The requested metrics that can be built here, and a ``missing: ...`` note for the others."""

    def __init__(self, metrics: list[str], device: str, conventions: Conventions = Conventions(),  # noqa: B008
                 weights_dir: str | None = None):
        self.device, self.metrics = device, list(metrics)
        self.notes = {m: missing_weights(m, weights_dir) for m in self.metrics}
        self.models = {m: build_metric(m, device, conventions, weights_dir)
                       for m in self.metrics if self.notes[m] is None}  # fmt: skip

    def score(self, restored: np.ndarray, gt: np.ndarray | None) -> dict[str, tuple[float | None, str | None]]:
        """metric -> (value, note) of one uint8 RGB result (against ``gt`` when it has one)."""
        import torch

        x = to_tensor(restored, self.device)
        y = None if gt is None else to_tensor(gt, self.device)
        out = {}
        for metric in self.metrics:
            if metric in FULL_REFERENCE and y is None:
                continue  # real-image mode: no reference
            if metric not in self.models:
                out[metric] = (None, self.notes[metric])
                continue
            with torch.inference_mode():
                value = self.models[metric](x, y) if metric in FULL_REFERENCE else self.models[metric](x)
            out[metric] = (float(torch.as_tensor(value).float().mean()), None)
        return out
