"""Defensive image decoding for ingest: header first, then a reduced-size decode for analysis.

Every failure becomes a :class:`Rejected` with a reason code users can count:
``corrupt`` (the format is recognised but the data is broken, or the file is empty),
``truncated`` (the data ends early), ``unsupported`` (not an image we can use: unknown format,
animation, exotic mode), ``too_small`` (short side < min_side), ``too_large`` (over max_pixels:
decompression bombs are refused from the header, before any pixel is decoded).
"""

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from supir.image_io import to_rgb8

# We check sizes ourselves (from the header, against --max-pixels) before decoding anything.
Image.MAX_IMAGE_PIXELS = None
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

ANALYSIS_MIN_SIDE = 512  # the analysis image keeps at least this many pixels on its short side
# Never reduce more than 2x: a blur or a 4x down-up applied at full size must still show in the finest
# octave of the analysis image (at 1/4 a 4x down-up of a 2048 px photo is a clean 512 px photo).
MAX_ANALYSIS_SCALE = 2
_EXIF_ORIENTATION = 0x0112


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = "", header: "Header | None" = None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.header = header  # what the header said, when it could be read


@dataclass
class Header:
    format: str
    mode: str  # the original mode, before any conversion
    width: int  # after EXIF orientation
    height: int
    orientation: int
    n_frames: int


@dataclass
class Decoded:
    header: Header
    pixels: np.ndarray  # HxWx3 uint8 in `order`, EXIF-oriented, reduced by `scale`
    scale: int  # analysis image = original / scale (1, 2, 4 or 8)
    qtables: dict[int, list[int]] | None  # JPEG quantisation tables (natural order), None otherwise
    order: str = "RGB"  # channel order of `pixels`: "RGB", or "BGR" from OpenCV's decoder (no swap pass)

    @property
    def rgb(self) -> np.ndarray:
        return self.pixels if self.order == "RGB" else np.ascontiguousarray(self.pixels[..., ::-1])


def _open(data: bytes) -> Image.Image:
    if not data:
        raise Rejected("corrupt", "empty file")
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise Rejected("unsupported", "not a recognised image format") from None
    except Image.DecompressionBombError as exc:  # pragma: no cover - MAX_IMAGE_PIXELS is None
        raise Rejected("too_large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise Rejected("corrupt", f"unreadable header: {exc}") from None


def read_header(img: Image.Image) -> Header:
    """Size, mode and format from the header alone (no pixel decoding)."""
    width, height = img.size
    try:
        orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1) or 1)
    except Exception:  # broken EXIF must not lose the image
        orientation = 1
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Header(
        format=(img.format or "UNKNOWN").upper(),
        mode=img.mode,
        width=width,
        height=height,
        orientation=orientation,
        n_frames=int(getattr(img, "n_frames", 1) or 1),
    )


def check_size(header: Header, min_side: int, max_pixels: int) -> None:
    if header.width * header.height > max_pixels:
        raise Rejected("too_large", f"{header.width}x{header.height} exceeds {max_pixels} pixels")
    if min(header.width, header.height) < min_side:
        raise Rejected("too_small", f"{header.width}x{header.height}: short side < {min_side}")
    if header.n_frames > 1:
        raise Rejected("unsupported", f"animated image ({header.n_frames} frames)")


def analysis_scale(width: int, height: int, min_side: int = ANALYSIS_MIN_SIDE,
                   max_scale: int = MAX_ANALYSIS_SCALE) -> int:
    """Largest power-of-two reduction (≤ ``max_scale``, at most 8: JPEG DCT scaling) keeping ``min_side`` px."""
    scale = 1
    while scale < min(max_scale, 8) and min(width, height) // (scale * 2) >= min_side:
        scale *= 2
    return scale


def _qtables(img: Image.Image) -> dict[int, list[int]] | None:
    tables = getattr(img, "quantization", None)
    if not tables:
        return None
    return {int(k): list(v) for k, v in tables.items()}


def decode(data: bytes, min_side: int, max_pixels: int, analysis_min_side: int = ANALYSIS_MIN_SIDE) -> Decoded:
    """Header checks, then an EXIF-oriented 8-bit RGB decode reduced for analysis.

    JPEGs are reduced inside the decoder (DCT scaling via ``draft``), so a 12 MP photo costs about a
    quarter of a full decode; other formats are decoded fully and reduced with area averaging.
    """
    img = _open(data)
    header = read_header(img)
    try:
        return _decode_reduced(data, img, header, min_side, max_pixels, analysis_min_side)
    except Rejected as rej:
        rej.header = header
        raise


_CV_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
               8: cv2.IMREAD_REDUCED_COLOR_8}


def orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (2..8) the way PIL's ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        return rgb[:, ::-1]
    if orientation == 3:
        return rgb[::-1, ::-1]
    if orientation == 4:
        return rgb[::-1]
    if orientation == 5:
        return rgb.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(rgb, -1)
    if orientation == 7:
        return rgb[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(rgb, 1)
    return rgb


def _jpeg_fast_path(data: bytes, img: Image.Image, header: Header, scale: int) -> np.ndarray | None:
    """Reduced JPEG decode with OpenCV's libjpeg-turbo (about 30% faster than PIL's ``draft``), in BGR.

    Only for complete (EOI-terminated) RGB/grey streams: OpenCV fills a truncated file with grey
    instead of failing, so anything else takes the PIL path, which reports truncation.
    """
    if header.format != "JPEG" or img.mode not in ("RGB", "L") or data[-2:] != b"\xff\xd9":
        return None
    flags = _CV_REDUCED[scale] | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if bgr is None:
        return None
    return np.ascontiguousarray(orient(bgr, header.orientation))  # BGR: the analysis reads either order


def _decode_reduced(data: bytes, img: Image.Image, header: Header, min_side: int, max_pixels: int,
                    analysis_min_side: int) -> Decoded:
    check_size(header, min_side, max_pixels)
    scale = analysis_scale(header.width, header.height, analysis_min_side)
    qtables = _qtables(img) if header.format == "JPEG" else None
    fast = _jpeg_fast_path(data, img, header, scale)
    if fast is not None:
        return Decoded(header, _finish_reduction(fast, header, scale), scale, qtables, order="BGR")
    try:
        if header.format == "JPEG" and scale > 1 and img.mode in ("RGB", "L", "CMYK"):
            raw_w, raw_h = img.size
            img.draft(img.mode, (raw_w // scale, raw_h // scale))
        img.load()
        oriented = ImageOps.exif_transpose(img) if header.orientation != 1 else img
        rgb = to_rgb8(oriented)
    except Rejected:
        raise
    except OSError as exc:
        msg = str(exc)
        reason = "truncated" if "truncated" in msg or "premature" in msg.lower() else "corrupt"
        raise Rejected(reason, msg) from None
    except (SyntaxError, ValueError, EOFError, MemoryError, Image.DecompressionBombError) as exc:
        raise Rejected("corrupt", f"{type(exc).__name__}: {exc}") from None
    except Exception as exc:  # a decoder bug on hostile input must not kill the run
        raise Rejected("unsupported", f"{type(exc).__name__}: {exc}") from None
    return Decoded(header, _finish_reduction(rgb, header, scale), scale, qtables)


def _finish_reduction(rgb: np.ndarray, header: Header, scale: int) -> np.ndarray:
    # The DCT scaling may have reduced less than asked (or rounded up); finish with an integer-factor
    # area average after cropping the remainder: resampling by a non-integer factor (770 -> 769 px)
    # blends neighbouring pixels and hides noise and JPEG blocking from pipelines.ingest.quality.
    target_w, target_h = header.width // scale, header.height // scale
    if rgb.shape[1] != target_w or rgb.shape[0] != target_h:
        factor = max(1, min(rgb.shape[1] // target_w, rgb.shape[0] // target_h))
        rgb = rgb[: target_h * factor, : target_w * factor]
        if factor > 1:
            rgb = cv2.resize(rgb, (target_w, target_h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def decode_full(data: bytes) -> np.ndarray:
    """Full-resolution EXIF-oriented 8-bit RGB (for stages that need every pixel, e.g. shard)."""
    img = _open(data)
    header = read_header(img)
    img.load()
    if header.orientation != 1:
        img = ImageOps.exif_transpose(img)
    return to_rgb8(img)
