"""A tiny catalog for the shard/verify/reader tests: real photo files + `scans`, `captions`, `negatives` rows.

Until ingest/caption/negatives run in these tests, the rows are written the way those stages write
them (lake parts + refresh), so the shard stage sees exactly what it sees in production.
"""

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from catalogs.catalog import Catalog
from catalogs.lake import write_part
from schemas.runs import utc_now
from schemas.tables import QUALITY_SIGNALS
from tests.scan_rows import scan_row

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def _photo(name: str, size: tuple[int, int]) -> Image.Image:
    array = getattr(skdata, name)()
    return Image.fromarray(np.ascontiguousarray(array[..., :3])).resize(size, Image.Resampling.LANCZOS)


def build_catalog(root: Path, n_images: int = 12, n_negatives: int = 3, captions: bool = True) -> list[dict]:
    """Write ``n_images`` photos (96–160 px, jpg/png, two sources) and their catalog rows; returns scan rows."""
    photos = root / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    scans, caption_rows = [], []
    for i in range(n_images):
        w, h = int(rng.integers(96, 161)), int(rng.integers(96, 161))
        img = _photo(PHOTOS[i % len(PHOTOS)], (w, h))
        if i % 5 == 4:  # one in five already square at the test GT size: passes through untouched
            img = _photo(PHOTOS[i % len(PHOTOS)], (96, 96))
        fmt = "PNG" if i % 3 == 0 else "JPEG"
        path = photos / f"img_{i:03d}.{'png' if fmt == 'PNG' else 'jpg'}"
        img.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        row = scan_row(path, "div2k" if i % 2 == 0 else "ffhq", phash=i, config_hash="test")
        image_id = row["image_id"]
        row.update({name: float(rng.random()) for name in QUALITY_SIGNALS})
        scans.append(row)
        if captions and i % 4 != 3:  # some images stay uncaptioned
            caption_rows.append(
                {"image_id": image_id, "caption": f"a photo number {i}", "model": "tiny-llava", "prompt": "p",
                 "n_tokens": 4, "flag": None, "run_id": "test-caption", "created_at": utc_now()}  # fmt: skip
            )
    write_part(root, "scans", scans, name="test-scans")
    if caption_rows:
        write_part(root, "captions", caption_rows, name="test-captions")
    negatives = []
    for j in range(n_negatives):
        src = scans[j]
        img = _photo(PHOTOS[j], (112, 112))
        path = root / "negatives" / f"neg_{j:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.quantize(16).convert("RGB").save(path)  # "negative quality": posterised
        negatives.append(
            {"negative_id": hashlib.sha256(path.read_bytes()).hexdigest(), "image_id": src["image_id"],
             "path": f"negatives/{path.name}", "prompt": "oil painting, cartoon, blur", "strength": 0.5,
             "steps": 2, "guidance": 7.5, "seed": j, "model": "tiny-sdxl", "width": 112, "height": 112,
             "run_id": "test-negatives", "created_at": utc_now()}  # fmt: skip
        )
    if negatives:
        write_part(root, "negatives", negatives, name="test-negatives")
    Catalog(root).refresh()
    return scans
