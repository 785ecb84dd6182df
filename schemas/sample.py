"""The WebDataset sample spec: what one training sample in a shard holds.

A sample is a dict keyed by extension (webdataset's convention). ``__key__`` is a stable id with
no dots or slashes (webdataset splits member names at the first dot).
"""

import re

SAMPLE_SPEC_VERSION = 1

GT_MEMBERS = ("gt.jpg", "gt.png", "gt.webp")  # exactly one per sample
LQ_MEMBER = "lq.png"  # present when the shard was written with `--lq precomputed`
TEXT_MEMBER = "txt"  # caption; for a negative sample, the prompt that made it
META_MEMBER = "json"
# Optional cached text conditioning (supir/text_cache.py): float16 .npy arrays of the training prompt's
# SDXL token embeddings (77 x 2048) and pooled embedding (1280); `text_encoder` in the json names the weights.
TEXT_EMBEDS_MEMBER = "txtemb.npy"
TEXT_POOLED_MEMBER = "txtpool.npy"

# Fields of the `json` member. Values may be null where the catalog had nothing.
META_FIELDS = (
    "image_id",  # hex SHA-256 of the source file (for a negative: of the source image)
    "negative_id",  # hex SHA-256 of the negative image; null for a positive sample
    "source",
    "is_negative",
    "quality",  # {signal: value} from the catalog
    "caption_model",
    "degradation",  # the Real-ESRGAN recipe that made lq.png (null with --lq none)
    "seed",  # the global seed: recipe = sample_recipe(preset(p), rng_for(seed, __key__))
    "crop_box",  # [left, top, right, bottom] in the (EXIF-oriented) original
    "original_size",  # [width, height]
    "spec_version",
)

# Fields present only in some shards: `text_encoder` (identity of the encoders that made txtemb/txtpool).
OPTIONAL_META_FIELDS = ("text_encoder",)

_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def is_valid_key(key: str) -> bool:
    """A webdataset key: no dots (they split extensions) and no slashes."""
    return bool(_KEY_RE.match(key))


def shard_name(name: str, split: str, index: int) -> str:
    """Deterministic shard file name: ``NAME-{split}-{000000}.tar``."""
    return f"{name}-{split}-{index:06d}.tar"


MANIFEST_SUFFIX = ".manifest.json"  # `NAME.manifest.json` next to the tars lists every shard and its checksum
SPLITS = ("train", "val")


def manifest_name(name: str) -> str:
    return f"{name}{MANIFEST_SUFFIX}"


def split_of(image_id: str, val_fraction: float) -> str:
    """Train/val split from a hash of ``image_id`` alone: stable as the dataset grows and across seeds.

    A negative sample follows its source image, so no val image leaks into train through its negative.
    """
    import hashlib

    u = int.from_bytes(hashlib.sha256(f"split:{image_id}".encode()).digest()[:8], "little") / 2**64
    return "val" if u < val_fraction else "train"


def sample_key(image_id: str, negative_id: str | None = None, repeat: int = 0) -> str:
    """The sample's ``__key__``: the image id (``neg-<negative_id>`` for a negative), ``-rN`` for repeat N."""
    key = f"neg-{negative_id}" if negative_id else image_id
    return f"{key}-r{repeat}" if repeat else key
