"""What `supir-data eval` reads: a folder (or list file) of photos, or WebDataset shards of ours.

An input is ``{image, path}``: ``image`` a stable name safe as a file name, ``path`` a file or, for a
shard sample, ``TAR::MEMBER`` (its GT member; negative-quality samples are left out: their "GT" is
an SDEdit image made to look bad). Reading goes through the project's one bytes → RGB rule.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

from PIL import Image

from pipelines.engine.sources import expand_paths, read_bytes
from schemas.errors import ConfigError, InputImageError
from schemas.sample import GT_MEMBERS, META_MEMBER
from supir.image_io import IMAGE_SUFFIXES

SHARD = "::"  # TAR::MEMBER
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _shard_inputs(tars: list[Path]) -> list[dict]:
    out = []
    for tar in tars:
        with tarfile.open(tar) as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            for name in sorted(members):
                key, _, ext = name.partition(".")
                if ext not in GT_MEMBERS:
                    continue
                meta_name = f"{key}.{META_MEMBER}"
                meta = json.loads(tf.extractfile(members[meta_name]).read()) if meta_name in members else {}
                if not meta.get("is_negative"):
                    out.append({"image": _UNSAFE.sub("_", f"{tar.stem}__{key}"), "path": f"{tar}{SHARD}{name}"})
    return out


def list_images(source: str, limit: int | None) -> list[dict]:
    """{image, path} per input photo, sorted; ``image`` is its path under ``source`` without suffix."""
    root = Path(source)
    tars = [root] if root.suffix == ".tar" else sorted(root.glob("*.tar")) if root.is_dir() else []
    found = [p for p, _ in expand_paths([source]) if p.lower().endswith(IMAGE_SUFFIXES)] if not tars else []
    images, seen = ([], set()) if not tars else (_shard_inputs(tars), set())
    for path in found:
        rel = Path(path).relative_to(root.resolve()) if root.is_dir() else Path(Path(path).name)
        name = _UNSAFE.sub("_", str(rel.with_suffix("")).replace("/", "__"))
        if name in seen:
            name = _UNSAFE.sub("_", str(rel).replace("/", "__"))
        seen.add(name)
        images.append({"image": name, "path": path})
    if not images:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or positive shard samples in {source}")
    return images[:limit] if limit else images


def load_input(path: str) -> Image.Image:
    """The RGB image of a file or a ``TAR::MEMBER``, by the one bytes → RGB rule."""
    from supir.image_io import DEFAULT_MAX_PIXELS, Rejected, open_rgb

    try:
        if SHARD in path:
            tar, member = path.split(SHARD, 1)
            with tarfile.open(tar) as tf:
                data = tf.extractfile(member).read()
        else:
            data = read_bytes(path)
        return Image.fromarray(open_rgb(data, DEFAULT_MAX_PIXELS))
    except (OSError, KeyError, Rejected) as exc:
        raise InputImageError(f"cannot read {path}: {exc}") from exc
