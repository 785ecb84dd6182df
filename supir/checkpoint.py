"""Training checkpoints: trainable weights (safetensors), optimizer state, step and data position.

Layout: ``OUTPUT/checkpoints/step-000500/`` holding the adaptor and connector folders' files
(`SupirUNet.save_trainable`), ``optimizer.pt``, ``trainer_state.json`` and, when the run encodes the LQ
hint with a robust encoder E_dr (imported from a release or trained by supir.robust_encoder),
``robust_encoder.safetensors``, so that export and restoration find it with the weights. A checkpoint is written to a
temporary folder and renamed, so a crash never leaves a half-written one that `latest` would pick.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from schemas.errors import CheckpointError, ConfigError

STATE_FILE = "trainer_state.json"
LORA_WEIGHTS = "lora.safetensors"  # supir/lora.py: instead of the adaptor weights in LoRA runs
OPTIMIZER_FILE = "optimizer.pt"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).exists()) if root.exists() else []
    return done[-1] if done else None


def save_checkpoint(output_dir, step: int, model, optimizer, state: dict, robust_encoder=None) -> Path:
    """Write checkpoint `step` atomically; `state` is JSON (step, data position, config...)."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    if has_lora(model.adaptor):  # LoRA runs store only the LoRA and connector weights
        from supir.lora import save_lora

        save_lora(model.adaptor, tmp)
        model.connectors.save_pretrained(tmp)
    else:
        model.save_trainable(tmp)
    if robust_encoder is not None:
        robust_encoder.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({**state, "step": step}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def load_checkpoint(path: str | Path, model, optimizer=None) -> dict:
    """Load trainable weights (and optimizer state) into `model`; returns the trainer state."""
    path = Path(path)
    if not (path / STATE_FILE).exists():
        raise ConfigError(f"{path} is not a training checkpoint (no {STATE_FILE})")
    from safetensors.torch import load_file

    from supir.adaptor import ADAPTOR_WEIGHTS
    from supir.model import CONNECTORS_WEIGHTS

    device = next(model.adaptor.parameters()).device
    if (path / LORA_WEIGHTS).exists():
        if not has_lora(model.adaptor):
            raise ConfigError(f"{path} holds LoRA weights: resume it with the same lora: settings")
        from supir.lora import load_lora

        load_lora(model.adaptor, path)
    else:
        model.adaptor.load_state_dict(load_file(path / ADAPTOR_WEIGHTS, device=str(device)))
    model.connectors.load_state_dict(load_file(path / CONNECTORS_WEIGHTS, device=str(device)))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location=device, weights_only=True))
    return json.loads((path / STATE_FILE).read_text())


def load_init(source: str | Path, model, vae, depth=None):
    """Load `init_from` weights into `model`'s adaptor and connectors; returns E_dr or None.

    `source`: a released SUPIR checkpoint file (supir.convert) or one of our checkpoint folders
    (adaptor + connectors files, and ``robust_encoder.safetensors`` when it has one).
    """
    from supir.robust_encoder import WEIGHTS, RobustEncoder

    source = Path(source)
    device = next(model.adaptor.parameters()).device
    if source.is_dir():
        import json as _json

        from safetensors.torch import load_file

        from supir.adaptor import ADAPTOR_CONFIG, ADAPTOR_WEIGHTS
        from supir.model import CONNECTORS_WEIGHTS

        if not (source / ADAPTOR_WEIGHTS).exists():
            raise CheckpointError(f"init_from {source}: no {ADAPTOR_WEIGHTS} (not a supir checkpoint folder)")
        saved = _json.loads((source / ADAPTOR_CONFIG).read_text())["transformer_layers_per_block"]
        if depth is not None and list(saved) != list(depth):
            raise CheckpointError(
                f"init_from {source} has adaptor depth {saved}, the configuration asks for {list(depth)}: "
                f"set model.adaptor_depth={saved}"
            )
        adaptor = load_file(source / ADAPTOR_WEIGHTS, device=str(device))
        connectors = load_file(source / CONNECTORS_WEIGHTS, device=str(device))
        robust = RobustEncoder.from_pretrained(source, vae) if (source / WEIGHTS).exists() else None
    else:
        from supir.convert import import_release

        imported = import_release(source, model.unet, vae, depth, device=device)
        adaptor = imported.model.adaptor.state_dict()
        connectors = imported.model.connectors.state_dict()
        robust = imported.robust_encoder
    try:
        model.adaptor.load_state_dict(adaptor)
        model.connectors.load_state_dict(connectors)
    except RuntimeError as exc:
        raise CheckpointError(f"init_from {source} does not fit the configured model: {exc}") from None
    return robust


def has_lora(adaptor) -> bool:
    """Whether LoRA layers were injected (by name, so a plain run never imports peft)."""
    return any("lora_A" in name for name, _ in adaptor.named_parameters())
