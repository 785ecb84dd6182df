"""Table 1's metrics on known pairs: PSNR in closed form (Y and RGB, crop border), SSIM against
scikit-image's Gaussian-window SSIM on BT.601 luma, LPIPS against its definition computed here from the
same (random stand-in) weights; missing weights give `missing: put FILE at PATH`, never a skip."""

import numpy as np
import pytest
import torch

from supir.eval_metrics import Conventions, Scorer, missing_weights


def _pair(seed=0, shape=(48, 64, 3), noise=20):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, shape, dtype=np.uint8)
    b = np.clip(a + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
    return a, b


def _luma(rgb):
    x = rgb.astype(np.float64)
    return 16 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255  # BT.601, MATLAB rgb2ycbcr


def test_psnr_of_a_constant_offset_in_closed_form(torch_hub):
    gt = np.full((32, 32, 3), 100, np.uint8)
    y = Scorer(["psnr"], "cpu").score(gt + np.uint8(10), gt)["psnr"][0]
    rgb = Scorer(["psnr"], "cpu", Conventions("rgb")).score(gt + np.uint8(10), gt)["psnr"][0]
    assert y == pytest.approx(20 * np.log10(255 / (10 * 219 / 255)), abs=1e-3)  # Y moves by 219/255 per level
    assert rgb == pytest.approx(20 * np.log10(255 / 10), abs=1e-3)
    border = gt.copy()
    border[:2] = 0  # a difference only in the 2-px border
    cropped = Scorer(["psnr"], "cpu", Conventions("y", crop_border=2)).score(border, gt)["psnr"][0]
    assert cropped > 70 and Scorer(["psnr"], "cpu").score(border, gt)["psnr"][0] < 25


def test_ssim_equals_scikit_images_gaussian_ssim_on_luma(torch_hub):
    from skimage.metrics import structural_similarity

    a, b = _pair()
    ours = Scorer(["ssim"], "cpu").score(b, a)["ssim"][0]
    reference = structural_similarity(_luma(a), _luma(b), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255)  # fmt: skip
    assert ours == pytest.approx(reference, abs=5e-4)
    assert Scorer(["ssim"], "cpu").score(a, a)["ssim"][0] == pytest.approx(1.0, abs=1e-6)


def _lpips_reference(x: torch.Tensor, y: torch.Tensor, alexnet_file, lpips_file) -> float:
    """LPIPS v0.1 by its definition (Zhang et al. 2018, Eq. 1): unit-normalised AlexNet relu1..5
    features, squared differences weighted per channel by the linear layers, spatial mean, summed."""
    import torchvision

    features = torchvision.models.alexnet().features
    features.load_state_dict({k.removeprefix("features."): v for k, v in torch.load(alexnet_file).items()
                              if k.startswith("features.")})  # fmt: skip
    lins = torch.load(lpips_file)
    shift = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
    scale = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]

    def taps(img):
        h, out = ((2 * img - 1) - shift) / scale, []
        for i, layer in enumerate(features):
            h = layer(h)
            if i in (1, 4, 7, 9, 11):  # after each ReLU
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    total = 0.0
    for k, (f0, f1) in enumerate(zip(taps(x), taps(y))):
        w = lins[f"lin{k}.model.1.weight"]
        total += float(torch.nn.functional.conv2d((f0 - f1) ** 2, w).mean())
    return total


def test_lpips_equals_its_definition_with_the_weights_on_disk(torch_hub):
    import torchvision

    from supir.pyiqa_import import import_pyiqa
    from supir.validation import lpips_weight_files

    assert missing_weights("lpips").startswith("missing: put LPIPS_v0.1_alex-df73285e.pth at ")
    lpips_file, alexnet_file = lpips_weight_files()
    alexnet_file.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), alexnet_file)
    import_pyiqa()
    from pyiqa.archs.lpips_arch import LPIPS

    lpips_file.parent.mkdir(parents=True)
    state = LPIPS(pretrained=False, net="alex", version="0.1").state_dict()
    torch.save({k: v.abs() if k.startswith("lin") else v for k, v in state.items()}, lpips_file)  # weights ≥ 0
    assert missing_weights("lpips") is None
    scorer = Scorer(["lpips"], "cpu")
    a, b = _pair(1, (64, 64, 3))
    value = scorer.score(b, a)["lpips"][0]
    x, y = (torch.from_numpy(v.astype(np.float32) / 255).permute(2, 0, 1)[None] for v in (b, a))
    with torch.no_grad():
        assert value == pytest.approx(_lpips_reference(x, y, alexnet_file, lpips_file), rel=1e-4)
    assert value > 0 and scorer.score(a, a)["lpips"][0] == pytest.approx(0.0, abs=1e-6)


def test_missing_no_reference_weights_name_the_file_and_where_to_put_it(torch_hub):
    scorer = Scorer(["psnr", "musiq", "clipiqa", "maniqa"], "cpu")
    a, b = _pair()
    scores = scorer.score(b, a)
    assert scores["psnr"][1] is None and scores["psnr"][0] > 10
    assert scores["musiq"] == (None, f"missing: put musiq_koniq_ckpt-e95806b9.pth at {torch_hub}/pyiqa/"
                               "musiq_koniq_ckpt-e95806b9.pth (download: https://huggingface.co/chaofengc/"
                               "IQA-PyTorch-Weights/resolve/main/musiq_koniq_ckpt-e95806b9.pth)")  # fmt: skip
    assert scores["clipiqa"][1].startswith(f"missing: put RN50.pt at {torch_hub}/clip/RN50.pt")
    assert "ckpt_koniq10k.pt" in scores["maniqa"][1]
    assert set(Scorer(["psnr", "musiq"], "cpu").score(b, None)) == {"musiq"}  # no reference: NR only


def test_no_reference_metric_with_its_weights_in_weights_dir_scores(torch_hub, tmp_path):
    """MUSIQ built by pyiqa from a random state dict saved under the file name it looks for."""
    from supir.iqa_weights import METRICS
    from supir.pyiqa_import import create_metric

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    torch.save(create_metric("musiq", pretrained=False, device="cpu").net.state_dict(),
               weights / METRICS["musiq"].files[0].name)  # fmt: skip
    assert missing_weights("musiq", str(weights)) is None
    assert missing_weights("musiq").endswith("musiq_koniq_ckpt-e95806b9.pth)")  # the cache: still missing
    a, b = _pair(2, (96, 96, 3))
    value, note = Scorer(["musiq"], "cpu", weights_dir=str(weights)).score(b, None)["musiq"]
    assert note is None and np.isfinite(value)
