import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from skimage import data

from pipelines.ingest.decode import Rejected, analysis_scale, decode
from supir.image_io import open_rgb

MIN, MAX = 256, 100_000_000


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width×height but which carries one tiny IDAT: a decompression bomb's header."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


PHOTO = Image.fromarray(data.astronaut())


def _reason(blob, **kw):
    with pytest.raises(Rejected) as info:
        decode(blob, kw.get("min_side", MIN), kw.get("max_pixels", MAX))
    return info.value.reason


def test_bad_inputs_get_reason_codes():
    jpeg = _encode(PHOTO, "JPEG", quality=90)
    assert _reason(b"") == "corrupt"
    assert _reason(np.random.default_rng(0).bytes(5000)) == "unsupported"
    assert _reason(jpeg[: len(jpeg) // 2]) == "truncated"
    assert _reason(jpeg, min_side=1024) == "too_small"


def test_huge_header_rejected_without_decoding():
    with pytest.raises(Rejected) as info:  # Pillow's own guard, set from the budget, refuses it at open
        decode(_png_header_only(30000, 30000), MIN, MAX)
    assert info.value.reason == "too_large" and "900000000 pixels" in info.value.detail


def test_exif_rotation_swaps_reported_size():
    img = PHOTO.resize((600, 400))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW on display
    out = decode(_encode(img, "JPEG", exif=exif.tobytes()), MIN, MAX)
    assert (out.header.width, out.header.height) == (400, 600)
    assert out.rgb.shape[:2] == (600, 400)
    assert open_rgb(_encode(img, "JPEG", exif=exif.tobytes()), MAX).shape[:2] == (600, 400)


@pytest.mark.parametrize(
    "mode,fmt",
    [("CMYK", "JPEG"), ("P", "PNG"), ("RGBA", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("RGB", "WEBP"),
     ("RGB", "TIFF"), ("RGB", "BMP"), ("I;16", "PNG"), ("1", "PNG")],
)
def test_modes_and_formats_become_8bit_rgb(mode, fmt):
    if mode == "I;16":
        gray = (np.asarray(PHOTO.convert("L"), dtype=np.uint16) * 257)
        img = Image.fromarray(gray)
    else:
        img = PHOTO.convert(mode)
    out = decode(_encode(img, fmt), MIN, MAX)
    assert out.rgb.dtype == np.uint8 and out.rgb.ndim == 3 and out.rgb.shape[2] == 3
    assert out.header.format == fmt
    if mode == "I;16":  # 16-bit values scaled, not clipped: the picture survives
        ref = np.asarray(PHOTO.convert("L"), dtype=np.int16)
        assert np.abs(out.rgb[..., 0].astype(np.int16) - ref).max() <= 1
    assert out.rgb.std() > 10


def test_animated_is_unsupported():
    frames = [PHOTO.convert("P"), PHOTO.rotate(90).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert _reason(buf.getvalue()) == "unsupported"


def test_jpeg_is_reduced_in_the_decoder():
    big = PHOTO.resize((2048, 2048))
    out = decode(_encode(big, "JPEG", quality=90), 1024, MAX)
    assert out.scale == 4 and out.rgb.shape == (512, 512, 3)
    assert out.qtables is not None
    assert analysis_scale(4000, 3000) == 4 and analysis_scale(1000, 800) == 1 and analysis_scale(9000, 9000) == 8


@pytest.mark.parametrize("orientation", range(1, 9))
def test_fast_jpeg_path_matches_pil_orientation(orientation):
    from PIL import ImageOps

    img = PHOTO.resize((640, 480))
    exif = Image.Exif()
    exif[0x0112] = orientation
    blob = _encode(img, "JPEG", quality=95, exif=exif.tobytes())
    fast = decode(blob, MIN, MAX).rgb  # complete RGB JPEG: OpenCV path
    slow = decode(blob + b"\0", MIN, MAX).rgb  # trailing byte after EOI: PIL path
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(blob))).convert("RGB"))
    assert fast.shape == slow.shape == ref.shape
    assert np.abs(fast.astype(int) - ref.astype(int)).mean() < 1.0
    assert np.abs(slow.astype(int) - ref.astype(int)).mean() < 1.0
