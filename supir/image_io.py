"""The one rule that turns image bytes into the 8-bit RGB every stage sees.

Ingest judges an image, shard crops its GT, caption and negatives feed it to a model and
`supir.restore` restores it: all of them must see the same pixels, so all of them convert here.
Transparent pixels are composited on white; 16-bit and float data keep their top 8 bits (float
is stretched to its range); palette, CMYK, gray and the other modes convert with PIL.

Every file is hostile until proven otherwise (a crawl of 20M images holds truncated files,
fuzzed headers and decompression bombs): :func:`open_image` refuses what can be refused from the
header, sub-images included (PSD layers, TIFF pages, APNG frames, ICO/ICNS entries), before a
pixel is allocated, and :func:`load` turns every decoder failure into a :class:`Rejected` with a
reason users can count. Pillow's own bomb guard stays on, set from the caller's pixel budget only
while we decode (:func:`pixel_budget`), never switched off for the whole process.
"""

import functools
import io
import warnings
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from supir.image_integrity import StructureError, check_structure, check_tiff_strips

EXIF_ORIENTATION = 0x0112
# Formats never opened: decoding EPS runs Ghostscript (a PostScript interpreter) on the file.
REFUSED_FORMATS = frozenset({"EPS"})
DEFAULT_MAX_PIXELS = 100_000_000  # ingest's --max-pixels default; later stages read accepted images with it
MAX_SIDE = 2**31 - 1  # sizes must fit the catalog's int32 columns
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")  # what a folder of images holds
_TIFF_OFFSETS = ((273, 279), (324, 325))  # (StripOffsets, StripByteCounts), (TileOffsets, TileByteCounts)


class Rejected(Exception):
    """An image refused for a counted reason: corrupt, truncated, unsupported, too_small, too_large."""

    def __init__(self, reason: str, detail: str = "", header=None):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.header = header  # what the header said, when it could be read (the caller's type)


@contextmanager
def pixel_budget(max_pixels: int):
    """Pillow's decompression-bomb guard set to ``max_pixels`` for the duration of a decode.

    Pillow raises above twice ``MAX_IMAGE_PIXELS`` (and warns above it), so half the budget makes it
    raise exactly above ``max_pixels``; it checks the sub-images it opens itself (ICO and ICNS
    entries, GIF frames), which the outer header cannot tell us about.
    """
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels / 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def reason_for(exc: BaseException) -> str:
    """The reason code for an exception a decoder raised on hostile input."""
    if isinstance(exc, Image.DecompressionBombError | MemoryError):
        return "too_large"
    if isinstance(exc, NotImplementedError):
        return "unsupported"
    if isinstance(exc, EOFError):
        return "truncated"
    msg = str(exc).lower()
    if isinstance(exc, OSError) and ("truncated" in msg or "premature" in msg or "end of file" in msg):
        return "truncated"
    return "corrupt"


def _rejected(exc: BaseException, header=None) -> Rejected:
    if isinstance(exc, Rejected):
        return exc
    if isinstance(exc, StructureError):
        return Rejected(exc.reason, exc.detail, header)
    return Rejected(reason_for(exc), f"{type(exc).__name__}: {exc}", header)


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Identify ``data`` as an image; nothing is decoded. Call under :func:`pixel_budget`.

    Raises :class:`Rejected`: ``corrupt`` (empty, unreadable header), ``unsupported`` (not an image
    format we decode), ``too_large`` (over the budget by Pillow's own guard, which leaves the
    header unread: the caller learns no width and height).
    """
    if not data:
        raise Rejected("corrupt", "empty file")
    try:
        img = Image.open(io.BytesIO(data), formats=_open_formats())
    except UnidentifiedImageError:
        fmt = _claimed_format(data)
        if fmt:  # the magic bytes of a format we read, and a header that does not parse
            raise Rejected("corrupt", f"{fmt} signature with an unreadable header") from None
        raise Rejected("unsupported", "not a recognised image format") from None
    except Image.DecompressionBombError as exc:  # some plugins (ICO) decode an entry while opening
        raise Rejected("too_large", str(exc).split(",")[0]) from None
    except Exception as exc:
        raise _rejected(exc) from None
    if isinstance(img, ImageFile.StubImageFile):  # HDF5, GRIB, BUFR, WMF: identified, never decoded
        raise Rejected("unsupported", f"{img.format} files are not decoded")
    return img


# Probed first: what a photo crawl is made of. Pillow's own order (alphabetical by plugin once every
# plugin is loaded) puts JPEG 25th, after plugins without a cheap signature check (IM, IMT, IPTC) that
# parse each file's header: ~0.8 ms per JPEG. Each of these formats has a signature no other format's
# accepts, so the order changes what is tried first, never what a file is identified as.
_COMMON_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF")


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """Every format Pillow identifies, common photo formats first, less the refused ones."""
    Image.init()
    known = [f for f in Image.ID if f not in REFUSED_FORMATS]
    return tuple([f for f in _COMMON_FORMATS if f in known] + [f for f in known if f not in _COMMON_FORMATS])


def _claimed_format(data: bytes) -> str | None:
    """The format whose signature ``data`` starts with (Pillow's own ``_accept`` checks), if any."""
    prefix = data[:16]
    for fmt in _open_formats():
        accept = Image.OPEN[fmt][1]
        try:
            if accept is not None and accept(prefix) is True:
                return fmt
        except Exception:
            continue
    return None


def check_declared(img: Image.Image, data: bytes, max_pixels: int) -> None:
    """Sizes the header and the container declare: the image, its layers/pages/frames, its parts.

    Everything here reads headers: an ICNS, ICO, PSD, TIFF or APNG that declares a huge inner
    frame is refused before anything is allocated for it.
    """
    width, height = img.size
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise Rejected("corrupt", f"impossible size {width}x{height}")
    if width * height > max_pixels:
        raise Rejected("too_large", f"{width}x{height} exceeds {max_pixels} pixels")
    try:
        check_structure(data, img.format, max_pixels)
        if img.format == "PSD":
            _check_psd_layers(img, max_pixels)
        elif img.format == "TIFF":
            _check_tiff_pages(img, len(data), max_pixels)
    except Rejected:
        raise
    except Exception as exc:
        raise _rejected(exc) from None


def _check_psd_layers(img: Image.Image, max_pixels: int) -> None:
    for name, _mode, (x0, y0, x1, y1), _tiles in img.layers:
        if (x1 - x0) * (y1 - y0) > max_pixels:
            raise Rejected("too_large", f"PSD layer {name!r} {x1 - x0}x{y1 - y0} exceeds {max_pixels} pixels")


def _check_tiff_pages(img: Image.Image, size: int, max_pixels: int, max_pages: int = 64) -> None:
    """Every page within the budget; the first page (the one decoded) with its strips inside the file."""
    for offsets_tag, counts_tag in _TIFF_OFFSETS:
        if offsets_tag in img.tag_v2 and img.tile and img.tile[0].codec_name == "raw":
            check_tiff_strips(img.tag_v2.get(offsets_tag), img.tag_v2.get(counts_tag), size)
    pages = img.n_frames
    if pages > 1:
        for page in range(1, min(pages, max_pages)):
            img.seek(page)
            if img.size[0] * img.size[1] > max_pixels:
                raise Rejected("too_large", f"TIFF page {page + 1} {img.size[0]}x{img.size[1]} exceeds {max_pixels}")
        img.seek(0)


def load(img: Image.Image) -> None:
    """Decode the pixels (under :func:`pixel_budget`); any decoder failure becomes a :class:`Rejected`."""
    try:
        img.load()
    except Exception as exc:
        raise _rejected(exc) from None


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1..8); broken EXIF counts as 1, it must not lose the image.

    A PNG keeps its EXIF chunk anywhere, so Pillow loads the pixels to find it: call after checks.
    """
    try:
        value = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def open_rgb(data: bytes, max_pixels: int, reduce_to: int | None = None) -> np.ndarray:
    """Bytes → EXIF-oriented HxWx3 uint8 RGB by the rule of :func:`to_rgb8`, for every stage.

    With ``reduce_to``, JPEGs are reduced inside the decoder (DCT scaling via ``draft``) to the
    smallest scale whose short side still has ``reduce_to`` pixels; nothing is resized here.
    Raises :class:`Rejected` for any file :func:`open_image`/:func:`check_declared`/:func:`load` refuse.
    """
    with pixel_budget(max_pixels):
        img = open_image(data, max_pixels)
        check_declared(img, data, max_pixels)
        if reduce_to and img.format == "JPEG" and img.mode in ("RGB", "L", "CMYK"):
            w, h = img.size
            scale = max(1, min(w, h) // reduce_to)
            if scale > 1:
                img.draft(img.mode, (-(-w // scale), -(-h // scale)))
        load(img)
        turn = orientation(img)
        try:
            if turn != 1:
                img = ImageOps.exif_transpose(img)
            return to_rgb8(img)
        except Exception as exc:
            raise _rejected(exc) from None


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any PIL mode to 8-bit RGB: alpha composited on white, 16-bit scaled, palette/CMYK/gray converted."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        elif arr.dtype != np.uint8:
            # 16-bit data (PIL keeps it in 'I' or 'I;16'): keep the top 8 bits.
            arr = np.right_shift(np.clip(arr, 0, 65535).astype(np.uint32), 8) if arr.max() > 255 else arr
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        img = background
    elif img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(img)
