"""Training checkpoints: trainable weights (safetensors), optimizer state, step and data position.

Layout: ``OUTPUT/checkpoints/step-000500/`` holding the adaptor and connector folders' files
(`SupirUNet.save_trainable`), ``optimizer.pt`` and ``trainer_state.json``. A checkpoint is written to a
temporary folder and renamed, so a crash never leaves a half-written one that `latest` would pick.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from schemas.errors import ConfigError

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"


def checkpoint_dir(output_dir: str | Path, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"step-{step:06d}"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    root = Path(output_dir) / "checkpoints"
    done = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).exists()) if root.exists() else []
    return done[-1] if done else None


def save_checkpoint(output_dir, step: int, model, optimizer, state: dict) -> Path:
    """Write checkpoint `step` atomically; `state` is JSON (step, data position, config...)."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(final.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_trainable(tmp)
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
    model.adaptor.load_state_dict(load_file(path / ADAPTOR_WEIGHTS, device=str(device)))
    model.connectors.load_state_dict(load_file(path / CONNECTORS_WEIGHTS, device=str(device)))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / OPTIMIZER_FILE, map_location=device, weights_only=True))
    return json.loads((path / STATE_FILE).read_text())
