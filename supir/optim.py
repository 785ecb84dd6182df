"""The optimiser of the trainable parts: AdamW (the paper's), or AdamW with 8-bit states.

AdamW keeps two fp32 moments per parameter: 8 bytes each, 10.4 GB for the released adaptor and its
connectors (1.30B parameters) before weights and gradients. bitsandbytes' blockwise-quantised 8-bit
AdamW keeps them in 2 bytes with the same update rule (Dettmers et al. 2022, "8-bit Optimizers via
Block-wise Quantization"); tensors under 4,096 elements keep 32-bit states, as bitsandbytes does.

The plain AdamW is fused on CUDA (one kernel for all parameters) and `foreach` elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from schemas.errors import ConfigError

OPTIMIZERS = ("adamw", "adamw8bit")
STATE_BYTES = {"adamw": 8, "adamw8bit": 2}  # optimiser-state bytes per parameter (two moments)


def build_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str = "adamw",
    lr: float = 1e-5,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ConfigError("nothing to train: no parameter requires a gradient")
    if name == "adamw":
        on_cuda = all(p.is_cuda for p in params)
        return torch.optim.AdamW(
            params, lr=lr, betas=betas, weight_decay=weight_decay,
            fused=True if on_cuda else None, foreach=None if on_cuda else True,
        )
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:  # pragma: no cover - bitsandbytes is a dependency
            raise ConfigError(f"optim.name adamw8bit needs bitsandbytes: {exc}") from exc
        return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay)
    raise ConfigError(f"optim.name must be one of {OPTIMIZERS}, got {name!r}")


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes the optimiser's state tensors hold now (after at least one step)."""
    total = 0
    for state in optimizer.state.values():
        for value in state.values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total
