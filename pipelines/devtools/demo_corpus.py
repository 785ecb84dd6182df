"""A small, deterministic corpus of real photos, degraded copies and broken files, with expected outcomes.

Real photos: the colour photographs that ship with scikit-image (no download), upscaled to the
corpus' ``min_side`` (they are 300..1400 px, the paper wants ≥ 1024). Degraded copies apply one of
the four calibration degradations AFTER the upscale, at full size: Gaussian blur σ=2, JPEG quality
15, Gaussian noise σ=20, 4× down-then-up-scaling. Hard cases exercise every reason code of ingest.

``make_demo_corpus`` returns a manifest: relative path -> expected outcome: 'accepted', a reason code
('truncated', 'low_quality:sharpness', ...), or alternatives joined by '|' where we cannot promise one
('low_quality' alone means any signal). `outcome_matches(expected, outcome)` checks an outcome.
Duplicates follow ingest's ranking: of two exact copies the smaller path is kept; a re-encode at lower
JPEG quality or a smaller resize loses to its original. The degraded copies' reasons are the
calibrated ones (docs/quality.md) at ``min_side=1024``; at other sizes they are labelled loosely.
"""

import io
import json
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import click
import cv2
import numpy as np
from PIL import Image

# scikit-image's colour photographs (motorcycle_right is the stereo partner of motorcycle_left: a
# near duplicate at Hamming distance 4, so the corpus leaves it out and calibration keeps it).
PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
)
DEGRADATIONS = ("blur", "jpeg", "noise", "downup")
# The reason each degradation must produce (JUDGE_ORDER in pipelines/ingest/quality.py decides ties).
EXPECTED_DEGRADED = {
    "blur": "low_quality:sharpness",
    "jpeg": "low_quality:jpeg_quality",
    "noise": "low_quality:noise_sigma",
    "downup": "low_quality:sharpness",
}
BLUR_SIGMA = 2.0
JPEG_QUALITY = 15
NOISE_SIGMA = 20.0
DOWNUP_FACTOR = 4


def _skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def load_photo(name: str) -> np.ndarray:
    """One of scikit-image's sample photographs as HxWx3 uint8 RGB (read from the installed package)."""
    with Image.open(_skimage_data_dir() / name) as img:
        return np.asarray(img.convert("RGB"))


def upscale_to(rgb: np.ndarray, min_side: int) -> np.ndarray:
    """Lanczos upscale so the short side is exactly ``min_side`` (never downscales)."""
    h, w = rgb.shape[:2]
    if min(h, w) >= min_side:
        return rgb
    f = min_side / min(h, w)
    size = (max(min_side, round(w * f)), max(min_side, round(h * f)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_LANCZOS4)


def degrade(rgb: np.ndarray, kind: str, seed: int = 0) -> np.ndarray:
    """Apply one calibration degradation (except 'jpeg', which is an encoding: see `encode`)."""
    if kind == "blur":
        return cv2.GaussianBlur(rgb, (0, 0), BLUR_SIGMA)
    if kind == "noise":
        noise = np.random.default_rng(seed).standard_normal(rgb.shape, dtype=np.float32) * NOISE_SIGMA
        return np.clip(rgb + noise, 0, 255).round().astype(np.uint8)
    if kind == "downup":
        h, w = rgb.shape[:2]
        small = cv2.resize(rgb, (w // DOWNUP_FACTOR, h // DOWNUP_FACTOR), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    if kind == "jpeg":
        return rgb
    raise ValueError(f"unknown degradation {kind!r}; known: {DEGRADATIONS}")


def encode(rgb: np.ndarray | Image.Image, fmt: str = "JPEG", **params) -> bytes:
    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    if fmt == "PNG":
        params.setdefault("compress_level", 1)  # 5x faster than the default; size does not matter here
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def degraded_bytes(rgb: np.ndarray, kind: str, seed: int = 0) -> bytes:
    """The file a degradation produces: JPEG q15 for 'jpeg', JPEG q95 of the degraded pixels otherwise."""
    quality = JPEG_QUALITY if kind == "jpeg" else 95
    return encode(degrade(rgb, kind, seed), "JPEG", quality=quality)


def outcome_matches(expected: str, outcome: str) -> bool:
    """True if ``outcome`` (e.g. 'low_quality:sharpness') is one of the '|'-separated alternatives."""
    for alt in expected.split("|"):
        if outcome == alt or (alt == "low_quality" and outcome.startswith("low_quality:")):
            return True
    return False


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def huge_png_header(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG signature and IHDR claiming width x height, with no pixel data (a decompression bomb's face)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IEND", b"")


def huge_bmp_header(width: int = 30000, height: int = 30000) -> bytes:
    """A BMP file and info header for a width x height 24-bit image, without the pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    size = 14 + len(info) + width * height * 3
    return b"BM" + struct.pack("<IHHI", size & 0xFFFFFFFF, 0, 0, 14 + len(info)) + info


def _exif_rotated_jpeg(upright: np.ndarray) -> bytes:
    """JPEG storing ``upright`` turned 90° counter-clockwise, with EXIF orientation 6 to turn it back."""
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))  # 90° counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    return encode(stored, "JPEG", quality=95, exif=exif.tobytes())


def _animated(frames: list[np.ndarray], fmt: str) -> bytes:
    # Greyscale frames: GIF stores them without a (slow) colour quantisation.
    images = [Image.fromarray(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)) for f in frames]
    params = {"quality": 50, "method": 0} if fmt == "WEBP" else {}
    return encode(images[0], fmt, save_all=True, append_images=images[1:], duration=200, loop=0, **params)


def make_demo_corpus(out_dir, seed: int = 0, min_side: int = 1024, broken: bool = True,
                     degraded: bool = True) -> dict[str, str]:
    """Write the corpus under ``out_dir``; return {relative path: expected outcome}."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    photos = {name.split(".")[0]: upscale_to(load_photo(name), min_side)
              for name in PHOTOS if name != "motorcycle_right.png"}
    mirror = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in photos.items()}  # distinct content
    files: dict[str, bytes] = {}
    expected: dict[str, str] = {}

    def add(path: str, data: bytes, outcome: str) -> None:
        files[path], expected[path] = data, outcome

    formats = {"coffee": ("PNG", "png", {}), "rocket": ("WEBP", "webp", {"quality": 95}),
               "hubble_deep_field": ("TIFF", "tif", {"compression": "tiff_lzw"})}
    # The Hubble field's own sensor noise, upscaled, reads as sigma ~7 at full resolution: it is noisy.
    noisy = {"hubble_deep_field": "low_quality:noise_sigma"}
    for name, rgb in photos.items():
        fmt, ext, params = formats.get(name, ("JPEG", "jpg", {"quality": 95}))
        add(f"photos/{name}.{ext}", encode(rgb, fmt, **params), noisy.get(name, "accepted"))
    add("photos/retina_mirror.bmp", encode(mirror["retina"], "BMP"), "accepted")
    # Exact copy (same bytes): "photos/coffee.png" < "photos/copies/..." so the original is kept.
    add("photos/copies/coffee.png", files["photos/coffee.png"], "duplicate")
    # Near copies: the same pixels re-encoded at q90 (ranks below the q95 original), and a 2% smaller resize.
    add("photos/copies/chelsea_q90.jpg", encode(photos["chelsea"], "JPEG", quality=90), "near_duplicate")
    h, w = photos["retina"].shape[:2]
    if round(min(h, w) * 0.98) >= min_side:
        smaller = cv2.resize(photos["retina"], (round(w * 0.98), round(h * 0.98)), interpolation=cv2.INTER_AREA)
        add("photos/copies/retina_98pct.jpg", encode(smaller, "JPEG", quality=95), "near_duplicate")

    if degraded:
        loose = min_side != 1024  # blur and down-up are calibrated at 1024 px only
        for i, (name, rgb) in enumerate(photos.items()):
            for kind in DEGRADATIONS:
                outcome = EXPECTED_DEGRADED[kind]
                if loose and kind in ("blur", "downup"):
                    outcome = "low_quality|near_duplicate|accepted"
                    for path in [p for p in expected if p.startswith(f"photos/{name}.")]:
                        expected[path] = "accepted|near_duplicate"  # an accepted degraded copy may win
                add(f"degraded/{name}_{kind}.jpg", degraded_bytes(rgb, kind, seed * 1000 + i), outcome)

    if broken:
        jpeg = encode(photos["astronaut"], "JPEG", quality=95)
        add("hard/empty.jpg", b"", "corrupt")
        add("hard/truncated.jpg", jpeg[: len(jpeg) * 3 // 5], "truncated")
        add("hard/random_bytes.jpg", rng.bytes(50_000), "unsupported")
        add("hard/png_named.jpg", encode(mirror["chelsea"], "PNG"), "accepted")
        add("hard/huge_header.png", huge_png_header(), "too_large")
        add("hard/huge_header.bmp", huge_bmp_header(), "too_large")
        # Naive CMYK->RGB (no ICC profile) shifts colours; quality may or may not object.
        add("hard/cmyk.jpg", encode(Image.fromarray(mirror["coffee"]).convert("CMYK"), "JPEG", quality=95),
            "accepted|low_quality")
        rgb48 = cv2.cvtColor(mirror["rocket"], cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
        add("hard/rgb_16bit.png", cv2.imencode(".png", rgb48)[1].tobytes(), "accepted")
        gray16 = Image.fromarray(cv2.cvtColor(photos["rocket"], cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
        add("hard/gray_16bit.png", encode(gray16, "PNG"), "low_quality:colorfulness")
        palette = Image.fromarray(mirror["astronaut"]).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        add("hard/palette.png", encode(palette, "PNG"), "accepted|low_quality")
        rgba = np.dstack([mirror["motorcycle_left"], np.full(mirror["motorcycle_left"].shape[:2], 255, np.uint8)])
        rgba[: rgba.shape[0] // 8, :, 3] = 128  # a half-transparent band, composited on white
        add("hard/rgba.png", encode(rgba, "PNG"), "accepted")
        add("hard/grayscale.jpg", encode(Image.fromarray(photos["hubble_deep_field"]).convert("L"), "JPEG",
                                         quality=95), "low_quality:noise_sigma")  # noise is judged first
        # the same pixels as the Hubble photo once turned upright: the same verdict
        add("hard/exif_rotated.jpg", _exif_rotated_jpeg(mirror["hubble_deep_field"]), "low_quality:noise_sigma")
        frames = [photos["chelsea"][:min_side, :min_side], mirror["chelsea"][:min_side, :min_side]]
        add("hard/animated.gif", _animated(frames, "GIF"), "unsupported")
        add("hard/animated.webp", _animated(frames, "WEBP"), "unsupported")
        add("hard/too_small.jpg", encode(load_photo("astronaut.png")[: min_side // 2, : min_side // 2], "JPEG",
                                         quality=95), "too_small")

    for path, data in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return dict(sorted(expected.items()))


@click.command("make-demo-corpus")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--min-side", type=int, default=1024, show_default=True, help="Short side the photos are upscaled to.")
@click.option("--broken/--no-broken", default=True, show_default=True, help="Include the hard/broken files.")
@click.option("--degraded/--no-degraded", default=True, show_default=True, help="Include the degraded copies.")
@click.option("--manifest", "manifest_path", default=None, help="Write {path: expected outcome} JSON here "
              "(outside OUT_DIR, or ingest would scan it too).")
@click.option("--clean", is_flag=True, help="Empty OUT_DIR first.")
def make_demo_corpus_command(out_dir, seed, min_side, broken, degraded, manifest_path, clean):
    """Write a small corpus of real photos, degraded copies and broken files, with expected outcomes."""
    from rich.console import Console
    from rich.table import Table

    if clean and Path(out_dir).exists():
        shutil.rmtree(out_dir)
    manifest = make_demo_corpus(out_dir, seed=seed, min_side=min_side, broken=broken, degraded=degraded)
    if manifest_path:
        Path(manifest_path).write_text(json.dumps(manifest, indent=1) + "\n")
    table = Table(title=f"demo corpus: {len(manifest)} files in {out_dir}")
    table.add_column("expected outcome")
    table.add_column("files", justify="right")
    for outcome, count in sorted(Counter(manifest.values()).items()):
        table.add_row(outcome, str(count))
    Console().print(table)
