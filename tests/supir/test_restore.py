"""`supir.restore`: the size and conditioning rules of the two settings, E_dr and its guidance target,
and the CLI end to end on a tiny SDXL checkpoint (with a robust encoder and a tiny LLaVA captioner)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

import supir.restore as restore
from pipelines.devtools.tiny_models import build_tiny_llava
from supir.cli_main import cli_main
from supir.conditioning import decode_latents, encode_images, load_sdxl
from supir.model import SupirUNet
from supir.restore_loading import load_restorer
from supir.restore_settings import SETTINGS, working_size
from supir.robust_encoder import RobustEncoder
from supir.tiny_sdxl import build_tiny_sdxl


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny SDXL folder and a checkpoint folder with non-zero connectors and a robust encoder."""
    root = tmp_path_factory.mktemp("restore")
    sdxl = build_tiny_sdxl(root / "sdxl")
    parts = load_sdxl(sdxl)
    model = SupirUNet.from_unet(parts.unet, (1, 1))
    encoder = RobustEncoder(parts.vae)
    with torch.no_grad():  # "trained": the control path and E_dr differ from their starting points
        for i, p in enumerate([*model.trainable_parameters(), *encoder.parameters()]):
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(i)))
    ckpt = root / "step-000001"
    model.save_trainable(ckpt)
    encoder.save_pretrained(ckpt)
    (ckpt / "trainer_state.json").write_text(
        json.dumps({"step": 1, "config": {"model": {"pretrained": str(sdxl)}}})
    )
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(
        root / "lq.png"
    )
    return root, ckpt


def test_size_rules():
    # release: short side raised to 1024, each side rounded to 64 (numpy's half-to-even); output = input × upscale
    assert working_size(28, 20, 2, 1024, 64) == ((1408, 1024), (56, 40))
    assert working_size(1000, 750, 1, 1024, 64) == ((1344, 1024), (1000, 750))
    assert working_size(1500, 1200, 1, 1024, 64) == ((1472, 1216), (1500, 1200))  # large: only rounded
    # paper: the image's own size, a multiple of 8, at least 64
    assert working_size(28, 20, 2, 0, 8) == ((64, 64), (56, 40))
    assert working_size(300, 200, 1.5, 0, 8) == ((448, 304), (450, 300))
    assert (SETTINGS["release"].min_size, SETTINGS["release"].size_multiple) == (1024, 64)


def test_size_conditioning_is_1024_with_crop_zero_in_release(checkpoint):
    _, ckpt = checkpoint
    parts, model, _, _ = load_restorer(ckpt)
    z = torch.randn(1, 4, 8, 12, generator=torch.Generator().manual_seed(0))
    seen = []

    def spy(x, t, **cond):  # the real model, its size conditioning recorded
        seen.append(cond["added_cond_kwargs"]["time_ids"])
        return model(x, t, **cond)

    for fixed in (True, False):
        restore.make_denoiser(spy, parts, z, ["a cat"], "blur", fixed)(z, torch.tensor(1.0), 1.0)
    h, w = 8 * parts.vae_scale_factor, 12 * parts.vae_scale_factor
    assert seen[0].tolist() == [[1024, 1024, 0, 0, 1024, 1024]] * 2  # prompt and negative branch
    assert seen[1].tolist() == [[h, w, 0, 0, h, w]] * 2


def test_release_guidance_target_is_the_cleaned_posterior_sample(checkpoint, monkeypatch):
    """Restoration guidance pulls toward E(D(E_dr(x))) in release, toward z_LQ = E_dr(x) in paper."""
    _, ckpt = checkpoint
    parts, model, encoder, source = load_restorer(ckpt)
    assert encoder is not None and "E_dr" in source
    lq = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    targets = []
    real_sample = restore.restoration_guided_sample

    def spy(denoiser, z_target, config, generator=None, noise=None):
        targets.append(z_target)
        return real_sample(denoiser, z_target, config, generator=generator, noise=noise)

    monkeypatch.setattr(restore, "restoration_guided_sample", spy)
    for name in ("release", "paper"):
        settings = SETTINGS[name]
        sampler = dataclasses.replace(settings.sampler, steps=2, tau_r=4.0)
        restore.restore_batch(
            model, parts, lq, ["x"], sampler, "blur", torch.Generator().manual_seed(5), encoder, settings
        )
    z_dr = encode_images(encoder, lq, sample=False)
    cleaned = encode_images(
        parts.vae, decode_latents(parts.vae, z_dr), torch.Generator().manual_seed(5), sample=True
    )
    torch.testing.assert_close(targets[0], cleaned)
    torch.testing.assert_close(targets[1], z_dr)
    assert not torch.allclose(z_dr, encode_images(parts.vae, lq, sample=False))  # E_dr, not the VAE encoder
    assert (targets[0] - targets[1]).abs().max() > 1e-3


def test_restore_cli_release_and_paper_end_to_end(checkpoint, tmp_path, capsys):
    root, ckpt = checkpoint
    llava = build_tiny_llava(tmp_path / "llava")
    common = [
        str(root / "lq.png"),
        "--checkpoint",
        str(ckpt),
        "--steps",
        "2",
        "--upscale",
        "2",
        "--device",
        "cpu",
    ]
    # release at a 64-px minimum side (1024 is too large for the tiny model on CPU), captioned, UNet tiled
    release = [*common, "--settings", "release", "--min-size", "64", "--caption-model", str(llava)]
    release += ["--caption-max-tokens", "4", "--caption-size", "64"]
    assert restore.main([str(root / "lq.png"), str(tmp_path / "rel"), *release[1:]]) == 0
    out = capsys.readouterr().out
    assert "hint encoder: E_dr from" in out and "caption" in out
    assert (
        restore.main([str(root / "lq.png"), str(tmp_path / "tiled"), *release[1:], "--tile-size", "32"]) == 0
    )
    assert (
        restore.main([str(root / "lq.png"), str(tmp_path / "paper"), *common[1:], "--settings", "paper"]) == 0
    )
    images = {k: np.asarray(Image.open(tmp_path / k / "lq.png"), float) for k in ("rel", "tiled", "paper")}
    assert all(im.shape == (40, 56, 3) for im in images.values())
    assert np.abs(images["rel"] - images["paper"]).mean() > 1
    assert 0 < np.abs(images["rel"] - images["tiled"]).mean()  # tiles (32 px < 64 px) change the result
    assert restore.main([str(root / "missing.png"), str(tmp_path / "o"), "--checkpoint", str(ckpt)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_main_turns_project_errors_into_status_2(capsys):
    import argparse

    from schemas.errors import ConfigError

    def fail(args):
        raise ConfigError("bad thing")

    assert cli_main(argparse.ArgumentParser(), fail, []) == 2
    assert "error: bad thing" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        cli_main(argparse.ArgumentParser(), fail, ["--debug"])
    assert cli_main(argparse.ArgumentParser(), lambda args: None, []) == 0
