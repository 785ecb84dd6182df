"""A hostile-input corpus the tests build themselves: every format we decode, broken every way we know.

The files are what a 20M-image crawl is certain to contain (and what decoder projects keep in their own
regression suites): valid files of every supported format truncated at many offsets, with header bytes
flipped, with size fields set to 0, -1, 2^31 and 2^32-1, containers that lie about the sizes of their
parts, decompression bombs hidden inside containers (a small ICNS/ICO/PSD/TIFF/DDS/APNG that declares a
huge inner frame or layer) and files that are not images at all. Deterministic for a seed, a few hundred
files, a few MB, built in seconds. Public decoder test images (Pillow's ``Tests/images``, fetched into
``.cache/decoder-test-images`` by ``make setup``) are added when present.
"""

import gzip
import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, features

from tests.pipelines.hostile_builders import (
    BOMB_SIDE,
    apng_bomb,
    dds_bomb,
    icns,
    icns_bomb,
    ico_bomb,
    png_chunk,
    psd,
    psd_bad_layer,
    psd_layer_bomb,
    tiff_bomb,
    tiff_missing_dimensions,
)

PUBLIC_IMAGES = Path(__file__).resolve().parents[2] / ".cache" / "decoder-test-images"
SIZE_VALUES = (0, 0x80000000, 0xFFFFFFFF, 0xFFFFFF81)  # 0, 2^31, 2^32-1 (-1), -127 read as unsigned


def _base(seed: int, mode: str = "RGB", size=(64, 48)) -> Image.Image:
    """A small textured picture (gradient + noise) so every encoder produces real entropy-coded data."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 127 // (w + h)], -1)
    rgb = np.clip(rgb + rng.integers(-40, 40, rgb.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = Image.fromarray((xx * 255 // w).astype(np.uint8))
        img.putalpha(alpha)
    elif mode != "RGB":
        img = img.convert(mode)
    return img


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def valid_files(seed: int = 0) -> dict[str, bytes]:
    """One valid file per (format, variant): the seeds every mutation starts from. Names carry the suffix."""
    rgb, rgba = _base(seed), _base(seed + 1, "RGBA")
    frames = [_base(seed + 2 + i) for i in range(3)]
    out = {
        "jpeg.jpg": _save(rgb, "JPEG", quality=85),
        "jpeg-progressive.jpg": _save(rgb, "JPEG", quality=85, progressive=True),
        "jpeg-cmyk.jpg": _save(rgb.convert("CMYK"), "JPEG"),
        "png.png": _save(rgb, "PNG"),
        "png-rgba.png": _save(rgba, "PNG"),
        "png-palette.png": _save(rgb.convert("P"), "PNG"),
        "png-16bit.png": _save(Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257), "PNG"),
        "apng.png": _save(frames[0], "PNG", save_all=True, append_images=frames[1:]),
        "webp-lossy.webp": _save(rgb, "WEBP", quality=80),
        "webp-lossless.webp": _save(rgba, "WEBP", lossless=True),
        "tiff.tif": _save(rgb, "TIFF"),
        "tiff-deflate.tif": _save(rgba, "TIFF", compression="tiff_adobe_deflate"),
        "tiff-multipage.tif": _save(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
        "bmp.bmp": _save(rgb, "BMP"),
        "bmp-palette.bmp": _save(rgb.convert("P"), "BMP"),
        "gif.gif": _save(rgb.convert("P"), "GIF"),
        "gif-animated.gif": _save(frames[0].convert("P"), "GIF", save_all=True,
                                  append_images=[f.convert("P") for f in frames[1:]]),
        "ico.ico": _save(rgba, "ICO", sizes=[(16, 16), (32, 32), (64, 64)]),
        "icns.icns": icns({b"icp4": _save(_base(seed, "RGBA", (16, 16)), "PNG"),
                           b"icp6": _save(_base(seed, "RGBA", (64, 64)), "PNG")}),
        "psd.psd": psd(np.asarray(rgb)),
        "dds.dds": _save(rgba, "DDS"),
        "tga.tga": _save(rgba, "TGA"),
        "tga-rle.tga": _save(rgb, "TGA", compression="tga_rle"),
        "ppm.ppm": _save(rgb, "PPM"),
        "pcx.pcx": _save(rgb, "PCX"),
        "sgi.sgi": _save(rgb, "SGI"),
        "qoi.qoi": _save(rgb, "QOI"),
    }
    if features.check("jpg_2000"):
        out["jp2.jp2"] = _save(rgb, "JPEG2000")
        out["j2k.j2k"] = _save(rgb, "JPEG2000", no_jp2=True)
    return out


def size_field_offsets(name: str, data: bytes) -> list[tuple[int, int, str]]:
    """(offset, byte width, struct byte order) of the width/height fields of a valid file's header."""
    kind = name.split(".")[0].split("-")[0]
    if kind in ("png", "apng"):
        return [(16, 4, ">"), (20, 4, ">")]
    if kind == "jpeg":
        sof = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
        return [(sof + 5, 2, ">"), (sof + 7, 2, ">")]
    if kind == "bmp":
        return [(18, 4, "<"), (22, 4, "<"), (2, 4, "<"), (10, 4, "<")]  # + file size, pixel data offset
    if kind == "gif":
        return [(6, 2, "<"), (8, 2, "<")]
    if kind in ("tga",):
        return [(12, 2, "<"), (14, 2, "<")]
    if kind == "dds":
        return [(12, 4, "<"), (16, 4, "<"), (20, 4, "<")]  # height, width, pitch
    if kind == "psd":
        return [(14, 4, ">"), (18, 4, ">"), (12, 2, ">")]  # height, width, channels
    if kind == "qoi":
        return [(4, 4, ">"), (8, 4, ">")]
    if kind == "ico":
        return [(4, 2, "<"), (6 + 8, 4, "<"), (6 + 12, 4, "<")]  # count, 1st entry's size and offset
    if kind == "icns":
        return [(4, 4, ">"), (12, 4, ">")]  # file length, first entry's length
    if kind == "webp":
        return [(4, 4, "<"), (16, 4, "<")]  # RIFF size, first chunk's size
    if kind == "tiff":
        return _tiff_size_fields(data)
    if kind == "sgi":
        return [(6, 2, ">"), (8, 2, ">")]
    if kind == "jp2" or kind == "j2k":
        siz = data.find(b"\xff\x51")
        return [(siz + 6, 4, ">"), (siz + 10, 4, ">")] if siz >= 0 else []
    return []


def _tiff_size_fields(data: bytes) -> list[tuple[int, int, str]]:
    """Value fields of ImageWidth, ImageLength, StripOffsets, StripByteCounts in the first IFD."""
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", data[4:8])[0]
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    fields = []
    for i in range(count):
        entry = ifd + 2 + 12 * i
        tag, typ = struct.unpack(order + "HH", data[entry : entry + 4])
        if tag in (256, 257, 273, 279):
            fields.append((entry + 8, 4 if typ == 4 else 2, order))
    return fields


def _put(data: bytes, offset: int, width: int, order: str, value: int) -> bytes:
    value &= (1 << (8 * width)) - 1
    fmt = order + {1: "B", 2: "H", 4: "I"}[width]
    return data[:offset] + struct.pack(fmt, value) + data[offset + width :]


def _fix_png_crc(data: bytes) -> bytes:
    """Recompute IHDR's CRC, so a PNG whose sizes were changed lies consistently instead of failing the CRC."""
    return data[:29] + struct.pack(">I", zlib.crc32(data[12:29])) + data[33:]


def mutations(name: str, data: bytes, rng: np.random.Generator, primary: bool = True) -> dict[str, bytes]:
    """Broken variants of one valid file: truncations, flipped header bytes, hostile size fields.

    ``primary`` files (the first of each format) get every mutation, variants only truncations.
    """
    stem, suffix = name.rsplit(".", 1)
    out: dict[str, bytes] = {}
    n = len(data)
    cuts = {1, 8, 16, 32, n // 4, n // 2, n - 16, n - 1} if primary else {12, n // 2, n - 1}
    for cut in sorted(c for c in cuts if 0 < c < n):
        out[f"{stem}-trunc{cut}.{suffix}"] = data[:cut]
    if not primary:  # variants of a format share its header layout: truncation is what differs
        return out
    for pos in sorted({int(p) for p in rng.integers(0, min(n, 64), 3)}):
        out[f"{stem}-flip{pos}.{suffix}"] = data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]
    tail = int(rng.integers(n // 2, n))  # a flip inside the compressed data: a broken data stream
    out[f"{stem}-dataflip{tail}.{suffix}"] = data[:tail] + bytes([data[tail] ^ 0x55]) + data[tail + 1 :]
    for field, (offset, width, order) in enumerate(size_field_offsets(name, data)):
        for value in SIZE_VALUES:
            blob = _put(data, offset, width, order, value)
            if stem.startswith(("png", "apng")):
                blob = _fix_png_crc(blob)
            out[f"{stem}-field{field}-{value:x}.{suffix}"] = blob
    return out


def png_variants() -> dict[str, bytes]:
    """PNGs the decoder can read but the reference decoder calls broken: no IEND, a broken IDAT stream."""
    png = _save(_base(7), "PNG")
    iend = png.rfind(b"IEND") - 4
    idat = png.find(b"IDAT")
    return {
        "png-no-iend.png": png[:iend],
        "png-idat-crc.png": png[: idat + 10] + bytes([png[idat + 10] ^ 1]) + png[idat + 11 :],
        "png-idat-truncated-stream.png": _png_with_idat(zlib.compress(b"\0" * 64)[:-6], 96, 64),
        "png-chunk-length-huge.png": png[:8] + b"\x7f\xff\xff\xff" + png[12:],
        "png-header-bomb.png": _png_with_idat(zlib.compress(b"\0" * 16), BOMB_SIDE, BOMB_SIDE),
        "jpeg-no-eoi.jpg": _save(_base(8), "JPEG")[:-2],
    }


def _png_with_idat(idat: bytes, width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def bombs() -> dict[str, bytes]:
    """Small containers declaring inner frames/layers far over any pixel budget (BOMB_SIDE² pixels)."""
    return {
        "bomb-icns-png.icns": icns_bomb(),
        "bomb-ico-png.ico": ico_bomb(),
        "bomb-psd-layer.psd": psd_layer_bomb(),
        "bomb-tiff-page2.tif": tiff_bomb(),
        "bomb-dds.dds": dds_bomb(),
        "bomb-apng-frame.png": apng_bomb(),
        "raiser-tiff-missing-dimensions.tif": tiff_missing_dimensions(1),
        "raiser-tiff-missing-dimensions-page1.tif": tiff_missing_dimensions(0),
        "raiser-psd-negative-tile.psd": psd_bad_layer("negative"),
        "raiser-psd-layer-block-short.psd": psd_bad_layer("short"),
        "raiser-dds-unknown-fourcc.dds": dds_bomb(fourcc=b"ZZZZ", side=64),
    }


def non_images(seed: int) -> dict[str, bytes]:
    """Files that are not images at all: a crawl or an archive folder holds plenty of them."""
    rng = np.random.default_rng(seed)
    npy = io.BytesIO()
    np.save(npy, rng.random((32, 32)))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(zipfile.ZipInfo("a.txt", date_time=(2020, 1, 1, 0, 0, 0)), "hello " * 100)
    return {
        "array.npy": npy.getvalue(),
        "archive.zip": archive.getvalue(),
        "text.gz": gzip.compress(b"hello world\n" * 200, mtime=0),
        "readme.txt": b"This is not an image.\n" * 50,
        "data.h5": b"\x89HDF\r\n\x1a\n" + bytes(rng.integers(0, 256, 2048, dtype=np.uint8)),
        "doc.pdf": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "random.bin": rng.bytes(4096),
        "zeros.bin": bytes(4096),
        "empty.jpg": b"",
        "one-byte.png": b"\x89",
        "html.html": b"<!doctype html><html><body><img src=x></body></html>\n",
    }


def build_hostile_corpus(out_dir: str | Path, seed: int = 0, public: bool = True) -> list[Path]:
    """Write the corpus under ``out_dir`` (valid/, mutated/, bombs/, other/, public/) and return its files."""
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    groups: dict[str, dict[str, bytes]] = {"valid": valid_files(seed), "mutated": {}, "bombs": bombs()}
    seen: set[str] = set()
    for name, data in groups["valid"].items():
        kind = name.rsplit(".", 1)[1]
        groups["mutated"].update(mutations(name, data, rng, primary=kind not in seen))
        seen.add(kind)
    groups["mutated"].update(png_variants())
    groups["other"] = non_images(seed)
    paths = []
    for group, files in groups.items():
        (out / group).mkdir(parents=True, exist_ok=True)
        for name, data in sorted(files.items()):
            path = out / group / name
            path.write_bytes(data)
            paths.append(path)
    if public and PUBLIC_IMAGES.is_dir():
        paths += _copy_public(out / "public")
    return paths


def _copy_public(dest: Path) -> list[Path]:
    """Pillow's own decoder test images (fetched at setup), flattened so each path is a plain file."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in sorted(p for p in PUBLIC_IMAGES.rglob("*") if p.is_file() and p.name != ".complete"):
        if src.stat().st_size > 512_000:  # keep the corpus small; big files add time, not hostility
            continue
        path = dest / "__".join(src.relative_to(PUBLIC_IMAGES).parts)
        if path not in paths:
            path.write_bytes(src.read_bytes())
            paths.append(path)
    return paths
