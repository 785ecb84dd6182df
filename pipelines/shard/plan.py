"""Planning `supir-data shard`: which samples go into which shard, decided in the driver before any write.

Everything here is a pure function of the catalog rows and the config, so the same catalog + seed
give the same plan (and so byte-identical shards) whatever the worker count. Shard boundaries come
from an upper bound of every sample's encoded size, so `--max-size` is never exceeded.
"""

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from schemas.errors import ConfigError
from schemas.runs import derive_seed
from schemas.sample import SAMPLE_SPEC_VERSION, SPLITS, sample_key, shard_name, split_of
from schemas.tables import QUALITY_SIGNALS

TAR_MEMBER_OVERHEAD = 1024  # a 512-byte header plus up to 511 bytes of padding
TAR_END = 10240  # end-of-archive blocks padded to tarfile's record size
META_BOUND = 16384  # json member (quality, recipe, boxes): a few KB in practice
GT_FORMATS = {"png": "gt.png", "jpg": "gt.jpg", "webp": "gt.webp"}
PASSTHROUGH_FORMATS = {"JPEG": "gt.jpg", "PNG": "gt.png", "WEBP": "gt.webp"}


@dataclass(frozen=True)
class ShardConfig:
    """Options of `supir-data shard`; everything that changes shard bytes is in here (and in the digest)."""

    name: str = "supir"
    gt_size: int = 1024  # GT side in pixels; 0 keeps whole images
    crop: str = "center"  # center | random (position of the square box)
    resize: bool = True  # resize the short side to gt_size (whole scene) vs a native-resolution crop
    gt_format: str = "png"  # re-encoding format when the original cannot pass through
    gt_quality: int = 95  # jpg/webp quality
    preset: str = "supir"  # degradation preset of the precomputed LQ
    lq: str = "precomputed"  # precomputed | none (the reader degrades on the fly)
    max_size: int = 1 << 30
    max_count: int = 10000
    val_fraction: float = 0.005
    negatives_fraction: float | None = None  # None: every negative once
    source_weights: tuple[tuple[str, float], ...] = ()  # per-image inclusion rate per source; default 1
    seed: int = 0
    text_encoder: str | None = None  # SDXL diffusers folder: cache the training prompt's text embeddings

    def __post_init__(self):
        if self.gt_size < 0 or self.crop not in ("center", "random") or self.lq not in ("precomputed", "none"):
            raise ConfigError(f"bad shard options: gt_size={self.gt_size}, crop={self.crop!r}, lq={self.lq!r}")
        if self.gt_format not in GT_FORMATS:
            raise ConfigError(f"--gt-format must be one of {sorted(GT_FORMATS)}, got {self.gt_format!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.negatives_fraction is not None and not 0.0 <= self.negatives_fraction < 1.0:
            raise ConfigError(f"--negatives-fraction must be in [0, 1), got {self.negatives_fraction}")
        if self.max_count < 1 or self.max_size < 1:
            raise ConfigError("--max-count and --max-size must be positive")
        for source, weight in self.source_weights:
            if weight < 0 or not math.isfinite(weight):
                raise ConfigError(f"--source-weight {source}={weight}: a weight is a rate >= 0")

    def content(self) -> dict:
        """The options that change shard bytes (not the name or where they go)."""
        out = asdict(self)
        out.pop("name")
        out["spec_version"] = SAMPLE_SPEC_VERSION
        return out


@dataclass(frozen=True, slots=True)
class SamplePlan:
    key: str
    image_id: str
    negative_id: str | None
    path: str
    source: str | None
    is_negative: bool
    caption: str
    caption_model: str | None
    quality: tuple | None  # values in QUALITY_SIGNALS order (a tuple: millions of these live in the driver)
    width: int
    height: int
    format: str | None
    mode: str | None
    bytes: int
    crop_seed: int  # derive_seed(seed, "crop:" + key): the random crop's position


@dataclass
class ShardPlan:
    name: str
    split: str
    index: int
    samples: list[SamplePlan] = field(default_factory=list)
    digest: str = ""

    @property
    def shard(self) -> str:
        return shard_name(self.name, self.split, self.index)


def _uniform(seed: int, key: str) -> float:
    return derive_seed(seed, key) / 2**63


def repeats(rate: float, seed: int, key: str) -> int:
    """How many copies of an item at inclusion ``rate``: floor(rate), plus one with P = the fraction."""
    whole = math.floor(rate)
    return whole + (1 if _uniform(seed, f"mix:{key}") < rate - whole else 0)


def output_size(cfg: ShardConfig, width: int, height: int) -> tuple[int, int]:
    if cfg.gt_size == 0:
        return width, height
    return cfg.gt_size, cfg.gt_size


def size_bound(cfg: ShardConfig, sample: SamplePlan) -> int:
    """An upper bound of the sample's bytes in the tar (PNG/JPEG/WebP of W×H×3 stay under raw × 1.02 + 4K)."""
    w, h = output_size(cfg, sample.width, sample.height)
    encoded = int(h * (3 * w + 1) * 1.02) + 4096
    total = max(encoded, sample.bytes) + TAR_MEMBER_OVERHEAD
    if cfg.lq == "precomputed":
        total += encoded + TAR_MEMBER_OVERHEAD
    total += len(sample.caption.encode()) + TAR_MEMBER_OVERHEAD
    return total + META_BOUND + TAR_MEMBER_OVERHEAD


def _positive(cfg: ShardConfig, row: dict, repeat: int) -> SamplePlan:
    key = sample_key(row["image_id"], repeat=repeat)
    quality = tuple(row.get(name) for name in QUALITY_SIGNALS)
    return SamplePlan(
        key=key, image_id=row["image_id"], negative_id=None, path=row["path"], source=row["source"],
        is_negative=False, caption=row.get("caption") or "", caption_model=row.get("caption_model"),
        quality=quality, width=int(row["width"]), height=int(row["height"]), format=row.get("format"),
        mode=row.get("mode"), bytes=int(row.get("bytes") or 0), crop_seed=derive_seed(cfg.seed, f"crop:{key}"),
    )  # fmt: skip


def _negative(cfg: ShardConfig, row: dict, repeat: int) -> SamplePlan:
    key = sample_key(row["image_id"], negative_id=row["negative_id"], repeat=repeat)
    return SamplePlan(
        key=key, image_id=row["image_id"], negative_id=row["negative_id"], path=row["path"],
        source=row["source"], is_negative=True, caption=row.get("prompt") or "", caption_model=None,
        quality=None, width=int(row["width"]), height=int(row["height"]), format=None, mode=None,
        bytes=int(row.get("bytes") or 0), crop_seed=derive_seed(cfg.seed, f"crop:{key}"),
    )  # fmt: skip


def select_samples(cfg: ShardConfig, positives: Iterable[dict], negatives: Iterable[dict]) -> tuple[dict, dict]:
    """Samples per split after the train/val split, source weights and the negatives fraction.

    Returns ``({split: [SamplePlan]}, report)``. A source weight is a per-image inclusion rate
    (0 drops the source, 0.5 keeps about half, 2 repeats each image twice). The negatives fraction
    F sets the negatives' rate so that negatives / all ≈ F in each split.
    """
    weights = dict(cfg.source_weights)
    selected: dict[str, list[SamplePlan]] = {split: [] for split in SPLITS}
    report: dict = {"sources": {}, "negatives": {}, "too_small": 0, "uncaptioned": 0}
    for row in positives:
        split = split_of(row["image_id"], cfg.val_fraction)
        stats = report["sources"].setdefault(row["source"], {"available": 0, "weight": weights.get(row["source"], 1.0)})
        stats["available"] += 1
        w, h = int(row["width"]), int(row["height"])
        if cfg.gt_size and min(w, h) < cfg.gt_size:
            report["too_small"] += 1  # upscaling would put blur into the ground truth
            continue
        if not row.get("caption"):
            report["uncaptioned"] += 1
        for repeat in range(repeats(stats["weight"], cfg.seed, row["image_id"])):
            selected[split].append(_positive(cfg, row, repeat))

    report["unknown_sources"] = sorted(set(weights) - set(report["sources"]))
    by_split: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for row in negatives:
        if cfg.gt_size and min(int(row["width"]), int(row["height"])) < cfg.gt_size:
            report["too_small"] += 1
            continue
        by_split[split_of(row["image_id"], cfg.val_fraction)].append(row)
    for split in SPLITS:
        pool, n_pos = by_split[split], len(selected[split])
        rate = 1.0
        if cfg.negatives_fraction is not None:
            wanted = cfg.negatives_fraction * n_pos / (1.0 - cfg.negatives_fraction)
            rate = wanted / len(pool) if pool else 0.0
        for row in pool:
            for repeat in range(repeats(rate, cfg.seed, row["negative_id"])):
                selected[split].append(_negative(cfg, row, repeat))
        report["negatives"][split] = {"available": len(pool), "rate": round(rate, 6)}
    return selected, report


def pack_shards(cfg: ShardConfig, selected: dict[str, list[SamplePlan]]) -> list[ShardPlan]:
    """Order samples by a seeded hash (a deterministic shuffle) and cut shards by count and size bound."""
    plans = []
    budget = cfg.max_size - TAR_END
    for split in SPLITS:
        samples = sorted(selected[split], key=lambda s: (derive_seed(cfg.seed, f"order:{s.key}"), s.key))
        current, used = None, 0
        for sample in samples:
            bound = size_bound(cfg, sample)
            if current is None or len(current.samples) >= cfg.max_count or (current.samples and used + bound > budget):
                current, used = ShardPlan(cfg.name, split, len([p for p in plans if p.split == split])), 0
                plans.append(current)
            current.samples.append(sample)
            used += bound
    content = cfg.content()
    for plan in plans:
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode())
        for sample in plan.samples:  # the dataclass repr lists every field: cheap and exact
            digest.update(repr(sample).encode())
        plan.digest = digest.hexdigest()
    return plans


def brace_pattern(name: str, split: str, count: int) -> str | None:
    """``NAME-train-{000000..000041}.tar`` (webdataset / braceexpand syntax); None for an empty split."""
    if count == 0:
        return None
    return f"{name}-{split}-{{{0:06d}..{count - 1:06d}}}.tar"


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """``1GB`` → 10**9, ``512MiB`` → 2**29, ``1000`` → 1000 bytes."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _SIZE_UNITS:
        raise ConfigError(f"--max-size {text!r}: write a number with an optional unit (B, KB, MB, GB, MiB, GiB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def parse_weights(items: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    weights = {}
    for item in items:
        source, sep, value = item.rpartition("=")
        try:
            weights[source] = float(value)
        except ValueError:
            source = ""
        if not sep or not source:
            raise ConfigError(f"--source-weight {item!r}: write SOURCE=WEIGHT, e.g. ffhq=0.5")
    return tuple(sorted(weights.items()))
