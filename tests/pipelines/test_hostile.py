"""Hostile input (tests/pipelines/hostile_corpus.py): no file can raise out of decode, blow its memory
or stall it, and `supir-data ingest` gives every path exactly one row.

Time and memory are safety properties with generous bounds (a bomb costs gigabytes and tens of
seconds; a legitimate small file milliseconds and megabytes), measured in a child process so a
regression cannot take the test runner, or the machine, down with it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipelines.hostile_corpus import build_hostile_corpus

REASONS = {"corrupt", "truncated", "unsupported", "too_small", "too_large"}
MIN_SIDE, MAX_PIXELS = 16, 4_000_000
PEAK_RSS_MB = 1500  # the interpreter with numpy/OpenCV/Pillow is ~150 MB; one 4 MP decode adds ~100 MB
SECONDS_PER_FILE = 20.0  # the slowest corpus file takes well under a second on an idle core
ADDRESS_SPACE = 8 << 30  # the child's hard ceiling, so a bomb fails there instead of on the machine

_CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from pipelines.ingest.decode import Decoded, Rejected, decode
for line in sys.stdin:
    path = line.rstrip("\\n")
    start = time.perf_counter()
    try:
        out = decode(open(path, "rb").read(), {min_side}, {max_pixels})
        ok = isinstance(out, Decoded) and out.pixels.dtype.name == "uint8" and out.pixels.ndim == 3
        row = {{"outcome": "decoded" if ok else "bad-decoded", "detail": str(out.pixels.shape)}}
    except Rejected as rej:
        row = {{"outcome": rej.reason, "detail": rej.detail}}
    except BaseException as exc:
        row = {{"outcome": "raised", "detail": type(exc).__name__ + ": " + str(exc)[:200]}}
    # VmHWM: this process's own peak; ru_maxrss would also count the parent's RSS at fork (Linux keeps it
    # across exec), so a big pytest process made every child look big.
    hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    row.update(path=path, seconds=time.perf_counter() - start, peak_mb=int(hwm.split()[1]) / 1024)
    print(json.dumps(row), flush=True)
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    return build_hostile_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def outcomes(corpus) -> dict[str, dict]:
    """Every corpus file through decode in one child process: path -> outcome, seconds, peak RSS so far."""
    code = _CHILD.format(limit=ADDRESS_SPACE, min_side=MIN_SIDE, max_pixels=MAX_PIXELS)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", code], input="".join(f"{p}\n" for p in corpus), env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {Path(r["path"]).name if "/public/" not in r["path"] else r["path"]: r for r in rows}


def test_corpus_is_small_deterministic_and_covers_every_kind(tmp_path, corpus):
    again = build_hostile_corpus(tmp_path, public=False)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in corpus if "/public/" not in str(p)]
    assert 300 <= len(again) <= 1000 and sum(p.stat().st_size for p in again) < 8_000_000
    groups = {p.parent.name for p in again}
    assert groups == {"valid", "mutated", "bombs", "other"}


def test_every_file_decodes_or_is_rejected_with_a_reason(corpus, outcomes):
    assert len(outcomes) == len(corpus)
    bad = {k: (r["outcome"], r["detail"]) for k, r in outcomes.items() if r["outcome"] not in REASONS | {"decoded"}}
    assert not bad
    assert not [k for k, r in outcomes.items() if "MemoryError" in r["detail"]]  # a bomb that hit the ceiling


def test_time_and_memory_per_file_are_bounded(outcomes):
    slow = {k: round(r["seconds"], 1) for k, r in outcomes.items() if r["seconds"] > SECONDS_PER_FILE}
    assert not slow
    peak, worst = max((r["peak_mb"], k) for k, r in outcomes.items())
    assert peak < PEAK_RSS_MB, f"peak RSS {peak:.0f} MB, first reached at {worst}: {outcomes[worst]}"


@pytest.mark.parametrize(
    "name,reason",
    [
        ("bomb-icns-png.icns", "too_large"),  # 256x256 entry holding a 50000² PNG
        ("bomb-ico-png.ico", "too_large"),
        ("bomb-psd-layer.psd", "too_large"),
        ("bomb-tiff-page2.tif", "too_large"),
        ("bomb-dds.dds", "too_large"),
        ("bomb-apng-frame.png", "too_large"),
        ("png-header-bomb.png", "too_large"),
        ("raiser-tiff-missing-dimensions.tif", "corrupt"),  # TypeError: Missing dimensions
        ("raiser-tiff-missing-dimensions-page1.tif", "corrupt"),
        ("raiser-psd-negative-tile.psd", "corrupt"),  # ValueError: negative tile size
        ("raiser-psd-layer-block-short.psd", "corrupt"),  # SyntaxError: Layer block too short
        ("raiser-dds-unknown-fourcc.dds", "unsupported"),  # NotImplementedError
        ("bmp-field0-ffffff81.bmp", "too_large"),  # width -127 read as 4294967169
    ],
)
def test_bombs_and_known_raisers(outcomes, name, reason):
    assert outcomes[name]["outcome"] == reason, outcomes[name]["detail"]


@pytest.mark.parametrize(
    "name,reason",
    [
        ("png-no-iend.png", "truncated"),
        ("png-idat-crc.png", "corrupt"),
        ("png-idat-truncated-stream.png", "truncated"),
        ("jpeg-no-eoi.jpg", "truncated"),
    ],
)
def test_files_the_reference_decoders_call_broken_are_not_passed_on(outcomes, name, reason):
    assert outcomes[name]["outcome"] == reason, outcomes[name]["detail"]


@pytest.mark.parametrize("name", ["jpeg.jpg", "png.png", "gif.gif", "qoi.qoi"])
def test_last_byte_cut_off_is_truncated(outcomes, corpus, name):
    """Pillow decodes these whole; the end marker (EOI, IEND's CRC, the GIF trailer, QOI's) is missing."""
    size = next(p for p in corpus if p.name == name).stat().st_size
    stem, suffix = name.split(".")
    assert outcomes[f"{stem}-trunc{size - 1}.{suffix}"]["outcome"] == "truncated"


def test_non_images_are_unsupported(outcomes):
    others = ["array.npy", "archive.zip", "text.gz", "readme.txt", "data.h5", "doc.pdf", "random.bin",
              "zeros.bin", "html.html", "one-byte.png"]  # fmt: skip
    assert {n: outcomes[n]["outcome"] for n in others} == dict.fromkeys(others, "unsupported")
    assert outcomes["empty.jpg"]["outcome"] == "corrupt"


def test_valid_files_of_every_format_decode(outcomes, corpus):
    valid = [p.name for p in corpus if p.parent.name == "valid"]
    animated = {"apng.png", "gif-animated.gif", "tiff-multipage.tif"}
    assert {n: outcomes[n]["outcome"] for n in valid if n not in animated} == dict.fromkeys(
        [n for n in valid if n not in animated], "decoded")
    assert {outcomes[n]["outcome"] for n in animated} == {"unsupported"}


def test_ingest_gives_every_corpus_path_one_row(tmp_path, ray_cluster, run_cli, corpus):
    from catalogs.catalog import Catalog

    root = tmp_path / "root"
    run_cli(root, "ingest", corpus[0].parents[1], "--min-side", MIN_SIDE, "--max-pixels", MAX_PIXELS)
    rows = Catalog(root).query("SELECT path, count(*) AS n, any_value(reason) AS reason FROM images GROUP BY path")
    counts = dict(zip(rows.column("path").to_pylist(), rows.column("n").to_pylist()))
    assert set(counts) == {str(p) for p in corpus} and set(counts.values()) == {1}
