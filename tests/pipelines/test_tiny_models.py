"""`supir-data make-tiny-models`: offline tiny models that load through the real `from_pretrained` path."""

import json
from pathlib import Path

from supir.prompts import CAPTION_PROMPT


def test_make_tiny_models_cli(tmp_path, run_cli, tiny_models):
    from diffusers import StableDiffusionXLImg2ImgPipeline
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    out = tmp_path / "models"
    result = run_cli(tmp_path / "root", "make-tiny-models", out)
    assert f"llava: {out / 'llava'}" in result.output and f"sdxl: {out / 'sdxl'}" in result.output
    for name in ("llava", "sdxl"):
        marker = json.loads((out / name / "TINY_RANDOM_MODEL.json").read_text())
        assert "not a real model" in marker["warning"] or "nonsense" in marker["warning"]

    processor = AutoProcessor.from_pretrained(out / "llava")
    model = LlavaForConditionalGeneration.from_pretrained(out / "llava")
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids("<image>") == model.config.image_token_index
    ids = tok(f"USER: <image>\n{CAPTION_PROMPT} ASSISTANT:")["input_ids"]
    assert tok.unk_token_id not in ids  # the prompt is in the vocabulary
    assert processor.image_processor.crop_size["height"] == model.config.vision_config.image_size

    pipe = StableDiffusionXLImg2ImgPipeline.from_pretrained(out / "sdxl")
    assert pipe.config.requires_aesthetics_score is False  # base SDXL semantics

    # Same seed, same weights: the CLI's build equals the session fixture's.
    for rel in ("llava/model.safetensors", "sdxl/unet/diffusion_pytorch_model.safetensors"):
        assert (out / rel).read_bytes() == (Path(tiny_models[rel.split("/")[0]]).parent / rel).read_bytes()
