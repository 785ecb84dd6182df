"""pipelines.ingest.best_copy and decide: of a photo and its degraded copies, the clean one is kept.

Real photos at their native sizes: scikit-image's (300..512 px short side, always installed) and, where
scripts/setup_system.sh installed them, Debian wallpaper photos area-reduced to 1024 and 2048 px.
"""

import io
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from catalogs.catalog import Catalog
from pipelines.devtools.demo_corpus import load_photo
from pipelines.ingest.best_copy import Copy, compare, rank_group
from pipelines.ingest.decode import decode
from pipelines.ingest.quality import analysis_luma, estimate_jpeg_quality

CALIBRATION = Path(__file__).parents[2] / "pipelines" / "configs" / "calibration_images.yaml"
KINDS = ("blur3", "jpeg10", "noise25", "downup4", "crop")


def _jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def degraded_copies(rgb: np.ndarray, seed: int = 0) -> dict[str, bytes]:
    """The clean photo (JPEG q95) and the five degraded copies of the issue, as files."""
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(seed)
    noisy = np.clip(rgb + rng.standard_normal(rgb.shape, dtype=np.float32) * 25, 0, 255).round().astype(np.uint8)
    small = cv2.resize(rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
    return {
        "clean": _jpeg(rgb),
        "blur3": _jpeg(cv2.GaussianBlur(rgb, (0, 0), 3.0)),
        "jpeg10": _jpeg(rgb, 10),
        "noise25": _jpeg(noisy),
        "downup4": _jpeg(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)),
        "crop": _jpeg(rgb[h // 20 : h - h // 20, w // 6 :]),  # 10 % off the height, 17 % off the width
    }


def _copy(name: str, data: bytes) -> tuple[Copy, np.ndarray]:
    d = decode(data, 0, 1 << 40)
    q = estimate_jpeg_quality(d.qtables) if d.qtables else None
    return Copy(name, d.header.width, d.header.height, q), analysis_luma(d.pixels, d.order)


def _photos() -> list[tuple[str, np.ndarray]]:
    photos = [(n, load_photo(n)) for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")]
    if CALIBRATION.exists():
        listing = yaml.safe_load(CALIBRATION.read_text())
        root = Path(listing["root"])
        for rel in listing["photo"][:4]:
            if (root / rel).exists():
                rgb = np.asarray(Image.open(root / rel).convert("RGB"))
                for side in (1024, 2048):
                    if min(rgb.shape[:2]) >= side:
                        f = side / min(rgb.shape[:2])
                        size = (round(rgb.shape[1] * f), round(rgb.shape[0] * f))
                        photos.append((f"{Path(rel).stem}@{side}", cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)))
    return photos


@pytest.mark.parametrize("name,rgb", _photos(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_clean_photo_wins_every_comparison_and_the_group_in_any_order(name, rgb):
    files = degraded_copies(rgb)
    members = [_copy(kind, data) for kind, data in files.items()]
    clean, clean_luma = members[0]
    for (copy, luma), kind in zip(members[1:], KINDS):
        assert compare(clean, copy, clean_luma, luma) == 1, (name, kind)
        assert compare(copy, clean, luma, clean_luma) == -1, (name, kind)  # antisymmetric
    rng = random.Random(name)
    for _ in range(3):
        shuffled = members[:]
        rng.shuffle(shuffled)
        order = rank_group([c for c, _ in shuffled], [luma for _, luma in shuffled])
        assert shuffled[order[0]][0].image_id == "clean", name


def test_a_model_score_ranks_first_and_equal_pictures_prefer_more_pixels():
    rgb = load_photo("astronaut.png")
    a, la = _copy("a", _jpeg(rgb))
    b, lb = _copy("b", _jpeg(cv2.resize(rgb, (400, 400), interpolation=cv2.INTER_AREA)))
    assert compare(a, b, la, lb) == 1  # the same picture, more pixels
    scored_a, scored_b = Copy("a", a.width, a.height, a.jpeg_quality, 0.2), Copy("b", b.width, b.height, b.jpeg_quality, 0.9)
    assert compare(scored_a, scored_b, la, lb) == -1


def test_ingest_keeps_the_clean_copy_whatever_the_file_names(tmp_path, ray_cluster, run_cli):
    rgb = load_photo("coffee.png")  # 600x400, native
    files = degraded_copies(rgb)
    names = list(files)
    random.Random(7).shuffle(names)  # the clean copy gets a random place in the path order
    folder = tmp_path / "in"
    folder.mkdir()
    for i, kind in enumerate(names):
        (folder / f"{i:02d}.jpg").write_bytes(files[kind])
    run_cli(tmp_path / "root", "ingest", folder, "--min-side", "300")
    rows = Catalog(tmp_path / "root").query("SELECT path, status, reason, duplicate_of, image_id FROM images").to_pylist()
    by_kind = {names[int(Path(r["path"]).stem)]: r for r in rows}
    assert by_kind["clean"]["status"] == "accepted", by_kind["clean"]
    for kind in KINDS:
        row = by_kind[kind]
        # a crop that moves the perceptual hash by more than --near-dup-distance is another picture
        assert row["status"] == "rejected" or kind == "crop", (kind, row)
        if row["reason"] == "near_duplicate":
            assert row["duplicate_of"] == by_kind["clean"]["image_id"], (kind, row)
