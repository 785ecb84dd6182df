"""Byte-level builders for the hostile corpus: PSD by hand, and containers whose inner frames lie.

Each bomb is a file of a few KB whose outer header looks harmless while an inner frame, layer,
page or sub-image declares BOMB_SIDE² pixels (10 GB as RGBA): decoding it without a per-frame
pixel budget is how one 240 KB ICNS once allocated 8.4 GB.
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image

BOMB_SIDE = 50_000


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    """A PNG whose IHDR declares side×side RGB over one tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + png_chunk(b"IEND", b""))


def icns(entries: dict[bytes, bytes]) -> bytes:
    """An Apple icon file from (type, payload) entries, e.g. ``{b"icp6": png_bytes}`` (64×64 PNG)."""
    body = b"".join(kind + struct.pack(">I", 8 + len(data)) + data for kind, data in entries.items())
    return b"icns" + struct.pack(">I", 8 + len(body)) + body


def icns_bomb() -> bytes:
    """An ICNS whose 256×256 ('ic08') entry holds a PNG declaring BOMB_SIDE²."""
    return icns({b"ic08": png_bomb()})


def ico_bomb() -> bytes:
    """An ICO whose one 256×256 directory entry points at a PNG declaring BOMB_SIDE²."""
    inner = png_bomb()
    directory = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(inner), 22)
    return directory + inner


def _layer_record(bbox: tuple[int, int, int, int], channel_len: int, channels: int = 3) -> bytes:
    top, left, bottom, right = bbox
    rec = struct.pack(">iiiiH", top, left, bottom, right, channels)
    for cid in range(channels):
        rec += struct.pack(">hI", cid, channel_len)
    extra = struct.pack(">I", 0) + struct.pack(">I", 0) + b"\x03abc"  # no mask, no blending ranges, name
    return rec + b"8BIMnorm" + struct.pack(">BBBB", 255, 0, 0, 0) + struct.pack(">I", len(extra)) + extra


def psd(rgb: np.ndarray, layers: bytes = b"") -> bytes:
    """A minimal 8-bit RGB Photoshop file (raw composite), optionally with a layer-and-mask section."""
    h, w = rgb.shape[:2]
    header = b"8BPS" + struct.pack(">H", 1) + bytes(6) + struct.pack(">HIIHH", 3, h, w, 8, 3)
    section = struct.pack(">I", len(layers)) + layers if layers else struct.pack(">I", 0)
    planar = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    return header + struct.pack(">II", 0, 0) + section + struct.pack(">H", 0) + planar


def _layer_section(records: list[bytes], count: int, data: bytes = b"", claim: int | None = None) -> bytes:
    body = struct.pack(">h", count) + b"".join(records) + data
    length = len(body) if claim is None else claim
    return struct.pack(">I", length) + body


def _small_rgb() -> np.ndarray:
    return np.full((64, 64, 3), 128, np.uint8)


def psd_layer_bomb() -> bytes:
    """A 64×64 PSD with one grey layer whose bounding box is BOMB_SIDE² over two bytes of channel data."""
    channel = struct.pack(">H", 0)  # raw compression, no data
    section = _layer_section([_layer_record((0, 0, BOMB_SIDE, BOMB_SIDE), 2, channels=1)], 1, channel)
    return psd(_small_rgb(), section)


def psd_bad_layer(kind: str) -> bytes:
    """PSDs whose layer block is broken: a bottom above the top ('negative'), or a block cut short ('short')."""
    channel = struct.pack(">H", 0) + bytes(64)
    if kind == "negative":
        section = _layer_section([_layer_record((40, 0, 8, 16), 66)], 1, channel * 3)
    else:
        section = _layer_section([_layer_record((0, 0, 8, 8), 66)], 1000)  # 1000 layers in ~60 bytes
    return psd(_small_rgb(), section)


def _ifds(data: bytes) -> list[int]:
    offsets, (pos,) = [], struct.unpack("<I", data[4:8])
    while pos and pos not in offsets:
        offsets.append(pos)
        (count,) = struct.unpack("<H", data[pos : pos + 2])
        (pos,) = struct.unpack("<I", data[pos + 2 + 12 * count : pos + 6 + 12 * count])
    return offsets


def _patch_tags(data: bytes, ifd: int, values: dict[int, int | None]) -> bytes:
    """Set (or, with None, rename away) SHORT/LONG tags of one little-endian IFD."""
    (count,) = struct.unpack("<H", data[ifd : ifd + 2])
    out = bytearray(data)
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, typ = struct.unpack("<HH", data[entry : entry + 4])
        if tag in values:
            if values[tag] is None:
                out[entry : entry + 2] = struct.pack("<H", 0xFFF0 + (tag & 0xF))  # an unknown private tag
            else:
                out[entry + 8 : entry + 12] = struct.pack("<I", values[tag]) if typ == 4 else \
                    struct.pack("<HH", values[tag] & 0xFFFF, 0)
    return bytes(out)


def _tiff(frames: int) -> bytes:
    imgs = [Image.new("RGB", (64, 64), (i * 60, 90, 200)) for i in range(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, "TIFF", save_all=frames > 1, append_images=imgs[1:])
    return buf.getvalue()


def tiff_bomb() -> bytes:
    """A two-page TIFF: page one is 64×64, page two declares 50000×50000 (LONG fields) over one strip."""
    data = _tiff(2)
    return _patch_tags(data, _ifds(data)[1], {256: 50_000, 257: 50_000})


def tiff_missing_dimensions(page: int = 1) -> bytes:
    """A two-page TIFF whose ``page`` lacks ImageWidth/ImageLength: Pillow raises ``TypeError: Missing
    dimensions`` (when opening for page 0, which Pillow then reports as unidentified; when counting
    the pages for page 1)."""
    data = _tiff(2)
    return _patch_tags(data, _ifds(data)[page], {256: None, 257: None})


def dds_bomb(fourcc: bytes | None = None, side: int = BOMB_SIDE) -> bytes:
    """A DDS declaring side×side (uncompressed RGBA, or a compressed ``fourcc``) over a few bytes of data."""
    if fourcc:
        pixel_format = struct.pack("<II4sIIIII", 32, 0x4, fourcc, 0, 0, 0, 0, 0)
    else:
        pixel_format = struct.pack("<II4sIIIII", 32, 0x41, bytes(4), 32, 0xFF0000, 0xFF00, 0xFF, 0xFF000000)
    header = struct.pack("<7I", 124, 0x100F, side, side, side * 4, 0, 0) + bytes(44) + pixel_format
    header += struct.pack("<5I", 0x1000, 0, 0, 0, 0)
    return b"DDS " + header + bytes(64)


def apng_bomb() -> bytes:
    """A 64×64 two-frame APNG whose second frame control chunk declares BOMB_SIDE²."""
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:])
    data = buf.getvalue()
    fctl = data.find(b"fcTL", data.find(b"fcTL") + 4)
    payload = bytearray(data[fctl + 4 : fctl + 30])
    payload[4:12] = struct.pack(">II", BOMB_SIDE, BOMB_SIDE)
    chunk = png_chunk(b"fcTL", bytes(payload))
    return data[: fctl - 4] + chunk + data[fctl + 34 :]
