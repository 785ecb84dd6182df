"""Thumbnails embedded in the report as ``data:`` URIs, so the HTML is one file that opens offline.

Pixels go through the project's one bytes -> RGB rule (`supir.image_io.to_rgb8`), so a thumbnail shows
what ingest judged. JPEGs are reduced inside the decoder (PIL's ``draft``, DCT scaling), which makes a
thumbnail of a 3 MP JPEG cost a few milliseconds; decoding runs on a few threads (PIL releases the GIL).
A file that cannot be read or decoded (a corrupt input, a moved file) gets no thumbnail, not an error.
"""

import base64
import io
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from pipelines.engine.sources import read_bytes
from supir.image_io import to_rgb8

THUMB_SIDE = 224  # long side in pixels; the page shows them at about half that on a 2x display
_MAX_DECODE_PIXELS = 120_000_000  # refuse to thumbnail decompression bombs (ingest's default limit is 100 MP)


def thumbnail_bytes(data: bytes, side: int = THUMB_SIDE) -> bytes:
    """JPEG bytes of the image scaled so its long side is at most ``side``."""
    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > _MAX_DECODE_PIXELS:
            raise ValueError(f"{img.width}x{img.height} is too large to thumbnail")
        img.draft("RGB", (side, side))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale
        rgb = Image.fromarray(to_rgb8(img))
    rgb.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=82)
    return out.getvalue()


def data_uri(jpeg: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64,{base64.b64encode(jpeg).decode('ascii')}"


def _one(path: str, side: int) -> str | None:
    try:
        return data_uri(thumbnail_bytes(read_bytes(path), side))
    except Exception:  # unreadable/undecodable inputs are part of any real catalog: show a placeholder
        return None


def thumbnails(paths, side: int = THUMB_SIDE, workers: int = 4) -> dict[str, str | None]:
    """path -> data URI (None when the file cannot be thumbnailed), for the distinct ``paths``."""
    unique = sorted({p for p in paths if p})
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return dict(zip(unique, pool.map(lambda p: _one(p, side), unique)))
