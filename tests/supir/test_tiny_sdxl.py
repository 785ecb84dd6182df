"""The tiny SDXL folder loads through the same diffusers code as the real model, and runs."""

import hashlib
import json

import pytest
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

from supir.tiny_sdxl import build_tiny_sdxl, build_tiny_sdxl_pipeline


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory):
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny") / "sdxl", seed=0)


def _digest(folder):
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_folder_is_a_complete_sdxl(tiny_sdxl_dir):
    index = json.loads((tiny_sdxl_dir / "model_index.json").read_text())
    for component in (
        "unet",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ):
        assert component in index and (tiny_sdxl_dir / component).is_dir(), component
    assert index["text_encoder"][1] == "CLIPTextModel"
    assert index["text_encoder_2"][1] == "CLIPTextModelWithProjection"
    assert index["scheduler"][1] == "EulerDiscreteScheduler"


def test_round_trip_keeps_weights_and_sdxl_semantics(tiny_sdxl_dir):
    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_sdxl_dir)
    assert pipe.config.requires_aesthetics_score is False
    # 6 time ids (original size, crop, target size) × 8 + pooled 32 = the base model's add embedding.
    assert pipe.unet.config.projection_class_embeddings_input_dim == 6 * 8 + 32
    assert pipe.vae_scale_factor == 8
    sched = pipe.scheduler.config
    assert (sched.beta_start, sched.beta_end, sched.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert sched.timestep_spacing == "leading" and sched.steps_offset == 1
    fresh = build_tiny_sdxl_pipeline(seed=0)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        loaded, built = getattr(pipe, name).state_dict(), getattr(fresh, name).state_dict()
        assert loaded.keys() == built.keys()
        assert all(torch.equal(loaded[k], built[k]) for k in loaded), name
    ids = pipe.tokenizer("a photo of a cat").input_ids
    assert ids[0] == pipe.tokenizer.bos_token_id and ids[-1] == pipe.tokenizer.eos_token_id
    assert len(ids) < len("a photo of a cat") + 2  # BPE merges, not bytes


def test_same_seed_same_bytes_other_seed_differs(tiny_sdxl_dir, tmp_path):
    assert _digest(build_tiny_sdxl(tmp_path / "again", seed=0)) == _digest(tiny_sdxl_dir)
    assert _digest(build_tiny_sdxl(tmp_path / "other", seed=1)) != _digest(tiny_sdxl_dir)


def test_img2img_and_text_to_image_run(tiny_sdxl_dir):
    img2img = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_sdxl_dir)
    image = torch.rand(1, 3, 64, 64)
    out = img2img(
        "a photo of a cat",
        image=image,
        strength=0.5,
        num_inference_steps=4,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    text2img = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir)
    out = text2img(
        "a cat", num_inference_steps=2, output_type="pt", generator=torch.Generator().manual_seed(0)
    )
    assert out.images.shape == (1, 3, 64, 64)
