"""Structural checks on image bytes that Pillow skips: the ones the reference decoders make.

Pillow decodes a PNG without its IEND chunk or with a bad IDAT checksum, a JPEG without its EOI
marker, a GIF without its trailer, and believes an ICO/ICNS directory or a TIFF strip table that
points past the end of the file. libpng, libjpeg's ``djpeg``, giflib and libtiff report these files
as broken, and so do we: such a file is ``truncated`` or ``corrupt``, never passed on to quality
(a partly decoded image scores as a grey or smeared one). The walks read headers only (a PNG's
chunk CRCs are one ``zlib.crc32`` pass, about 1 GB/s), so they cost little next to a decode.
"""

import struct
import zlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class StructureError(Exception):
    """A broken file structure: ``reason`` is ``truncated`` or ``corrupt`` (or ``too_large`` for a frame)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def check_structure(data: bytes, fmt: str, max_pixels: int) -> None:
    """Raise :class:`StructureError` for a broken container of format ``fmt`` (Pillow's format name)."""
    check = _CHECKS.get(fmt)
    if check is not None:
        check(data, max_pixels)


def _png(data: bytes, max_pixels: int) -> None:
    """Walk the chunks: lengths inside the file, CRCs right, APNG frames within budget, IEND present."""
    pos, n = len(PNG_MAGIC), len(data)
    view = memoryview(data)
    while True:
        if pos + 12 > n:
            raise StructureError("truncated", f"PNG ends at byte {n} without an IEND chunk")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > n:
            raise StructureError("truncated", f"PNG chunk {kind!r} of {length} bytes runs past the end")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(view[pos + 4 : end - 4]) != crc:
            raise StructureError("corrupt", f"PNG chunk {kind!r} at byte {pos} fails its CRC")
        if kind == b"fcTL" and length >= 12:
            width, height = struct.unpack(">II", data[pos + 12 : pos + 20])
            if width * height > max_pixels:
                raise StructureError("too_large", f"APNG frame {width}x{height} exceeds {max_pixels} pixels")
        if kind == b"IEND":
            return
        pos = end


def _jpeg(data: bytes, max_pixels: int) -> None:
    if data.rfind(b"\xff\xd9") < 2:
        raise StructureError("truncated", "JPEG has no end-of-image marker")


def _gif(data: bytes, max_pixels: int) -> None:
    if not data.rstrip(b"\0").endswith(b";"):
        raise StructureError("truncated", "GIF has no trailer")


def _qoi(data: bytes, max_pixels: int) -> None:
    if not data.endswith(b"\0" * 7 + b"\1"):
        raise StructureError("truncated", "QOI has no end marker")


def _ico(data: bytes, max_pixels: int) -> None:
    (count,) = struct.unpack("<H", data[4:6])
    for i in range(count):
        entry = 6 + 16 * i
        if entry + 16 > len(data):
            raise StructureError("truncated", f"ICO directory of {count} entries runs past the end")
        size, offset = struct.unpack("<II", data[entry + 8 : entry + 16])
        if offset + size > len(data):
            raise StructureError("truncated", f"ICO entry {i} ({size} bytes at {offset}) runs past the end")


def _icns(data: bytes, max_pixels: int) -> None:
    (total,) = struct.unpack(">I", data[4:8])
    if total > len(data):
        raise StructureError("truncated", f"ICNS declares {total} bytes, the file has {len(data)}")
    pos = 8
    while pos + 8 <= total:
        (length,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        if length < 8 or pos + length > total:
            raise StructureError("corrupt", f"ICNS entry at byte {pos} declares {length} bytes")
        pos += length


_CHECKS = {"PNG": _png, "JPEG": _jpeg, "MPO": _jpeg, "GIF": _gif, "QOI": _qoi, "ICO": _ico, "ICNS": _icns}


def check_tiff_strips(offsets, counts, size: int) -> None:
    """Every strip or tile of a TIFF page must lie inside the file (libtiff: 'Read error on strip')."""
    for offset, count in zip(offsets or (), counts or ()):
        if count == 0 or offset + count > size:
            raise StructureError("truncated", f"TIFF strip of {count} bytes at {offset} is outside the file")
