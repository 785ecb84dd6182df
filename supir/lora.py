"""LoRA on the adaptor, for fine-tuning SUPIR on one consumer GPU (with `peft`, the standard library).

Fine-tuning the released adaptor fully trains 1.24B parameters; LoRA freezes them and trains a
low-rank update ``W + (alpha / rank) · B·A`` of the chosen projections instead, with ``B`` zero at
initialisation, so the model starts exactly where the released weights are. The ZeroSFT connectors
(≈55M parameters) are small and are trained fully, as is the zero-initialised hint conv.

Targets are the diffusers module names inside the adaptor's UNet copy:

- ``attention``: the transformer blocks' ``to_q``, ``to_k``, ``to_v``, ``to_out.0``;
- ``feed_forward``: ``ff.net.0.proj`` and ``ff.net.2``, plus the transformers' ``proj_in``/``proj_out``;
- ``conv``: every ResNet's ``conv1``/``conv2`` (optional; more memory, closer to full fine-tuning).

``merge_lora`` folds the update into plain weights, so a merged adaptor is an ordinary adaptor that
saves, exports to the release layout and loads anywhere without peft.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from schemas.errors import ConfigError
from supir.train_config import LoraSettings

ADAPTER_NAME = "default"
TARGET_GROUPS = {
    "attention": [r"to_q", r"to_k", r"to_v", r"to_out\.0"],
    "feed_forward": [r"ff\.net\.0\.proj", r"ff\.net\.2", r"proj_in", r"proj_out"],
    "conv": [r"conv1", r"conv2"],
}


def _target_regex(targets: list[str]) -> str:
    unknown = sorted(set(targets) - set(TARGET_GROUPS))
    if unknown or not targets:
        raise ConfigError(f"lora.targets must be a non-empty subset of {sorted(TARGET_GROUPS)}, got {targets}")
    names = [n for t in targets for n in TARGET_GROUPS[t]]
    # Only inside transformer blocks / resnets of the UNet copy; anchored so "to_q" never matches "xto_q".
    return r".*\.(" + "|".join(names) + r")$"


def lora_config(settings: LoraSettings) -> LoraConfig:
    if settings.rank < 1:
        raise ConfigError(f"lora.rank must be >= 1 to add LoRA, got {settings.rank}")
    return LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha if settings.alpha is not None else settings.rank,
        lora_dropout=settings.dropout,
        target_modules=_target_regex(list(settings.targets)),
        init_lora_weights=True,  # B = 0: the output is unchanged at initialisation
    )


def add_lora(adaptor: nn.Module, settings: LoraSettings) -> list[nn.Parameter]:
    """Freeze ``adaptor.core`` and inject LoRA layers into it; returns the new trainable parameters.

    The hint conv stays trainable (11,840 parameters at SDXL size; zero-initialised, it must learn).
    """
    core = adaptor.core
    core.requires_grad_(False)
    inject_adapter_in_model(lora_config(settings), core, adapter_name=ADAPTER_NAME)
    lora_params = [p for n, p in core.named_parameters() if "lora_" in n]
    if not lora_params:
        raise ConfigError(f"lora.targets {settings.targets} matched no module of the adaptor")
    for p in lora_params:
        p.requires_grad_(True)
    adaptor.hint_conv.requires_grad_(True)
    return lora_params + list(adaptor.hint_conv.parameters())


def has_lora(module: nn.Module) -> bool:
    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def lora_state_dict(adaptor: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA weights of the adaptor (peft's key layout, without the adapter name)."""
    return {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(adaptor.core).items()}


def load_lora_state_dict(adaptor: nn.Module, state: dict[str, torch.Tensor]) -> None:
    result = set_peft_model_state_dict(adaptor.core, state, adapter_name=ADAPTER_NAME)
    unexpected = getattr(result, "unexpected_keys", []) or []
    if unexpected:
        raise ConfigError(f"LoRA weights do not fit this adaptor: unexpected keys {unexpected[:5]}")


@torch.no_grad()
def merge_lora(adaptor: nn.Module) -> int:
    """Fold every LoRA update into its base layer and remove the LoRA modules; returns how many."""
    merged = 0
    for name, module in list(adaptor.core.named_modules()):
        if not isinstance(module, BaseTunerLayer):
            continue
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = adaptor.core.get_submodule(parent_name) if parent_name else adaptor.core
        setattr(parent, child, module.get_base_layer())
        merged += 1
    return merged
