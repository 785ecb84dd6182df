"""pipelines.ingest.quality: signals, JPEG quality estimation, thresholds, and the calibration on real photos."""

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.devtools.demo_corpus import (
    encode,
    load_photo,
    upscale_to,
)
from pipelines.ingest.decode import decode
from pipelines.ingest.quality import (
    JUDGE_ORDER,
    Bounds,
    QualityThresholds,
    analysis_luma,
    cheap_signals,
    estimate_jpeg_quality,
    judge,
    judge_iqa,
    load_thresholds,
)
from schemas.errors import ConfigError
from schemas.tables import QUALITY_SIGNALS

CALIBRATION = Path(__file__).parents[2] / "pipelines" / "configs" / "calibration_images.yaml"
QUALITIES = (5, 10, 15, 25, 40, 50, 60, 75, 85, 90, 95, 98, 100)


@pytest.fixture(scope="module")
def photo():
    return load_photo("coffee.png")


def _pil_qtables(data: bytes) -> dict:
    return Image.open(io.BytesIO(data)).quantization


@pytest.mark.parametrize("quality", QUALITIES)
def test_jpeg_quality_of_pil_and_opencv_files(photo, quality):
    pil = encode(photo, "JPEG", quality=quality)
    ok, cv = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    for data in (pil, cv.tobytes()):
        assert abs(estimate_jpeg_quality(_pil_qtables(data)) - quality) <= 2


def test_jpeg_quality_grayscale_and_zigzag_order(photo):
    gray = encode(Image.fromarray(photo).convert("L"), "JPEG", quality=60)
    tables = _pil_qtables(gray)
    assert len(tables) == 1 and abs(estimate_jpeg_quality(tables) - 60) <= 2
    # Older Pillow returned tables in zigzag order: the estimate must not depend on it.
    from supir.degradation.jpeg import _ZIGZAG

    natural = _pil_qtables(encode(photo, "JPEG", quality=30))
    zigzag = {k: [list(v)[i] for i in _ZIGZAG] for k, v in natural.items()}
    assert abs(estimate_jpeg_quality(zigzag) - 30) <= 2


def test_bgr_input_and_a_given_luma_give_the_same_signals(photo):
    # ingest hands OpenCV's BGR decode and one shared luma to cheap_signals: nothing may change.
    bgr = np.ascontiguousarray(photo[..., ::-1])
    reference = cheap_signals(photo, 2, None)
    assert cheap_signals(bgr, 2, None, order="BGR") == reference
    assert cheap_signals(bgr, 2, None, "BGR", analysis_luma(bgr, "BGR")) == reference


def test_sharpness_does_not_depend_on_the_parity_of_the_image_size(photo):
    # The half-scale luma is an exact 2x2 mean; an area resize by 511 -> 255 px used to blend
    # neighbours and raised sharpness by up to 11 % for odd sizes only.
    even = photo[:400, :510]
    odd = photo[:401, :511]
    s_even, s_odd = cheap_signals(even, 1, None), cheap_signals(odd, 1, None)
    assert s_odd["sharpness"] == pytest.approx(s_even["sharpness"], rel=0.01)
    assert s_odd["edge_density"] == pytest.approx(s_even["edge_density"], rel=0.02)


def test_signals_have_every_column_and_none_where_unmeasurable(photo):
    rgb = upscale_to(photo, 1024)
    s = cheap_signals(rgb, 1, None)
    assert set(s) == set(QUALITY_SIGNALS)
    assert s["jpeg_quality"] is None and s["blockiness"] is not None
    assert all(isinstance(s[k], float) for k in QUALITY_SIGNALS if k != "jpeg_quality")
    assert cheap_signals(rgb, 8, None)["blockiness"] is None  # a JPEG block is one pixel at 1/8
    decoded = decode(encode(rgb, "JPEG", quality=80), min_side=512, max_pixels=10**8)
    assert abs(cheap_signals(decoded.rgb, decoded.scale, decoded.qtables)["jpeg_quality"] - 80) <= 2


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (15, 40), (16, 16)])
def test_tiny_images_do_not_break_the_signals(shape):
    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    s = cheap_signals(rgb, 1, None)
    assert set(s) == set(QUALITY_SIGNALS) and 0 <= s["clipping"] <= 1 and s["colorfulness"] > 0
    detail = ("sharpness", "noise_sigma", "edge_density")
    if min(shape) < 16:
        assert all(s[k] is None for k in detail)  # too few pixels: not measured, hence not judged
    else:
        assert all(isinstance(s[k], float) for k in detail)


@pytest.mark.parametrize("sigma", [5.0, 15.0])
def test_noise_sigma_of_synthetic_noise_and_its_scale_normalisation(sigma):
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(60, 190, 768, dtype=np.float64), (512, 1))  # Immerkær is blind to ramps
    gray = np.clip(ramp + rng.normal(0, sigma, ramp.shape), 0, 255).round().astype(np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    assert cheap_signals(rgb, 1, None)["noise_sigma"] == pytest.approx(sigma, rel=0.1)
    # Measured on an image reduced 2x, white noise is halved: the signal reports full-resolution sigma.
    assert cheap_signals(rgb, 2, None)["noise_sigma"] == pytest.approx(2 * sigma, rel=0.1)


def test_flat_grey_image_is_rejected_and_colour_matters():
    flat = np.full((600, 800, 3), 128, np.uint8)
    s = cheap_signals(flat, 1, None)
    assert s["sharpness"] == 0.0 and s["edge_density"] == 0.0 and s["colorfulness"] == 0.0
    assert judge(s, load_thresholds()) == "low_quality:sharpness"
    clipped = np.zeros((600, 800, 3), np.uint8)
    clipped[:, 400:] = 255
    assert cheap_signals(clipped, 1, None)["clipping"] == 1.0


def test_judge_reports_the_first_failing_signal_in_order():
    thresholds = load_thresholds()
    good = {"sharpness": 0.7, "noise_sigma": 1.0, "jpeg_quality": 95.0, "blockiness": 1.0,
            "colorfulness": 40.0, "clipping": 0.0, "edge_density": 0.2}
    assert judge(good, thresholds) is None
    assert judge({**good, "jpeg_quality": None}, thresholds) is None  # not a JPEG: not judged
    bad = {**good, "sharpness": 0.1, "colorfulness": 0.0, "noise_sigma": 50.0}
    assert judge(bad, thresholds) == "low_quality:noise_sigma"
    assert JUDGE_ORDER.index("noise_sigma") < JUDGE_ORDER.index("sharpness")
    assert judge({**good, "clipping": 0.9}, thresholds) == "low_quality:clipping"
    assert judge(bad, QualityThresholds()) is None  # no bounds, no rejection


def test_thresholds_defaults_overrides_and_errors(tmp_path):
    defaults = load_thresholds()
    assert defaults.jpeg_quality.min == 70 and defaults.noise_sigma.max == 6.0
    user = tmp_path / "q.yaml"
    user.write_text("sharpness: {min: 0.6}\ncolorfulness: null\nclipping: {max: null}\niqa: {musiq: {min: 55}}\n")
    t = load_thresholds(str(user))
    assert t.sharpness == Bounds(min=0.6) and t.colorfulness == Bounds() and t.clipping == Bounds()
    assert t.noise_sigma == defaults.noise_sigma  # untouched fields keep the defaults
    assert t.iqa["musiq"].min == 55 and t.iqa["clipiqa"] == defaults.iqa["clipiqa"]
    for text, match in [
        ("sharpnes: {min: 1}\n", "unknown key"),
        ("sharpness: {minimum: 1}\n", "unknown key"),
        ("sharpness: {min: high}\n", "number"),
        ("sharpness: 0.5\n", "mapping"),
        ("noise_sigma: {min: 5, max: 1}\n", "min 5.0 > max 1.0"),
        ("iqa: [musiq]\n", "iqa"),
        ("sharpness: {min: [\n", "not valid YAML"),
    ]:
        user.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_thresholds(str(user))
    with pytest.raises(ConfigError, match="does not exist"):
        load_thresholds(str(tmp_path / "missing.yaml"))


def test_judge_iqa():
    t = load_thresholds()
    assert judge_iqa({"musiq": 70.0, "clipiqa": 0.8}, t) is None
    assert judge_iqa({"musiq": 20.0, "clipiqa": 0.1}, t) == "low_quality:clipiqa"  # alphabetical
    assert judge_iqa({"brisque": 99.0}, t) is None  # no bounds configured: recorded, never rejects


def _listed_photos(min_short: int, n: int) -> list[np.ndarray]:
    """The first ``n`` calibration photos (Debian wallpaper packages) whose short side is >= min_short."""
    import yaml

    listing = yaml.safe_load(CALIBRATION.read_text())
    paths = [Path(listing["root"]) / rel for rel in listing["photo"]]
    if not all(p.exists() for p in paths):
        pytest.skip("calibration photos not installed: run scripts/setup_system.sh")
    out = []
    for path in paths:
        with Image.open(path) as img:
            if min(img.size) >= min_short:
                out.append(np.asarray(img.convert("RGB")))
        if len(out) == n:
            break
    return out


def _verdict(data: bytes, thresholds) -> str:
    d = decode(data, min_side=0, max_pixels=10**9)
    return judge(cheap_signals(d.pixels, d.scale, d.qtables, d.order), thresholds) or "accepted"


def test_real_photos_get_the_same_verdicts_at_512_1024_and_2048_px():
    # docs/quality.md tables every band; this is its regression test on four native >= 2048 px photos.
    thresholds = load_thresholds()
    rng = np.random.default_rng(0)
    for k, rgb in enumerate(_listed_photos(2048, 4)):
        for side in (512, 1024, 2048):
            f = side / min(rgb.shape[:2])
            img = cv2.resize(rgb, (round(rgb.shape[1] * f), round(rgb.shape[0] * f)), interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
            noisy = np.clip(img + rng.standard_normal(img.shape, dtype=np.float32) * 25, 0, 255).astype(np.uint8)
            small = cv2.resize(img, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
            files = {
                "clean": encode(img, "JPEG", quality=95),
                "blur": encode(cv2.GaussianBlur(img, (0, 0), 3.0), "JPEG", quality=95),
                "jpeg": encode(img, "JPEG", quality=10),
                "noise": encode(noisy, "JPEG", quality=95),
                "downup": encode(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), "JPEG", quality=95),
            }
            verdicts = {kind: _verdict(data, thresholds) for kind, data in files.items()}
            expected = {"clean": "accepted", "blur": "low_quality:sharpness", "jpeg": "low_quality:jpeg_quality",
                        "noise": "low_quality:noise_sigma", "downup": "low_quality:sharpness"}
            assert verdicts == expected, (k, side)


def test_flat_fraction_tells_a_gradient_from_a_photo():
    ramp = np.tile(np.linspace(20, 230, 1024, dtype=np.float32), (768, 1))
    gradient = np.dstack([ramp, ramp[::-1], np.full_like(ramp, 128)]).round().astype(np.uint8)
    assert cheap_signals(gradient, 1, None)["flat_fraction"] > 0.9
    assert judge(cheap_signals(gradient, 1, None), load_thresholds()) is not None
    assert cheap_signals(load_photo("astronaut.png"), 1, None)["flat_fraction"] < 0.1


def test_thresholds_stored_under_the_old_signals_follow_the_recalibration(tmp_path, caplog):
    from catalogs.catalog import Catalog
    from pipelines.ingest.command import resolve_thresholds
    from pipelines.ingest.quality import SIGNALS_VERSION, migrate_thresholds, thresholds_to_dict

    defaults = load_thresholds()
    old = thresholds_to_dict(defaults)
    old["sharpness"]["min"] = 0.465  # what a catalog scanned with signals v1 stored
    old["noise_sigma"]["max"] = 9.0  # and the v2 default
    catalog = Catalog(str(tmp_path))
    catalog.update_settings(quality_thresholds=old)
    migrated = resolve_thresholds(catalog, None)
    assert migrated.sharpness.min == defaults.sharpness.min == 0.44  # v1 -> v2 -> v3, step by step
    assert migrated.noise_sigma.max == defaults.noise_sigma.max == 6.0
    assert "sharpness min 0.465 -> 0.44" in caplog.text and "noise_sigma max 9.0 -> 6.0" in caplog.text
    # a bound the user chose is theirs; the current version migrates nothing
    chosen = QualityThresholds(sharpness=Bounds(min=0.5))
    assert migrate_thresholds(chosen, 1, defaults) == (chosen, [])
    catalog.update_settings(signals_version=SIGNALS_VERSION)
    assert resolve_thresholds(catalog, None).sharpness.min == 0.465  # stored under v3: kept as stored
