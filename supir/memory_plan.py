"""What a training run holds in GPU memory, per component, before it starts (`supir.train --plan`).

Every parameter count comes from the real modules built on the meta device (no memory, exact); bytes
follow from the dtypes and the optimiser:

- frozen parts (SDXL UNet, text encoders, and the adaptor itself under LoRA) hold weights only, in
  ``model.frozen_dtype``; the VAE and the degradation-robust encoder stay fp32 (SDXL's VAE overflows in fp16);
- trainable parts (adaptor or its LoRA, hint conv, connectors) hold fp32 weights, fp32 gradients and
  the optimiser's states (AdamW 8 bytes per parameter, 8-bit AdamW 2; bitsandbytes keeps tensors
  under 4,096 elements at 32 bits). Trainable weights stay fp32 on purpose: they are the master copy
  an lr of 1e-5 needs (a bf16 weight cannot represent most such updates);
- with ``data.cached_text`` the two CLIP text encoders stay on the CPU (validation prompts only);
- activations are an estimate: per 512² sample with gradient checkpointing, calibrated on one H200
  (SDXL-size model at adaptor depth [1, 1, 4], AdamW, bf16: 17.25 GiB at batch 1, 23.7 GiB at batch 32;
  tests/benchmarks/results/gpu_check*.json), scaled by resolution² and by the denoiser's size. The
  transient term is the allocator's working space seen at batch 1 in the same run.

The expected peak is the held bytes plus the larger of transient and activations.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from supir.adaptor import AdaptorConfig, SupirAdaptor
from supir.lora import _target_regex
from supir.model import SDXL_UNET_CONFIG, ConnectorsConfig, SupirConnectors
from supir.optim import STATE_BYTES
from supir.train_config import LoraSettings, TrainConfig, load_config

GIB = 1024**3
SMALL_TENSOR = 4096  # bitsandbytes keeps 32-bit states below this many elements
ACT_GIB_PER_SAMPLE = 0.23  # at 512², gradient checkpointing, UNet + [1, 1, 4] adaptor (H200, batch 32)
ACT_REFERENCE_PARAMS = 2_567_463_684 + 597_763_520  # the denoiser the estimate was measured on
NO_CHECKPOINTING_FACTOR = 4.0  # not measured: a deliberate over-estimate without checkpointing
TRANSIENT_GIB = 0.90  # measured peak minus held bytes at batch 1 on the H200

SDXL_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": [128, 256, 512, 512], "sample_size": 1024, "scaling_factor": 0.13025,
    "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
}
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
              num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)
CLIP_BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                 num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu", projection_dim=1280)
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Component:
    name: str
    params: int
    dtype: str
    trainable: bool
    weights: int  # bytes
    grads: int
    states: int
    where: str = "gpu"

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.states


@dataclass(frozen=True)
class MemoryPlan:
    components: list[Component]
    activations: int  # bytes, estimate
    transient: int

    @property
    def held(self) -> int:
        return sum(c.total for c in self.components if c.where == "gpu")

    @property
    def peak(self) -> int:
        return self.held + max(self.activations, self.transient)

    @property
    def trainable_params(self) -> int:
        return sum(c.params for c in self.components if c.trainable)

    def table(self) -> str:
        rows = [f"{'component':<22}{'parameters':>15}  {'dtype':<9}{'weights':>10}{'grads':>10}{'optim':>10}  where"]
        for c in self.components:
            rows.append(f"{c.name:<22}{c.params:>15,}  {c.dtype:<9}{_gib(c.weights):>10}{_gib(c.grads):>10}"
                        f"{_gib(c.states):>10}  {c.where}{' (trained)' if c.trainable else ''}")
        rows.append(f"held on the GPU: {_gib(self.held)} GiB; activations (estimate) {_gib(self.activations)} GiB; "
                    f"transient {_gib(self.transient)} GiB")
        rows.append(f"expected peak (torch.cuda.max_memory_allocated): {_gib(self.peak)} GiB; "
                    f"trainable parameters: {self.trainable_params:,}")
        return "\n".join(rows)


def _gib(n: int) -> str:
    return f"{n / GIB:.2f}"


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_parameter_count(adaptor: nn.Module, settings: LoraSettings) -> int:
    """Parameters peft adds: r·(in + out) per Linear, in·r·k² + r·out per Conv2d (A is k×k, B is 1×1)."""
    import re

    pattern = re.compile(_target_regex(list(settings.targets)))
    total = 0
    for name, module in adaptor.core.named_modules():
        if not name or not pattern.fullmatch(name):
            continue
        if isinstance(module, nn.Linear):
            total += settings.rank * (module.in_features + module.out_features)
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += module.in_channels * settings.rank * kh * kw + settings.rank * module.out_channels
    return total


def _trainable(name: str, module_or_params, optim: str) -> Component:
    tensors = list(module_or_params.parameters()) if isinstance(module_or_params, nn.Module) else module_or_params
    params = sum(t.numel() for t in tensors)
    states = sum(t.numel() * (STATE_BYTES[optim] if t.numel() >= SMALL_TENSOR else 8) for t in tensors)
    return Component(name, params, "float32", True, params * 4, params * 4, states)


def _frozen(name: str, params: int, dtype: str, where: str = "gpu") -> Component:
    return Component(name, params, dtype, False, params * _DTYPE_BYTES[dtype], 0, 0, where)


def memory_plan(
    adaptor_depth=(1, 1, 4),
    batch_size: int = 1,
    resolution: int = 512,
    frozen_dtype: str = "bfloat16",
    optim: str = "adamw",
    lora: LoraSettings | None = None,
    cached_text: bool = False,
    robust_encoder: bool = False,
    gradient_checkpointing: bool = True,
    unet_config: dict = SDXL_UNET_CONFIG,
    vae_config: dict = SDXL_VAE_CONFIG,
    text_configs: tuple[dict, dict] = (CLIP_L, CLIP_BIGG),
) -> MemoryPlan:
    """The plan of a run at the given settings (real SDXL shapes unless configs are given)."""
    cfg = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**cfg)
        connectors = SupirConnectors(ConnectorsConfig.from_unet(unet, cross_attn=True))
        vae = AutoencoderKL(**vae_config)
        text = [CLIPTextModel(CLIPTextConfig(**text_configs[0])),
                CLIPTextModelWithProjection(CLIPTextConfig(**text_configs[1]))]
    adaptor = SupirAdaptor(AdaptorConfig(cfg, list(adaptor_depth)), device="meta")
    parts = [_frozen("sdxl_unet", _count(unet), frozen_dtype)]
    if lora is not None and lora.enabled:
        parts.append(_frozen("adaptor (frozen)", _count(adaptor.core), frozen_dtype))
        lora_params = lora_parameter_count(adaptor, lora) + _count(adaptor.hint_conv)
        # LoRA tensors are rank-sized matrices, all above the 8-bit threshold except the hint conv bias.
        parts.append(Component("adaptor lora + hint", lora_params, "float32", True, lora_params * 4,
                               lora_params * 4, lora_params * STATE_BYTES[optim]))
    else:
        parts.append(_trainable("adaptor", adaptor, optim))
    parts.append(_trainable("connectors", connectors, optim))
    # The SDXL VAE overflows in fp16, so it (and the robust encoder, a copy of its encoder) stays fp32.
    parts.append(_frozen("vae", _count(vae), "float32"))
    if robust_encoder:
        parts.append(_frozen("robust_encoder", _count(vae.encoder) + _count(vae.quant_conv), "float32"))
    for name, model in zip(("text_encoder", "text_encoder_2"), text):
        parts.append(_frozen(name, _count(model), frozen_dtype, "cpu" if cached_text else "gpu"))
    denoiser = _count(unet) + _count(adaptor)
    act = ACT_GIB_PER_SAMPLE * batch_size * (resolution / 512) ** 2 * denoiser / ACT_REFERENCE_PARAMS
    if not gradient_checkpointing:
        act *= NO_CHECKPOINTING_FACTOR
    return MemoryPlan(parts, int(act * GIB), int(TRANSIENT_GIB * GIB))


def plan_for_config(config: TrainConfig) -> MemoryPlan:
    """The plan of a training config at real SDXL shapes (the plan is about the GPU the config targets)."""
    model, data = config.model, config.data
    return memory_plan(
        adaptor_depth=tuple(model.adaptor_depth),
        batch_size=data.batch_size,
        resolution=data.resolution or data.crop_size,
        frozen_dtype=model.frozen_dtype,
        optim=config.optim.name,
        lora=config.lora,
        cached_text=data.cached_text,
        robust_encoder=bool(model.robust_encoder or config.init_from),
        gradient_checkpointing=model.gradient_checkpointing,
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m supir.memory_plan --config X [key=value ...]` (also `python -m supir.train ... --plan`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m supir.memory_plan", description=main.__doc__)
    parser.add_argument("--config", default=None, help="training YAML")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides")
    args = parser.parse_args(argv)
    print(plan_for_config(load_config(args.config, args.overrides)).table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
