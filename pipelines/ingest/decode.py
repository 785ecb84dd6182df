"""Defensive image decoding for ingest: header first, then a reduced-size decode for analysis.

Every failure becomes a :class:`Rejected` with a reason code users can count:
``corrupt`` (the format is recognised but the data or the container is broken, the size is
impossible, or the file is empty), ``truncated`` (the data ends early, or an end marker the
reference decoder requires is missing), ``unsupported`` (not an image we can use: unknown format,
a non-image file, animation, exotic mode), ``too_small`` (short side < min_side), ``too_large``
(over max_pixels: decompression bombs, the frames, layers and entries inside containers included,
are refused from the headers, before any pixel is allocated). The checks themselves live in
:mod:`supir.image_io`, the one bytes→RGB rule every stage shares.
"""

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps

from supir.image_io import (
    MAX_SIDE,
    Rejected,
    check_declared,
    load,
    open_image,
    orientation,
    pixel_budget,
    reason_for,
    to_rgb8,
)

__all__ = ["Decoded", "Header", "Rejected", "analysis_scale", "decode"]

ANALYSIS_MIN_SIDE = 512  # the analysis image keeps at least this many pixels on its short side
_SINGLE_IMAGE_FORMATS = {"PSD"}  # PSD "frames" are layers: the composite is the image


@dataclass
class Header:
    format: str
    mode: str  # the original mode, before any conversion
    width: int | None  # after EXIF orientation; None when the header's size is impossible
    height: int | None
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


def read_header(img: Image.Image) -> Header:
    """Size, mode, format and frame count from the header alone (no pixel decoding).

    The EXIF orientation is read here except for PNGs, whose EXIF chunk may follow the pixels
    (Pillow would decode them to find it): theirs is read after the checks, by :func:`_orient_header`.
    """
    width, height = img.size
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        width = height = None
    fmt = (img.format or "UNKNOWN").upper()
    header = Header(format=fmt, mode=img.mode, width=width, height=height, orientation=1, n_frames=1)
    if fmt not in _SINGLE_IMAGE_FORMATS:
        try:
            header.n_frames = int(getattr(img, "n_frames", 1) or 1)
        except Exception as exc:  # a frame table that cannot be walked is a broken container
            raise Rejected(reason_for(exc), f"frames: {type(exc).__name__}: {exc}", header) from None
    if fmt != "PNG" or "exif" in img.info:
        _orient_header(header, img)
    return header


def _orient_header(header: Header, img: Image.Image) -> None:
    header.orientation = orientation(img)
    if header.orientation in (5, 6, 7, 8) and header.width is not None:
        header.width, header.height = header.height, header.width


def check_size(header: Header, img: Image.Image, data: bytes, min_side: int, max_pixels: int) -> None:
    """Refusals from the headers, the cheap and the certain first: size, container, short side, frames."""
    if header.width is None:
        raise Rejected("corrupt", "impossible size in the header")
    if header.width * header.height > max_pixels:
        raise Rejected("too_large", f"{header.width}x{header.height} exceeds {max_pixels} pixels")
    check_declared(img, data, max_pixels)  # inner frames, layers, pages; the container's own structure
    if min(header.width, header.height) < min_side:
        raise Rejected("too_small", f"{header.width}x{header.height}: short side < {min_side}")
    if header.n_frames > 1:
        raise Rejected("unsupported", f"animated image ({header.n_frames} frames)")


def analysis_scale(width: int, height: int, min_side: int = ANALYSIS_MIN_SIDE) -> int:
    """Largest power-of-two reduction (≤ 8, the JPEG DCT scaling limit) keeping ``min_side`` pixels."""
    scale = 1
    while scale < 8 and min(width, height) // (scale * 2) >= min_side:
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
    Raises :class:`Rejected` (and nothing else) for any input.
    """
    with pixel_budget(max_pixels):
        img = open_image(data, max_pixels)
        header = None
        try:
            header = read_header(img)
            check_size(header, img, data, min_side, max_pixels)
            return _decode_reduced(data, img, header, analysis_min_side)
        except Rejected as rej:
            rej.header = rej.header or header
            raise
        except Exception as exc:  # a decoder bug on hostile input must not kill the run
            raise Rejected(reason_for(exc), f"{type(exc).__name__}: {exc}", header) from None


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


def _decode_reduced(data: bytes, img: Image.Image, header: Header, analysis_min_side: int) -> Decoded:
    scale = analysis_scale(header.width, header.height, analysis_min_side)
    qtables = _qtables(img) if header.format == "JPEG" else None
    fast = _jpeg_fast_path(data, img, header, scale)
    if fast is not None:
        return Decoded(header, _finish_reduction(fast, header, scale), scale, qtables, order="BGR")
    if header.format == "JPEG" and scale > 1 and img.mode in ("RGB", "L", "CMYK"):
        raw_w, raw_h = img.size
        img.draft(img.mode, (raw_w // scale, raw_h // scale))
    load(img)
    if header.format == "PNG" and "exif" not in img.info:
        _orient_header(header, img)  # the EXIF chunk after the pixels is known only now
    oriented = ImageOps.exif_transpose(img) if header.orientation != 1 else img
    rgb = to_rgb8(oriented)
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
