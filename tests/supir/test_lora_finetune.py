"""LoRA fine-tuning from a released checkpoint: train, checkpoint (LoRA only), resume, merge, export, import."""

from pathlib import Path

import torch
from safetensors.torch import load_file

from supir import convert
from supir.checkpoint import LORA_WEIGHTS
from supir.convert import import_release
from supir.lora import main as lora_main
from supir.model import SupirUNet
from supir.tiny_sdxl import build_tiny_sdxl, build_tiny_sdxl_pipeline
from supir.train import train
from supir.train_config import load_config
from tests.supir.test_convert import RELEASE, _state
from tests.supir.train_helpers import synthetic_batches

PRESET = Path(__file__).parents[2] / "supir" / "configs" / "finetune-v0q-lora-16gb.yaml"


def _config(sdxl, init, run, steps, *extra):
    return load_config(PRESET, [
        f"model.pretrained={sdxl}", "model.adaptor_depth=[1, 2]", f"init_from={init}",
        "model.frozen_dtype=float32", "model.gradient_checkpointing=false", "mixed_precision='no'",
        f"output_dir={run}", "device=cpu", f"steps={steps}", "optim.lr=1e-2", "optim.warmup_steps=0",
        "optim.grad_accum=1", "val.every=0", "checkpoint_every=1", "data.cached_text=false", "lora.rank=4",
        *extra,
    ])  # fmt: skip


def test_lora_finetune_checkpoints_lora_only_and_merges_to_an_exportable_model(tmp_path):
    sdxl = build_tiny_sdxl(tmp_path / "sdxl", seed=0)
    base = tmp_path / "imported"
    assert convert.main(["import", str(RELEASE), "--pretrained", str(sdxl), "--out", str(base)]) == 0
    run = tmp_path / "run"
    result = train(_config(sdxl, base, run, 2), batches=synthetic_batches(3, batch_size=1, size=32),
                   echo=lambda _: None)
    ckpt = result["checkpoint"]
    lora = load_file(ckpt / LORA_WEIGHTS)
    assert {k for k in lora if not k.startswith("hint_conv.")} and all(
        "lora_" in k or k in ("hint_conv.weight", "hint_conv.bias") for k in lora
    )
    assert not (ckpt / "adaptor.safetensors").exists()  # the frozen base is not copied into checkpoints
    assert (ckpt / "connectors.safetensors").exists() and (ckpt / "robust_encoder.safetensors").exists()
    assert any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # LoRA learned something

    # Resume (same command, more steps) continues from the LoRA checkpoint.
    logs = []
    more = train(_config(sdxl, base, run, 3), batches=synthetic_batches(3, batch_size=1, size=32),
                 echo=logs.append)
    assert any("resumed from" in line and "step 2" in line for line in logs) and more["step"] == 3

    # Merge -> a plain checkpoint folder whose forward equals the LoRA model's, then export and import.
    merged = tmp_path / "merged"
    assert lora_main(["merge", str(more["checkpoint"]), "--config", str(PRESET), "--out", str(merged),
                      *_overrides(sdxl, base, run)]) == 0
    unet = build_tiny_sdxl_pipeline(seed=0).unet
    plain = SupirUNet.from_pretrained(unet, merged)
    inputs = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(plain(*inputs), more["model"](*inputs), rtol=1e-4, atol=1e-5)
    out = tmp_path / "finetuned.safetensors"
    assert convert.main(["export", str(merged), "--pretrained", str(sdxl), "--out", str(out)]) == 0
    tiny = build_tiny_sdxl_pipeline(seed=0)
    back = import_release(out, tiny.unet, tiny.vae, depth=[1, 2])
    got, want = _state(back.model), _state(plain)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def _overrides(sdxl, base, run):
    return [f"model.pretrained={sdxl}", "model.adaptor_depth=[1, 2]", f"init_from={base}",
            "model.frozen_dtype=float32", f"output_dir={run}", "device=cpu", "lora.rank=4"]  # fmt: skip


def _inputs(batch=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, 8, 8, generator=g)
    added = {"text_embeds": torch.randn(batch, 32, generator=g),
             "time_ids": torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * batch)}  # fmt: skip
    return x, torch.tensor([500] * batch), torch.randn(batch, 77, 64, generator=g), added, torch.randn(
        batch, 4, 8, 8, generator=g
    )
