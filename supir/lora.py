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

import json
from dataclasses import asdict
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import load_file, save_file
from torch import nn

from schemas.errors import ConfigError
from supir.train_config import LoraSettings

ADAPTER_NAME = "default"
HINT_PREFIX = "hint_conv."  # the trained hint conv is stored with the LoRA weights
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


def add_lora(adaptor: nn.Module, settings: LoraSettings, frozen_dtype: torch.dtype | None = None) -> list[nn.Parameter]:
    """Freeze ``adaptor.core`` (cast to ``frozen_dtype`` when given) and inject LoRA layers into it.

    Returns the trainable parameters: the LoRA weights (fp32) and the hint conv (11,840 parameters at
    SDXL size; zero-initialised, it must learn).
    """
    core = adaptor.core
    core.requires_grad_(False)
    if frozen_dtype is not None:
        core.to(frozen_dtype)
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


def save_lora(adaptor: nn.Module, directory) -> None:
    """LoRA weights, the hint conv and the adaptor's config (its depth); not the adaptor's own weights."""
    from supir.adaptor import ADAPTOR_CONFIG
    from supir.checkpoint import LORA_WEIGHTS

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hint = {f"{HINT_PREFIX}{k}": v.detach().contiguous().cpu() for k, v in adaptor.hint_conv.state_dict().items()}
    save_file(lora_state_dict(adaptor) | hint, directory / LORA_WEIGHTS)
    (directory / ADAPTOR_CONFIG).write_text(json.dumps(asdict(adaptor.config), indent=2, default=list))


def load_lora(adaptor: nn.Module, directory) -> None:
    from supir.checkpoint import LORA_WEIGHTS

    device = next(adaptor.parameters()).device
    state = load_file(Path(directory) / LORA_WEIGHTS, device=str(device))
    hint = {k[len(HINT_PREFIX):]: state.pop(k) for k in list(state) if k.startswith(HINT_PREFIX)}
    adaptor.hint_conv.load_state_dict(hint)
    load_lora_state_dict(adaptor, state)


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


def merge_checkpoint(checkpoint, config, out) -> Path:
    """A LoRA training checkpoint -> a plain checkpoint folder (merged adaptor + connectors [+ E_dr]).

    The base weights come from the run's own config (``init_from``, e.g. the released SUPIR-v0Q); the
    result loads with ``SupirUNet.from_pretrained`` and exports with ``python -m supir.convert export``.
    """
    from supir.checkpoint import load_checkpoint
    from supir.robust_encoder import RobustEncoder
    from supir.train import build_model

    if not config.lora.enabled:
        raise ConfigError("merge needs the run's config with its lora: settings (lora.rank > 0)")
    _, model, hint_encoder = build_model(config, torch.device("cpu"))
    add_lora(model.adaptor, config.lora)
    load_checkpoint(checkpoint, model)
    merge_lora(model.adaptor)
    out = Path(out)
    model.save_trainable(out)
    if isinstance(hint_encoder, RobustEncoder):
        hint_encoder.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m supir.lora merge CHECKPOINT --config RUN.yaml --out DIR [key=value ...]`."""
    import argparse

    from supir.train_config import load_config

    parser = argparse.ArgumentParser(prog="python -m supir.lora", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    merge = sub.add_parser("merge", help="fold a LoRA checkpoint into plain adaptor weights")
    merge.add_argument("checkpoint", type=Path)
    merge.add_argument("--config", required=True, help="the training YAML of the run")
    merge.add_argument("--out", required=True, type=Path)
    parser.epilog = "Trailing section.key=value arguments override the config, as given to the run."
    args, overrides = parser.parse_known_args(argv)
    unknown = [o for o in overrides if o.startswith("-") or "=" not in o]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    out = merge_checkpoint(args.checkpoint, load_config(args.config, overrides), args.out)
    print(f"merged {args.checkpoint} into {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
