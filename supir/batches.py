"""Training batches: the endless, resumable stream and the GT/LQ preparation every trainer shares.

Used by the adaptor trainer (supir.train), the robust-encoder trainer (supir.robust_encoder) and
validation (supir.validation); kept apart so that none of them imports another.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from schemas.errors import ConfigError


def prepare_images(batch: dict, resolution: int | None, device) -> tuple[torch.Tensor, torch.Tensor, float]:
    """GT and LQ on `device`, resized to `resolution` if set; returns the resize factor too."""
    gt, lq = batch["gt"].to(device).float(), batch["lq"].to(device).float()
    if resolution is None or gt.shape[-1] == resolution:
        return gt, lq, 1.0
    factor = resolution / gt.shape[-1]
    size = (round(gt.shape[-2] * factor), resolution)
    gt = F.interpolate(gt, size=size, mode="bilinear", antialias=True, align_corners=False)
    lq = F.interpolate(lq, size=size, mode="bilinear", antialias=True, align_corners=False)
    return gt, lq, factor


class DataStream:
    """Endless batches over epochs, with a resumable position (epoch, batches used in that epoch)."""

    def __init__(self, source: Iterable[dict], epoch: int = 0, position: int = 0):
        self.source, self.epoch, self.position = source, epoch, position
        self._it = None

    def next(self) -> dict:
        for _ in range(2):
            if self._it is None:
                if hasattr(self.source, "set_epoch"):
                    self.source.set_epoch(self.epoch)
                self._it = iter(self.source)
                for _ in range(self.position):  # fast-forward to where the checkpoint stopped
                    next(self._it)
            try:
                batch = next(self._it)
                self.position += 1
                return batch
            except StopIteration:
                self._it, self.epoch, self.position = None, self.epoch + 1, 0
        raise ConfigError("the training data yields no batch (fewer samples than one batch per rank?)")
