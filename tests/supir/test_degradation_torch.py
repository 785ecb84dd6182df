"""The torch backend: same recipe semantics as the CPU backend, per-sample gray noise, a JPEG close
to libjpeg, and the same input checks. Runs on CPU here (small images)."""

import dataclasses

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from schemas.errors import ConfigError, InputImageError
from supir.degradation import apply, apply_batch_torch, preset, rng_for, sample_recipe
from supir.degradation import torch_backend as tb
from supir.degradation.recipe import Noise
from tests.supir.test_degradation_cpu import estimate_jpeg_quality, plain_recipe


def photo(h=96, w=96):
    return np.ascontiguousarray(skimage.data.astronaut()[120 : 120 + h, 200 : 200 + w])


def to_tensor(*images) -> torch.Tensor:
    return torch.stack([torch.from_numpy(im).permute(2, 0, 1) for im in images]).float() / 255


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-10))


def without_noise(recipe):
    quiet = lambda order: None if order is None else dataclasses.replace(  # noqa: E731
        order, noise=dataclasses.replace(order.noise, level=0.0))
    return dataclasses.replace(recipe, first=quiet(recipe.first), second=quiet(recipe.second))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name, expected", [("realesrgan", (24, 24)), ("supir", (96, 96)), ("diffbir", (96, 96))])
def test_batch_shapes_grid_and_determinism(name, expected):
    cfg = preset(name)
    recipes = [sample_recipe(cfg, rng_for(2, f"t-{i}")) for i in range(4)]
    gt = to_tensor(*[photo()] * 4)
    out = apply_batch_torch(recipes, gt)
    assert out.shape == (4, 3, *expected) and out.dtype == torch.float32
    assert torch.equal(out, (out * 255).round() / 255)  # on the 8-bit grid, like the CPU backend's uint8
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, apply_batch_torch(recipes, gt))
    assert not torch.equal(out[0], out[1])


def test_same_recipe_semantics_as_the_cpu_backend():
    # noise realisations differ by design (different generators); without noise the two backends
    # differ only by JPEG arithmetic and the 'area' resize (cv2 exact area vs torch adaptive pooling)
    cfg, gt = preset("realesrgan"), photo()
    recipes = [without_noise(sample_recipe(cfg, rng_for(5, f"agree-{i}"))) for i in range(6)]
    out = apply_batch_torch(recipes, to_tensor(*[gt] * 6))
    values = [psnr(apply(r, gt), to_uint8(o)) for r, o in zip(recipes, out)]
    assert np.median(values) > 35 and min(values) > 28, values


def test_noise_levels_match_the_cpu_backend():
    flat = np.full((128, 128, 3), 128, np.uint8)
    for noise, tol in ((Noise("gaussian", 15.0, False, 1), 0.03), (Noise("poisson", 0.05, True, 2), 0.05)):
        recipe = plain_recipe(noise)
        cpu_std = (apply(recipe, flat).astype(np.float64) - 128).std()
        torch_std = (to_uint8(apply_batch_torch([recipe], to_tensor(flat))[0]).astype(np.float64) - 128).std()
        assert abs(torch_std / cpu_std - 1) < tol


def test_gray_noise_is_drawn_per_sample():
    # the reference drew one gray field for the whole batch; here each sample has its own
    flat = np.full((64, 64, 3), 128, np.uint8)
    recipes = [plain_recipe(Noise("gaussian", 20.0, True, seed)) for seed in (1, 2)]
    out = apply_batch_torch(recipes, to_tensor(flat, flat)) * 255 - 128
    assert torch.equal(out[0, 0], out[0, 1])  # gray: one field for the three channels
    corr = np.corrcoef(out[0, 0].ravel().numpy(), out[1, 0].ravel().numpy())[0, 1]
    assert abs(corr) < 0.1


@pytest.mark.parametrize("quality", [30, 60, 95])
def test_torch_jpeg_is_close_to_libjpeg(quality):
    gt = photo(120, 136)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(gt, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert estimate_jpeg_quality(buf.tobytes()) == quality  # the tables our torch JPEG uses
    libjpeg = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    ours = to_uint8(tb.jpeg(to_tensor(gt), quality)[0])
    assert psnr(libjpeg, ours) > 40
    # and it is a real compression: further from the GT than from libjpeg's result
    assert psnr(gt, ours) < psnr(libjpeg, ours) - 5


def test_gt_usm_matches_the_cpu_sharpening():
    from supir.degradation.cpu import usm_sharpen

    gt = photo()
    x = gt.astype(np.float32) / 255
    ref = usm_sharpen(cv2.cvtColor(x, cv2.COLOR_RGB2BGR))
    ours = tb.usm_sharpen(to_tensor(gt), 0.5, 50, 10.0)[0].permute(1, 2, 0).numpy()
    assert np.abs(cv2.cvtColor(ref, cv2.COLOR_BGR2RGB) - ours).max() < 2e-3


def test_tiny_images_and_input_checks():
    cfg = preset("realesrgan")
    recipes = [sample_recipe(cfg, rng_for(0, f"tiny-{i}")) for i in range(4)]
    assert apply_batch_torch(recipes, to_tensor(*[photo(12, 12)] * 4)).shape == (4, 3, 3, 3)
    gray = to_tensor(photo(16, 16))[:, :1]
    assert apply_batch_torch(recipes[:1], gray).shape == (1, 3, 4, 4)
    with pytest.raises(InputImageError, match="minimum side"):
        apply_batch_torch(recipes[:1], to_tensor(photo(6, 30)))
    with pytest.raises(InputImageError, match="Bx3xHxW"):
        apply_batch_torch(recipes[:1], torch.zeros(3, 32, 32))
    with pytest.raises(InputImageError, match="float"):
        apply_batch_torch(recipes[:1], torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="recipes for a batch"):
        apply_batch_torch(recipes[:2], to_tensor(photo()))
    mixed = [recipes[0], sample_recipe(preset("supir"), rng_for(0, "x"))]
    with pytest.raises(ConfigError, match="share scale and lq_size"):
        apply_batch_torch(mixed, to_tensor(photo(), photo()))


def test_gpu_convolution_paths_equal_the_cpu_fft_path_and_opencv():
    # on CPU every blur goes through the FFT; on a GPU through (separable) convolutions: same sums
    from supir.degradation import cpu, kernels
    from supir.degradation.kernels import KernelSpec

    gt = photo(40, 52)
    x = to_tensor(gt)
    bgr = cv2.cvtColor(gt, cv2.COLOR_RGB2BGR).astype(np.float32) / 255
    for spec in (KernelSpec("iso", 21, 2.0, 2.0), KernelSpec("aniso", 15, 2.5, 0.4, 1.0),
                 KernelSpec("sinc", 9, omega_c=1.2), KernelSpec("plateau_iso", 7, 1.0, 1.0, beta=1.5)):
        k = kernels.build(spec)
        via_fft = tb.fft_filter2d(x, k)
        torch.testing.assert_close(tb.filter2d(x, k), via_fft, atol=2e-6, rtol=0)
        if spec.separable:
            torch.testing.assert_close(tb.sep_filter2d(x, kernels.gaussian_1d(spec.size, spec.sigma_x)), via_fft,
                                       atol=2e-6, rtol=0)
        opencv = cv2.cvtColor(cpu.blur(bgr, spec), cv2.COLOR_BGR2RGB)
        np.testing.assert_allclose(via_fft[0].permute(1, 2, 0).numpy(), opencv, atol=2e-6)
    tiny = torch.rand(1, 3, 5, 4)  # smaller than the kernel: reflect-101 indices fold repeatedly
    k = kernels.build(KernelSpec("aniso", 21, 2.0, 1.0, 0.5))
    ref = cv2.filter2D(tiny[0].permute(1, 2, 0).numpy(), -1, k.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
    np.testing.assert_allclose(tb.filter2d(tiny, k)[0].permute(1, 2, 0).numpy(), ref, atol=2e-6)
    np.testing.assert_allclose(tb.fft_filter2d(tiny, k)[0].permute(1, 2, 0).numpy(), ref, atol=2e-6)
