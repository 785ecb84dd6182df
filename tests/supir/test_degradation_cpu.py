"""The CPU backend: measured effects (noise level, JPEG quality, output size), reproducibility,
and every kind of awkward input."""

import dataclasses

import cv2
import numpy as np
import pytest
import skimage.data
from scipy import stats

from schemas.errors import InputImageError
from supir.degradation import (
    Recipe,
    apply,
    cpu,
    kernels,
    lq_shape,
    preset,
    rng_for,
    sample_recipe,
    usm_sharpen_uint8,
)
from supir.degradation import noise as noise_fields
from supir.degradation.jpeg import quant_tables
from supir.degradation.kernels import KernelSpec
from supir.degradation.recipe import Noise, Order, Resize

ZIGZAG = [0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
          14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39,
          46, 53, 60, 61, 54, 47, 55, 62, 63]


def jpeg_quant_tables(data: bytes) -> dict[int, np.ndarray]:
    """The 8x8 quantisation tables (row-major) of a baseline JPEG, by table id, read from its DQT segments."""
    tables, i = {}, 2
    while i < len(data) - 4:
        assert data[i] == 0xFF, "not at a marker"
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDB:
            seg, j = data[i + 4 : i + 2 + length], 0
            while j < len(seg):
                precision, table_id = seg[j] >> 4, seg[j] & 15
                assert precision == 0, "16-bit tables are not baseline"
                zz = np.frombuffer(seg[j + 1 : j + 65], np.uint8)
                t = np.empty(64, np.int64)
                t[ZIGZAG] = zz
                tables[table_id] = t.reshape(8, 8)
                j += 65
        if marker == 0xDA:  # start of scan: no more tables
            break
        i += 2 + length
    return tables


def estimate_jpeg_quality(data: bytes) -> int:
    """The libjpeg quality whose scaled Annex K tables are exactly this file's tables."""
    t = jpeg_quant_tables(data)
    matches = [q for q in range(1, 101) if all(np.array_equal(t[i], quant_tables(q)[i]) for i in (0, 1))]
    assert len(matches) == 1, f"tables match qualities {matches}"
    return matches[0]


def photo(h=64, w=64):
    return np.ascontiguousarray(skimage.data.astronaut()[100 : 100 + h, 180 : 180 + w])


def plain_recipe(noise: Noise, scale: int = 1, jpeg_quality=None) -> Recipe:
    """One order, no blur, no resize: the LQ is exactly GT + noise (+ JPEG)."""
    order = Order(kernel=None, resize=Resize("keep", 1.0, "area"), noise=noise, jpeg_quality=jpeg_quality)
    return Recipe(scale=scale, lq_size="scaled", resize_back_mode="bicubic", gt_usm=False, usm_weight=0.5,
                  usm_radius=50, usm_threshold=10.0, first=order, second=None, final=None)


# ------------------------------------------------------------------------------ output
@pytest.mark.parametrize(
    "name, h, w, expected",
    [("realesrgan", 64, 64, (16, 16)), ("realesrgan", 45, 67, (11, 16)), ("stablesr", 40, 52, (10, 13)),
     ("supir", 48, 64, (48, 64)), ("supir", 37, 29, (37, 29)), ("diffbir", 50, 60, (50, 60))],
)
def test_output_size_and_type(name, h, w, expected):
    cfg = preset(name)
    gt = photo(h, w)
    for i in range(6):
        recipe = sample_recipe(cfg, rng_for(3, f"{name}-{i}"))
        lq = apply(recipe, gt)
        assert lq.dtype == np.uint8 and lq.shape == (*expected, 3)
        assert lq_shape(recipe, h, w) == expected


def test_same_recipe_same_bytes_different_keys_different_lq():
    cfg, gt = preset("realesrgan"), photo()
    a = apply(sample_recipe(cfg, rng_for(11, "img-a")), gt)
    b = apply(sample_recipe(cfg, rng_for(11, "img-a")), gt)
    assert a.tobytes() == b.tobytes()
    others = [apply(sample_recipe(cfg, rng_for(11, f"img-{k}")), gt) for k in "bcd"]
    assert all(o.tobytes() != a.tobytes() for o in others)


# ----------------------------------------------------------------------- measured effects
@pytest.mark.parametrize("sigma", [1.0, 12.0, 30.0])
def test_gaussian_sigma_measured_on_a_flat_image(sigma):
    flat = np.full((192, 192, 3), 128, np.uint8)
    lq = apply(plain_recipe(Noise("gaussian", sigma, False, seed=5)), flat).astype(np.float64) - 128
    expected = np.sqrt(sigma**2 + 1 / 12)  # + the variance of rounding to 8 bits
    assert abs(lq.std() / expected - 1) < 0.03
    assert abs(np.corrcoef(lq[..., 0].ravel(), lq[..., 1].ravel())[0, 1]) < 0.05  # colour noise
    gray = apply(plain_recipe(Noise("gaussian", sigma, True, seed=5)), flat).astype(np.float64) - 128
    assert abs(gray.std() / expected - 1) < 0.03
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])  # one field for all channels


def test_poisson_level_measured_on_flat_images():
    # one level: 1 distinct value -> vals = 1 photon per unit, rate 128/255
    scale = 0.05
    flat = np.full((192, 192, 3), 128, np.uint8)
    lq = apply(plain_recipe(Noise("poisson", scale, False, seed=9)), flat).astype(np.float64) - 128
    expected = scale * np.sqrt(128 / 255) * 255
    assert abs(lq.std() / np.sqrt(expected**2 + 1 / 12) - 1) < 0.03
    # two levels: vals = 2, so the noise of each half shrinks by sqrt(2) relative to a single photon
    two = np.full((192, 192, 3), 64, np.uint8)
    two[:, 96:] = 192
    lq2 = apply(plain_recipe(Noise("poisson", scale, True, seed=9)), two).astype(np.float64) - two
    gray_level = 64  # the left half in gray: 64 in every channel
    expected_left = scale * np.sqrt(gray_level * 2 / 255) / 2 * 255
    assert abs(lq2[:, :96].std() / np.sqrt(expected_left**2 + 1 / 12) - 1) < 0.05
    np.testing.assert_array_equal(lq2[..., 0], lq2[..., 1])


@pytest.mark.parametrize("level, vals", [(3, 256), (128, 256), (254, 256), (7, 8), (200, 64)])
def test_poisson_sampler_matches_the_poisson_pmf(level, vals):
    counts = noise_fields.poisson_counts(np.full((250, 250), level, np.uint8), vals, np.random.default_rng(level))
    rate = level * vals / 255
    ks = np.arange(int(rate + 8 * np.sqrt(rate) + 10))
    observed = np.bincount(counts.ravel().astype(int), minlength=len(ks))[: len(ks)]
    expected = stats.poisson.pmf(ks, rate) * counts.size
    keep = expected > 5
    assert stats.chisquare(observed[keep], expected[keep] * observed[keep].sum() / expected[keep].sum()).pvalue > 1e-4
    assert abs(counts.mean() - rate) < 4 * np.sqrt(rate / counts.size) + 1e-9


def test_jpeg_quality_read_from_the_quantisation_tables(monkeypatch):
    seen = []
    real = cpu.encode_jpeg

    def spy(bgr, quality):
        buf = real(bgr, quality)
        seen.append(estimate_jpeg_quality(buf.tobytes()))
        return buf

    monkeypatch.setattr(cpu, "encode_jpeg", spy)
    cfg, gt = preset("realesrgan"), photo()
    for i in range(12):
        recipe = sample_recipe(cfg, rng_for(4, f"jpeg-{i}"))
        seen.clear()
        apply(recipe, gt)
        assert seen == [recipe.first.jpeg_quality, recipe.final.jpeg_quality]
        assert all(cfg.jpeg_range[0] <= q <= cfg.jpeg_range[1] for q in seen)


def test_blur_paths_match_the_padded_21x21_filter2d_of_the_reference():
    img = photo(80, 90).astype(np.float32) / 255
    for spec in (KernelSpec("iso", 13, 2.0, 2.0), KernelSpec("aniso", 21, 2.5, 0.4, 1.0),
                 KernelSpec("plateau_aniso", 7, 1.0, 2.0, 0.3, beta=1.5), KernelSpec("sinc", 17, omega_c=1.0)):
        padded = np.pad(kernels.build(spec), (21 - spec.size) // 2).astype(np.float32)
        ref = cv2.filter2D(img, -1, padded, borderType=cv2.BORDER_REFLECT_101)
        np.testing.assert_allclose(cpu.blur(img, spec), ref, atol=2e-6)


# ------------------------------------------------------------------------------- inputs
def test_grayscale_inputs_are_promoted_to_rgb():
    cfg = preset("realesrgan")
    recipe = sample_recipe(cfg, rng_for(0, "gray"))
    gray = photo()[..., 1].copy()
    rgb = np.repeat(gray[..., None], 3, axis=2)
    expected = apply(recipe, rgb)
    assert apply(recipe, gray).tobytes() == expected.tobytes()
    assert apply(recipe, gray[..., None]).tobytes() == expected.tobytes()


@pytest.mark.parametrize("side, lq_side", [(16, 4), (8, 2), (9, 2)])
def test_tiny_images_smaller_than_the_kernels_are_degraded(side, lq_side):
    cfg = preset("realesrgan")
    for i in range(8):
        lq = apply(sample_recipe(cfg, rng_for(1, f"tiny-{i}")), photo(side, side))
        assert lq.shape == (lq_side, lq_side, 3)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((7, 40, 3), np.uint8), "smaller than the minimum side"),
        (np.broadcast_to(np.zeros(1, np.uint8), (5000, 4000, 3)), "max_gt_pixels"),
        (np.zeros((32, 32, 3), np.float32), "uint8"),
        (np.zeros((32, 32, 4), np.uint8), "alpha"),
        (np.zeros((32, 32, 3, 1), np.uint8), "HxWx3"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_unusable_inputs_are_refused_with_a_clear_error(image, message):
    recipe = sample_recipe(preset("realesrgan"), rng_for(0, "bad"))
    with pytest.raises(InputImageError, match=message):
        apply(recipe, image)


def test_limits_come_from_the_config():
    cfg = preset("realesrgan").replace(max_gt_pixels=32 * 32, min_gt_side=16)
    recipe = sample_recipe(cfg, rng_for(0, "limits"))
    apply(recipe, photo(32, 32))
    with pytest.raises(InputImageError, match="max_gt_pixels"):
        apply(recipe, photo(33, 32))
    with pytest.raises(InputImageError, match="minimum side 16"):
        apply(recipe, photo(15, 40))


# ---------------------------------------------------------------------------------- USM
def test_gt_usm_sharpens_edges_and_leaves_flat_regions_alone():
    edge = np.zeros((64, 64, 3), np.uint8)
    edge[:, 32:] = 200
    soft = cv2.GaussianBlur(edge, (0, 0), 2)
    sharp = usm_sharpen_uint8(soft)
    grad = lambda im: np.abs(np.diff(im.astype(np.float64), axis=1)).max()  # noqa: E731
    assert grad(sharp) > 1.2 * grad(soft)
    flat = np.full((40, 40, 3), 90, np.uint8)
    np.testing.assert_array_equal(usm_sharpen_uint8(flat), flat)
    recipe = sample_recipe(preset("realesrgan").replace(gt_usm=True), rng_for(0, "usm"))
    assert recipe.gt_usm
    off = dataclasses.replace(recipe, gt_usm=False)
    assert apply(recipe, photo()).tobytes() != apply(off, photo()).tobytes()


def test_apply_leaves_the_gt_untouched_and_accepts_views():
    gt = photo(70, 90)
    before = gt.copy()
    recipe = sample_recipe(preset("realesrgan").replace(gt_usm=True), rng_for(0, "untouched"))
    lq = apply(recipe, gt)
    np.testing.assert_array_equal(gt, before)
    strided = skimage.data.astronaut()[100:240:2, 180:360:2]  # a non-contiguous view
    assert apply(recipe, strided).tobytes() == apply(recipe, np.ascontiguousarray(strided)).tobytes()
    assert lq.shape == (17, 22, 3)


def test_same_bytes_in_another_process():
    # seeds come from (global seed, key) through SHA-256, never from Python's per-process hash
    import hashlib
    import subprocess
    import sys

    code = (
        "import hashlib, skimage.data\n"
        "from supir.degradation import apply, preset, rng_for, sample_recipe\n"
        "gt = skimage.data.astronaut()[100:164, 180:244].copy()\n"
        "lq = apply(sample_recipe(preset('supir'), rng_for(42, 'abc123')), gt)\n"
        "print(hashlib.sha256(lq.tobytes()).hexdigest())\n"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"}).stdout.strip()
    here = apply(sample_recipe(preset("supir"), rng_for(42, "abc123")), photo())
    assert other == hashlib.sha256(here.tobytes()).hexdigest()
