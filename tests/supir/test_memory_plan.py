"""The memory plan: parameter counts from the real modules, optimiser bytes from the real optimisers."""

import pytest
import torch

from supir.lora import LoraSettings, add_lora
from supir.memory_plan import GIB, lora_parameter_count, memory_plan
from supir.model import SupirUNet, parameter_counts
from supir.optim import build_optimizer, state_bytes
from supir.tiny_sdxl import TINY_UNET_CONFIG, TINY_VAE_CONFIG, build_tiny_sdxl_pipeline

TINY_TEXT = (
    dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
         max_position_embeddings=77, projection_dim=32),
    dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
         max_position_embeddings=77, projection_dim=32),
)


def _by_name(plan):
    return {c.name: c for c in plan.components}


def test_sdxl_counts_equal_the_real_modules():
    plan = _by_name(memory_plan(adaptor_depth=(1, 2, 10), frozen_dtype="bfloat16"))
    counts = parameter_counts(transformer_layers_per_block=(1, 2, 10))
    assert plan["sdxl_unet"].params == counts["unet"] == 2_567_463_684
    assert plan["adaptor"].params == counts["adaptor"] == 1_243_378_880
    assert plan["connectors"].params == counts["connectors"]
    assert plan["vae"].params == 83_653_863
    assert plan["text_encoder"].params + plan["text_encoder_2"].params == 123_060_480 + 694_659_840
    assert plan["sdxl_unet"].weights == 2 * counts["unet"]  # bf16
    full = plan["adaptor"]
    assert (full.weights, full.grads, full.states) == (4 * full.params, 4 * full.params, 8 * full.params)


def test_plan_matches_the_trained_runs_measured_on_the_h200():
    # tests/benchmarks/results/gpu_check.json: [1, 1, 4], AdamW, bf16 frozen parts, batch 1 and 32 at 512².
    assert memory_plan(batch_size=1).peak / GIB == pytest.approx(17.25, rel=0.05)
    assert memory_plan(batch_size=32).peak / GIB == pytest.approx(23.7, rel=0.05)


@pytest.fixture(scope="module")
def tiny_unet():
    return build_tiny_sdxl_pipeline(seed=0).unet


def test_lora_count_equals_what_peft_adds(tiny_unet):
    settings = LoraSettings(rank=4, targets=["attention", "feed_forward", "conv"])
    model = SupirUNet.from_unet(tiny_unet, (1, 1))
    expected = lora_parameter_count(model.adaptor, settings)
    before = sum(p.numel() for p in model.adaptor.parameters())
    add_lora(model.adaptor, settings)
    after = sum(p.numel() for p in model.adaptor.parameters())
    assert expected > 0 and after - before == expected


@pytest.mark.parametrize("optim", ["adamw", "adamw8bit"])
def test_optimiser_bytes_equal_the_real_optimiser(tiny_unet, optim):
    model = SupirUNet.from_unet(tiny_unet, (1, 1))
    plan = _by_name(memory_plan(adaptor_depth=(1, 1), optim=optim, unet_config=TINY_UNET_CONFIG,
                                vae_config=TINY_VAE_CONFIG, text_configs=TINY_TEXT))
    params = model.trainable_parameters()
    opt = build_optimizer(params, optim, lr=1e-4)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    planned = plan["adaptor"].states + plan["connectors"].states
    measured = state_bytes(opt)
    # AdamW adds a scalar step per tensor; bitsandbytes adds per-block absmax and 256-entry quantisation
    # maps per tensor, which weigh a few % at these tiny sizes and nothing at SDXL's.
    assert measured == pytest.approx(planned, rel=0.001 if optim == "adamw" else 0.15)


def test_presets_fit_their_cards():
    # The 24 GB preset: full [1, 2, 10] adaptor, 8-bit AdamW, cached text, checkpointing, batch 1 at 512².
    full = memory_plan(adaptor_depth=(1, 2, 10), optim="adamw8bit", cached_text=True, robust_encoder=True)
    assert full.peak / GIB < 22
    assert full.trainable_params == 1_243_378_880 + parameter_counts()["connectors"]
    # The 16 GB preset: LoRA on attention + feed-forward, connectors full, 8-bit AdamW.
    lora = memory_plan(adaptor_depth=(1, 2, 10), optim="adamw8bit", cached_text=True, robust_encoder=True,
                       lora=LoraSettings(rank=64))
    assert lora.peak / GIB < 14
    assert lora.trainable_params < full.trainable_params / 5
    # Without the savings the same model does not fit 24 GB: the plan is what tells the user.
    assert memory_plan(adaptor_depth=(1, 2, 10)).peak / GIB > 24


@pytest.mark.parametrize(
    "preset, target", [("finetune-v0q-24gb.yaml", 22), ("finetune-v0q-lora-16gb.yaml", 14)]
)
def test_preset_configs_plan_under_their_targets(preset, target, capsys):
    from supir.memory_plan import main

    assert main(["--config", f"supir/configs/{preset}"]) == 0
    out = capsys.readouterr().out
    peak = float(out.split("expected peak (torch.cuda.max_memory_allocated): ")[1].split(" GiB")[0])
    assert 0 < peak < target
    assert out.count(" cpu") == 2  # cached text: both text encoders stay off the GPU
