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


def make_source(config, split: str, shards: str | None = None):
    """The shard reader (supir.reader) for the configured shards."""
    from supir.reader import ReaderConfig, make_loader

    d = config.data
    workers = d.num_workers if split == d.split else 0  # val: a few batches, no worker start-up
    if not (shards or d.shards):
        raise ConfigError("data.shards is empty: point it at a shard manifest or tar pattern")
    return make_loader(
        ReaderConfig(
            shards=shards or d.shards,
            split=split,
            batch_size=d.batch_size,
            crop_size=d.crop_size,
            shuffle_buffer=d.shuffle_buffer if split == d.split else 0,
            resampled=d.resampled and split == d.split,
            caption_dropout=d.caption_dropout if split == d.split else 0.0,
            seed=config.seed,
            num_workers=workers,
            partial_batches=split != d.split,
        )
    )


def val_source(config):
    """The validation reader: `data.val_shards`, else the manifest's val split, else None."""
    d = config.data
    if d.val_shards:
        return make_source(config, d.val_split, d.val_shards)
    if d.shards.endswith(".manifest.json"):
        try:
            return make_source(config, d.val_split)
        except ConfigError:
            return None
    return None
