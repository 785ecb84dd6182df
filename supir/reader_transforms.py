"""Per-sample transforms of the shard reader: decode, aligned crop, LQ, prompt; and batch collation.

A raw sample is webdataset's dict keyed by extension (``gt.jpg``, ``lq.png``, ``txt``, ``json``);
a training sample holds uint8 HxWx3 crops and the conditioning; :func:`collate` turns a list of
them into the batch dict the trainer consumes (``gt``/``lq`` in [-1, 1], B×3×S×S).
"""

import json
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from schemas.runs import derive_seed
from schemas.sample import (
    GT_MEMBERS,
    LQ_MEMBER,
    META_MEMBER,
    TEXT_EMBEDS_MEMBER,
    TEXT_MEMBER,
    TEXT_POOLED_MEMBER,
)
from supir.prompts import training_prompt


class BadSample(ValueError):
    """A sample the reader cannot use (missing member, undecodable image, broken json)."""


@dataclass(frozen=True)
class SampleTransform:
    """Turns one raw shard sample into a training sample (picklable: runs in DataLoader workers)."""

    crop_size: int = 512
    caption_dropout: float = 0.05
    seed: int = 0
    degradation_preset: str = "supir"

    def __call__(self, sample: dict, epoch: int = 0) -> dict:
        key = sample.get("__key__", "?")
        gt_member = next((m for m in GT_MEMBERS if m in sample), None)
        if gt_member is None:
            raise BadSample(f"{key}: no gt image (expected one of {', '.join(GT_MEMBERS)})")
        for member in (TEXT_MEMBER, META_MEMBER):
            if member not in sample:
                raise BadSample(f"{key}: missing member {member!r}")
        try:
            meta = json.loads(sample[META_MEMBER])
            caption = sample[TEXT_MEMBER].decode("utf-8")
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadSample(f"{key}: unreadable json/txt: {exc}") from None
        if not isinstance(meta, dict):
            raise BadSample(f"{key}: json member is not an object")

        gt = decode_bgr(sample[gt_member], f"{key}.{gt_member}")  # to RGB after cropping (4x fewer pixels)
        lq = None
        if LQ_MEMBER in sample:
            lq = decode_bgr(sample[LQ_MEMBER], f"{key}.{LQ_MEMBER}")
            if lq.shape[:2] != gt.shape[:2]:
                # The paper trains on LQ resized to the GT size (the adaptor sees both at 512x512).
                lq = cv2.resize(lq, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_CUBIC)

        # Per-sample randomness from (seed, key, epoch): independent of worker count and order.
        rng = np.random.default_rng(derive_seed(self.seed, f"{key}:{epoch}"))
        gt, lq, upscale = _at_least(gt, lq, self.crop_size)
        h, w = gt.shape[:2]
        top = int(rng.integers(0, h - self.crop_size + 1))
        left = int(rng.integers(0, w - self.crop_size + 1))
        gt = cv2.cvtColor(gt[top : top + self.crop_size, left : left + self.crop_size], cv2.COLOR_BGR2RGB)
        if lq is not None:
            lq = cv2.cvtColor(lq[top : top + self.crop_size, left : left + self.crop_size], cv2.COLOR_BGR2RGB)
        else:
            lq = self._degrade(gt, key, epoch)

        is_negative = bool(meta.get("is_negative", False))
        text = training_prompt(caption, is_negative)
        dropped = rng.random() < self.caption_dropout
        if dropped:
            text = ""  # classifier-free guidance learns the unconditional branch from these
        original_size, crop_top_left = _size_conditioning(meta, gt_shape=(h, w), upscale=upscale, crop=(top, left))
        cached = _cached_text(sample, key, dropped)
        return {
            **cached,
            "__key__": key,
            "gt": np.ascontiguousarray(gt),
            "lq": np.ascontiguousarray(lq),
            "txt": text,
            "is_negative": is_negative,
            "original_size": original_size,
            "crop_top_left": crop_top_left,
        }

    def _degrade(self, gt_crop: np.ndarray, key: str, epoch: int) -> np.ndarray:
        """Shards written with ``--lq none``: synthesise the LQ of this crop with the degradation engine."""
        from supir.degradation import apply, preset, rng_for, sample_recipe

        recipe = sample_recipe(preset(self.degradation_preset), rng_for(self.seed, f"degrade:{key}:{epoch}"))
        lq = apply(recipe, gt_crop)
        if lq.shape[:2] != gt_crop.shape[:2]:
            lq = cv2.resize(lq, (gt_crop.shape[1], gt_crop.shape[0]), interpolation=cv2.INTER_CUBIC)
        return lq


def _cached_text(sample: dict, key: str, dropped: bool) -> dict:
    """The cached text conditioning (supir/text_cache.py) when the shard has it; zeros when dropped out."""
    if TEXT_EMBEDS_MEMBER not in sample or TEXT_POOLED_MEMBER not in sample:
        return {}
    from supir.text_cache import read_npy

    try:
        embeds, pooled = read_npy(sample[TEXT_EMBEDS_MEMBER]), read_npy(sample[TEXT_POOLED_MEMBER])
    except ValueError as exc:
        raise BadSample(f"{key}: unreadable cached text embedding: {exc}") from None
    if embeds.ndim != 2 or pooled.ndim != 1:
        raise BadSample(f"{key}: cached text embeddings have shapes {embeds.shape} and {pooled.shape}")
    if dropped:  # encode_prompts gives the empty prompt zeros
        embeds, pooled = np.zeros_like(embeds), np.zeros_like(pooled)
    return {"prompt_embeds": embeds, "pooled_embeds": pooled}


def decode_bgr(data: bytes, what: str) -> np.ndarray:
    """Decode image bytes to HxWx3 uint8 BGR (OpenCV: ~4x faster than PIL on JPEG here)."""
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if array is None or array.ndim != 3 or array.shape[2] != 3:
        raise BadSample(f"{what}: cannot decode image ({len(data)} bytes)")
    return array


def _at_least(gt: np.ndarray, lq: np.ndarray | None, size: int):
    """Upscale GT (and LQ) so the short side is at least ``size``; returns the factor used."""
    h, w = gt.shape[:2]
    if min(h, w) >= size:
        return gt, lq, 1.0
    factor = size / min(h, w)
    new = (max(size, round(w * factor)), max(size, round(h * factor)))
    gt = cv2.resize(gt, new, interpolation=cv2.INTER_CUBIC)
    if lq is not None:
        lq = cv2.resize(lq, new, interpolation=cv2.INTER_CUBIC)
    return gt, lq, factor


def _size_conditioning(meta: dict, gt_shape, upscale: float, crop) -> tuple[tuple[int, int], tuple[int, int]]:
    """SDXL's micro-conditioning: original (h, w) and the crop's (top, left) in the resized original.

    The shard stored the GT crop box in original pixels; the resized original is the original scaled
    by gt_height / box_height (and by the reader's upscale, if any).
    """
    h, w = gt_shape
    top, left = crop
    size = meta.get("original_size")
    box = meta.get("crop_box")
    if not (isinstance(size, list) and len(size) == 2):
        return (h, w), (top, left)
    original = (int(size[1]), int(size[0]))
    if not (isinstance(box, list) and len(box) == 4) or box[3] <= box[1]:
        return original, (top, left)
    scale = h / (box[3] - box[1])
    return original, (round(box[1] * scale) + top, round(box[0] * scale) + left)


def collate(samples: list[dict]) -> dict:
    """Stack training samples into the trainer's batch: images as float B×3×S×S in [-1, 1]."""

    def images(name: str) -> torch.Tensor:
        # NumPy, not torch: torch's intra-op threads on a busy host made this 20x slower, and the trainer's
        # main process (num_workers=0) must not have its torch thread count changed for it.
        first = samples[0][name]
        out = np.empty((len(samples), 3, *first.shape[:2]), dtype=np.float32)
        for i, s in enumerate(samples):  # planar uint8 first: a strided uint8→float copy is much slower
            np.multiply(np.stack(cv2.split(s[name])), np.float32(1 / 127.5), out=out[i], casting="unsafe")
        out -= np.float32(1.0)
        return torch.from_numpy(out)

    cached = {}
    if all("prompt_embeds" in s for s in samples):  # a batch mixing cached and uncached texts encodes live
        cached = {name: torch.from_numpy(np.stack([s[name] for s in samples]))
                  for name in ("prompt_embeds", "pooled_embeds")}
    return {
        **cached,
        "gt": images("gt"),
        "lq": images("lq"),
        "txt": [s["txt"] for s in samples],
        "is_negative": torch.tensor([s["is_negative"] for s in samples], dtype=torch.bool),
        "original_size": torch.tensor([s["original_size"] for s in samples], dtype=torch.long),
        "crop_top_left": torch.tensor([s["crop_top_left"] for s in samples], dtype=torch.long),
        "__key__": [s["__key__"] for s in samples],
    }
