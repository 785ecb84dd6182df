"""One shard sample: the GT (original bytes, or cropped/resized and re-encoded), the precomputed LQ,
caption and metadata, as the webdataset member dict that `write_shard` puts in a tar.

Pure functions of (config, planned sample, source bytes); a source that cannot be used raises
:class:`SampleSkipped` with a reason the shard report counts.
"""

import io
import json
import math

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipelines.shard.plan import GT_FORMATS, PASSTHROUGH_FORMATS, SamplePlan, ShardConfig
from schemas.sample import LQ_MEMBER, META_MEMBER, SAMPLE_SPEC_VERSION, TEXT_MEMBER
from schemas.tables import QUALITY_SIGNALS
from supir.image_io import DEFAULT_MAX_PIXELS, Rejected, open_rgb

PNG_COMPRESSION = 3  # zlib level: 1-3 are several times faster than the default 6 for ~5 % more bytes


class SampleSkipped(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def _encode(rgb: np.ndarray, fmt: str, quality: int = 95) -> bytes:
    params = {
        "png": [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION],
        "jpg": [cv2.IMWRITE_JPEG_QUALITY, quality],
        "webp": [cv2.IMWRITE_WEBP_QUALITY, quality],
    }[fmt]
    ok, buf = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return buf.tobytes()


def crop_box(cfg: ShardConfig, sample: SamplePlan, width: int, height: int) -> list[int]:
    """[left, top, right, bottom] of the square GT box in the oriented original."""
    if cfg.gt_size == 0:
        return [0, 0, width, height]
    side = min(width, height) if cfg.resize else cfg.gt_size
    if cfg.crop == "center":
        left, top = (width - side) // 2, (height - side) // 2
    else:
        rng = np.random.default_rng(sample.crop_seed)
        left, top = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    return [left, top, left + side, top + side]


def make_gt(cfg: ShardConfig, sample: SamplePlan, data: bytes) -> tuple[str, bytes, np.ndarray | None, list, list]:
    """(member, bytes, rgb or None, crop box, original size); original bytes pass through when they can."""
    try:
        img = Image.open(io.BytesIO(data))
        orientation = int(img.getexif().get(0x0112, 1) or 1)
        width, height = img.size if orientation < 5 else img.size[::-1]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise SampleSkipped("corrupt", f"{sample.path}: {exc}") from None
    if min(width, height) < max(cfg.gt_size, 1):
        raise SampleSkipped("too_small", f"{sample.path} is {width}x{height} (the catalog said otherwise)")
    box = crop_box(cfg, sample, width, height)
    whole = box == [0, 0, width, height] and (cfg.gt_size == 0 or width == height == cfg.gt_size)
    member = PASSTHROUGH_FORMATS.get(img.format or "")
    if whole and member and img.mode == "RGB" and orientation == 1 and getattr(img, "n_frames", 1) == 1:
        rgb = None
        if cfg.lq == "precomputed":  # decode the way the reader does (OpenCV), so LQ matches GT pixels
            rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if rgb is None:
                raise SampleSkipped("corrupt", f"{sample.path}: OpenCV cannot decode it")
            rgb = cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB)
        return member, data, rgb, box, [width, height]
    try:
        rgb = open_rgb(data, DEFAULT_MAX_PIXELS)  # the pixels ingest judged: alpha on white, EXIF-oriented
    except Rejected as exc:
        raise SampleSkipped(exc.reason, f"{sample.path}: {exc.detail}") from None
    rgb = rgb[box[1] : box[3], box[0] : box[2]]
    side = cfg.gt_size
    if side and rgb.shape[:2] != (side, side):
        rgb = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)  # area: alias-free downscale
    rgb = np.ascontiguousarray(rgb)
    return GT_FORMATS[cfg.gt_format], _encode(rgb, cfg.gt_format, cfg.gt_quality), rgb, box, [width, height]


def _clean(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return round(value, 6) if isinstance(value, float) else value


def make_sample(cfg: ShardConfig, sample: SamplePlan, data: bytes) -> dict:
    """The webdataset sample dict (member → bytes) of one planned sample."""
    gt_member, gt_bytes, rgb, box, original = make_gt(cfg, sample, data)
    recipe = None
    members = {"__key__": sample.key, gt_member: gt_bytes}
    if cfg.lq == "precomputed":
        from supir.degradation import apply, preset, rng_for, sample_recipe

        degradation = sample_recipe(preset(cfg.preset), rng_for(cfg.seed, sample.key))
        members[LQ_MEMBER] = _encode(apply(degradation, rgb), "png")
        recipe = degradation.to_dict()
    meta = {
        "image_id": sample.image_id,
        "negative_id": sample.negative_id,
        "source": sample.source,
        "is_negative": sample.is_negative,
        "quality": None if sample.quality is None else {k: _clean(v) for k, v in zip(QUALITY_SIGNALS, sample.quality)},
        "caption_model": sample.caption_model,
        "degradation": recipe,
        "seed": cfg.seed,  # recipe = sample_recipe(preset(p), rng_for(seed, __key__))
        "crop_box": box,
        "original_size": original,
        "spec_version": SAMPLE_SPEC_VERSION,
    }
    if cfg.text_encoder:  # cached text conditioning for the trainer (supir/text_cache.py)
        from supir.prompts import training_prompt
        from supir.text_cache import cached_text_members

        text_members, meta["text_encoder"] = cached_text_members(
            cfg.text_encoder, training_prompt(sample.caption, sample.is_negative)
        )
        members.update(text_members)
    members[TEXT_MEMBER] = sample.caption.encode("utf-8")
    members[META_MEMBER] = json.dumps(meta, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return members
