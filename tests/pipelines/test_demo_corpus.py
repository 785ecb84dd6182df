"""pipelines.devtools.demo_corpus: the corpus' files are what the manifest says they are (decode + quality + hashes)."""

import hashlib
import json

import pytest

from pipelines.devtools.demo_corpus import make_demo_corpus, outcome_matches
from pipelines.ingest.decode import Rejected, decode
from pipelines.ingest.dedup import phash
from pipelines.ingest.quality import cheap_signals, judge, load_thresholds

MAX_PIXELS = 100_000_000
NEAR_DUP_DISTANCE = 4  # ingest's default


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    return root, make_demo_corpus(root, seed=0)


def _outcome(data: bytes, thresholds):
    try:
        d = decode(data, 1024, MAX_PIXELS)
    except Rejected as rej:
        return rej.reason, None
    return judge(cheap_signals(d.rgb, d.scale, d.qtables), thresholds) or "accepted", d


def test_manifest_lists_every_file_and_every_reason(corpus):
    root, manifest = corpus
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == set(manifest)
    outcomes = set("|".join(manifest.values()).split("|"))
    for reason in ("accepted", "corrupt", "truncated", "unsupported", "too_small", "too_large", "duplicate",
                   "near_duplicate", "low_quality:sharpness", "low_quality:noise_sigma",
                   "low_quality:jpeg_quality", "low_quality:colorfulness"):
        assert reason in outcomes, reason


def test_each_file_gets_its_expected_outcome(corpus):
    root, manifest = corpus
    thresholds = load_thresholds()
    accepted, by_sha = {}, {}
    for path, expected in manifest.items():
        data = (root / path).read_bytes()
        outcome, decoded = _outcome(data, thresholds)
        if expected in ("duplicate", "near_duplicate"):
            assert outcome == "accepted", path  # a copy passes the worker; dedup decides globally
        else:
            assert outcome_matches(expected, outcome), (path, expected, outcome)
        if outcome == "accepted":
            accepted[path] = phash(decoded.rgb)
            by_sha.setdefault(hashlib.sha256(data).hexdigest(), []).append(path)
    # Exact copies: same bytes, and the kept one (smallest path, ingest's tie-break) is 'accepted'.
    for paths in by_sha.values():
        paths.sort()
        assert [manifest[p] for p in paths[1:]] == ["duplicate"] * (len(paths) - 1)
    dups = {p for paths in by_sha.values() for p in paths[1:]}
    # Near copies are within ingest's Hamming distance of an accepted original; nothing else is.
    originals = {p: h for p, h in accepted.items() if manifest[p] == "accepted" and p not in dups}
    for path, code in accepted.items():
        close = [o for o, h in originals.items() if o != path and bin(code ^ h).count("1") <= NEAR_DUP_DISTANCE]
        if manifest[path] == "near_duplicate":
            assert close, path
        elif path in originals:
            assert not close, (path, close)


def test_exif_rotation_and_formats(corpus):
    root, _ = corpus
    rotated = decode((root / "hard/exif_rotated.jpg").read_bytes(), 1024, MAX_PIXELS)
    assert rotated.header.orientation == 6 and rotated.header.width > rotated.header.height
    assert decode((root / "hard/png_named.jpg").read_bytes(), 1024, MAX_PIXELS).header.format == "PNG"
    modes = {p: decode((root / p).read_bytes(), 1024, MAX_PIXELS).header.mode
             for p in ("hard/cmyk.jpg", "hard/palette.png", "hard/rgba.png", "hard/gray_16bit.png")}
    assert modes == {"hard/cmyk.jpg": "CMYK", "hard/palette.png": "P", "hard/rgba.png": "RGBA",
                     "hard/gray_16bit.png": "I;16"}


def test_deterministic_for_a_seed(tmp_path):
    a = make_demo_corpus(tmp_path / "a", seed=3, degraded=False)
    b = make_demo_corpus(tmp_path / "b", seed=3, degraded=False)
    assert a == b
    for path in a:
        assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes(), path


def test_cli_writes_corpus_and_manifest(tmp_path, run_cli):
    out, manifest_path = tmp_path / "corpus", tmp_path / "manifest.json"
    result = run_cli(tmp_path / "root", "make-demo-corpus", out, "--no-degraded", "--no-broken",
                     "--manifest", manifest_path)
    manifest = json.loads(manifest_path.read_text())
    # every photo is clean except the Hubble field, whose own sensor noise ingest rejects
    assert set(manifest.values()) == {"accepted", "duplicate", "near_duplicate", "low_quality:noise_sigma"}
    assert all((out / p).is_file() for p in manifest)
    assert "demo corpus" in result.output and "near_duplicate" in result.output
