"""Table 1's degradation presets measured on the LQ they make: scale, blur σ, noise σ, JPEG quality read
from the file's quantisation tables; built from the degradation engine; the paper's test crop."""

import io

import numpy as np
import pytest
from PIL import Image

from schemas.errors import ConfigError
from supir.degradation import apply
from supir.degradation.jpeg import LUMA_BY_QUALITY, quant_tables
from supir.eval_protocol import DEGRADATIONS, degrade, parse_degradations, protocol_crop, recipe


def _photo(h=256, w=192, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, 128 + 60 * np.sin(xx / 5)], axis=2) + rng.normal(0, 8, (h, w, 3))
    return img.clip(0, 255).astype(np.uint8)


def test_each_preset_is_the_engines_recipe_at_its_scale_and_deterministic():
    gt = _photo()
    for d in DEGRADATIONS.values():
        lq, jpeg = degrade(d, gt, 0, "img")
        assert lq.shape == (256 // d.scale, 192 // d.scale, 3)
        np.testing.assert_array_equal(lq, apply(recipe(d, 0, "img"), gt))  # the engine's own walk
        np.testing.assert_array_equal(lq, degrade(d, gt, 0, "img")[0])  # same (seed, image): same bytes
        assert (jpeg is not None) == (d.jpeg_quality is not None)
    noisy = DEGRADATIONS["sr4_noise40"]
    assert not np.array_equal(degrade(noisy, gt, 0, "img")[0], degrade(noisy, gt, 0, "other")[0])
    assert not np.array_equal(degrade(noisy, gt, 0, "img")[0], degrade(noisy, gt, 1, "img")[0])


def _amplitude(lq: np.ndarray, period: float) -> float:
    """Amplitude of the cosine of ``period`` (LQ pixels) along x, away from the borders."""
    row = lq[:, :, 1].astype(np.float64).mean(0)[8:-8]
    x = np.arange(8, 8 + row.size)
    basis = np.stack([np.cos(2 * np.pi * x / period), np.sin(2 * np.pi * x / period), np.ones_like(x)], 1)
    coef = np.linalg.lstsq(basis, row, rcond=None)[0]
    return float(np.hypot(coef[0], coef[1]))


def test_blur_sigma_measured_from_a_grating():
    """A cosine of frequency f loses exp(-2π²σ²f²) of its amplitude through a Gaussian of σ; the ↓4 that
    follows attenuates the sharp and the blurred LQ alike, so their ratio gives σ."""
    period = 16  # GT pixels: 4 LQ pixels after ↓4
    x = np.arange(256)
    gt = np.repeat((128 + 100 * np.cos(2 * np.pi * x / period))[None, :, None], 256, 0).repeat(3, 2)
    gt = gt.round().astype(np.uint8)
    sharp = _amplitude(degrade(DEGRADATIONS["sr4"], gt, 0, "g")[0], period / 4)
    blurred = _amplitude(degrade(DEGRADATIONS["blur2_sr4"], gt, 0, "g")[0], period / 4)
    sigma = np.sqrt(-np.log(blurred / sharp) / (2 * np.pi**2 / period**2))
    assert sigma == pytest.approx(2.0, abs=0.05)


def test_noise_sigma_measured_on_flat_gray():
    gt = np.full((512, 512, 3), 128, np.uint8)
    clean = degrade(DEGRADATIONS["sr4"], gt, 0, "flat")[0].astype(np.float64)
    noisy = degrade(DEGRADATIONS["sr4_noise40"], gt, 0, "flat")[0].astype(np.float64)
    assert np.all(clean == 128)
    assert (noisy - clean).std() == pytest.approx(40, abs=1.0)  # 8-bit levels; clipping at 0/255 is > 3σ away
    assert abs((noisy - clean).mean()) < 1.0
    assert recipe(DEGRADATIONS["blur2_sr4_noise20_jpeg50"], 0, "flat").first.noise.level == 20


def test_jpeg_quality_read_back_from_the_quantisation_tables():
    gt = _photo()
    lq, data = degrade(DEGRADATIONS["blur2_sr4_noise20_jpeg50"], gt, 3, "img")
    with Image.open(io.BytesIO(data)) as jpeg:
        assert jpeg.format == "JPEG"
        luma = np.array(jpeg.quantization[0])
        chroma = np.array(jpeg.quantization[1])
        np.testing.assert_array_equal(np.asarray(jpeg.convert("RGB")), lq)  # the file is the LQ
    estimated = [q + 1 for q, table in enumerate(LUMA_BY_QUALITY) if np.array_equal(np.sort(table), np.sort(luma))]
    assert estimated == [50]
    assert sorted(chroma) == sorted(quant_tables(50)[1].ravel())


def test_protocol_crop_is_short_side_1024_centre_crop():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 1500, 3), dtype=np.uint8))
    crop, back = protocol_crop(image)
    assert crop.size == (1024, 1024) and back == (1000, 1000)  # resized back to the crop's original size
    same = Image.fromarray(np.arange(64 * 80 * 3, dtype=np.uint8).reshape(80, 64, 3))
    crop, back = protocol_crop(same, 64)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(same)[8:72])  # no resize: only the centre crop
    assert back == (64, 64)


def test_unknown_degradation_is_refused():
    assert [d.name for d in parse_degradations("sr8, sr4,sr8")] == ["sr8", "sr4"]
    with pytest.raises(ConfigError, match="choose from sr4, sr8"):
        parse_degradations("sr3")
