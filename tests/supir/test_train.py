"""The trainer: overfits a batch, resumes exactly, validates, reads real shards through the reader."""

import pytest
import torch

from schemas.errors import ConfigError
from supir.conditioning import load_sdxl
from supir.model import SupirUNet
from supir.tiny_sdxl import build_tiny_sdxl
from supir.train import train, training_loss
from supir.train_config import load_config
from tests.supir.train_helpers import synthetic_batches, tiny_config


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "sdxl", seed=0)


def test_tiny_model_overfits_one_batch(sdxl_dir):
    torch.manual_seed(0)
    parts = load_sdxl(sdxl_dir)
    model = SupirUNet.from_unet(parts.unet, (1, 1))
    batch = synthetic_batches(1, batch_size=2, size=32)[0]
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        # The same timesteps and noise every step: one fixed regression target to memorise.
        loss = training_loss(model, parts, batch, torch.Generator().manual_seed(0))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"overfit: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    assert losses[-1] * 5 <= losses[0]


def test_resume_gives_the_same_next_step_loss(sdxl_dir, tmp_path):
    data = synthetic_batches(3, batch_size=2, size=32)  # 3 batches: step 4 starts a second epoch
    full = train(tiny_config(tmp_path / "full", sdxl_dir, "steps=5", "checkpoint_every=3"), batches=data)
    assert full["step"] == 5 and len(full["losses"]) == 5
    checkpoint = tmp_path / "full" / "checkpoints" / "step-000003"
    resumed = train(
        tiny_config(tmp_path / "resumed", sdxl_dir, "steps=5", f"resume={checkpoint}"), batches=data
    )
    assert resumed["losses"] == full["losses"][3:]  # bit-identical continuation
    # A run that did not train (fresh weights) would see a different loss at step 4.
    fresh = train(tiny_config(tmp_path / "fresh", sdxl_dir, "steps=1", "resume=null"), batches=data[:1])
    assert fresh["losses"][0] == full["losses"][0]
    log = (tmp_path / "full" / "log.csv").read_text().splitlines()
    assert log[0] == "step,name,value" and any(line.startswith("5,loss,") for line in log)


def test_gradient_accumulation_and_validation(sdxl_dir, tmp_path):
    data = synthetic_batches(4, batch_size=1, size=32)
    val = synthetic_batches(1, batch_size=1, size=32, seed=9)
    lines = []
    result = train(
        tiny_config(
            tmp_path / "run", sdxl_dir, "steps=2", "optim.grad_accum=2", "val.every=2", "val.sampler_steps=2"
        ),
        batches=data,
        val_batches=val,
        echo=lines.append,
    )
    assert len(result["losses"]) == 2
    assert any("validation" in line and "psnr" in line and "ssim" in line for line in lines)
    log = (tmp_path / "run" / "log.csv").read_text()
    assert "val/psnr" in log and "val/ssim" in log


def _random_lpips_weights(with_alexnet: bool) -> None:
    """Random stand-ins for pyiqa's LPIPS layers and torchvision's AlexNet, where they are looked for."""
    import torchvision
    from pyiqa.archs.lpips_arch import LPIPS

    from supir.validation import lpips_weight_files

    lpips_file, alexnet_file = lpips_weight_files()
    alexnet_file.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), alexnet_file)
    lpips_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(LPIPS(pretrained=False, net="alex", version="0.1").state_dict(), lpips_file)
    if not with_alexnet:
        alexnet_file.unlink()


@pytest.mark.parametrize("with_alexnet", [True, False])
def test_validation_reports_lpips_when_its_weights_are_on_disk(sdxl_dir, tmp_path, torch_hub, caplog, with_alexnet):
    import supir.validation

    supir.validation._warned.clear()
    _random_lpips_weights(with_alexnet)
    lines = []
    train(
        tiny_config(tmp_path / "run", sdxl_dir, "steps=1", "val.every=1", "val.sampler_steps=2"),
        batches=synthetic_batches(1, batch_size=1, size=32),
        val_batches=synthetic_batches(1, batch_size=1, size=32, seed=9),
        echo=lines.append,
    )
    validation = next(line for line in lines if "validation" in line)
    log = (tmp_path / "run" / "log.csv").read_text()
    if with_alexnet:
        assert "lpips" in validation and "val/lpips" in log
    else:  # pyiqa's LPIPS would try to download AlexNet: skipped with a warning, training goes on
        assert "lpips" not in validation and "psnr" in validation
        assert "alexnet-owt-7be5be79.pth is missing" in caplog.text


def test_config_errors_are_actionable(tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(None, ["optim.learning_rate=1e-4"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4  # YAML's "1e-4" is a string
    assert load_config("supir/configs/sdxl.yaml").optim.lr == 1e-5
    with pytest.raises(ConfigError, match="dist_backend"):
        load_config(None, ["dist_backend=mpi"])
    assert load_config("supir/configs/tiny.yaml", ["steps=3"]).steps == 3


def test_gradient_checkpointing_and_bf16_follow_the_fp32_run(sdxl_dir, tmp_path):
    # The GPU recipe's switches (sdxl.yaml), exercised on CPU: same losses up to rounding.
    data = synthetic_batches(2, batch_size=2, size=32)
    plain = train(tiny_config(tmp_path / "a", sdxl_dir, "steps=2"), batches=data)["losses"]
    ckpt = train(
        tiny_config(tmp_path / "b", sdxl_dir, "steps=2", "model.gradient_checkpointing=true"), batches=data
    )["losses"]
    lines = []
    bf16 = train(
        tiny_config(
            tmp_path / "c",
            sdxl_dir,
            "steps=2",
            "model.gradient_checkpointing=true",
            "model.frozen_dtype=bfloat16",
            "mixed_precision=bf16",
            "val.every=2",
            "val.sampler_steps=2",
        ),
        batches=data,
        val_batches=synthetic_batches(1, batch_size=1, size=32, seed=9),
        echo=lines.append,
    )["losses"]
    assert ckpt == pytest.approx(plain, rel=1e-5)
    assert bf16 == pytest.approx(plain, rel=0.05)
    # Validation samples with the bf16 frozen UNet and the fp32 adaptor (a GPU dry run found this broken).
    assert any("validation" in line and "psnr" in line for line in lines), lines


def test_sdxl_size_conditioning_follows_the_resize():
    from supir.conditioning import sdxl_time_ids
    from supir.train import prepare_images

    ids = sdxl_time_ids(torch.tensor([[1536, 2048]]), torch.tensor([[100, 300]]), (512, 512))
    assert ids.tolist() == [[1536.0, 2048.0, 100.0, 300.0, 512.0, 512.0]]  # SDXL's order: (h, w), (top, left)
    batch = synthetic_batches(1, batch_size=1, size=64)[0]
    gt, lq, factor = prepare_images(batch, 32, "cpu")
    assert gt.shape[-2:] == lq.shape[-2:] == (32, 32) and factor == 0.5
