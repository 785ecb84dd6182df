"""Loading what `supir.restore` needs: frozen SDXL, the checkpoint's SupirUNet, its E_dr, the images.

The hint latent must come from the encoder the adaptor was trained with: the degradation-robust
encoder E_dr when training used one (saved in the checkpoint folder, or named by the training
config's `model.robust_encoder`), else SDXL's own VAE encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from schemas.errors import ConfigError, InputImageError
from supir.image_io import to_rgb8


def _trainer_config(checkpoint: Path) -> dict:
    from supir.checkpoint import STATE_FILE

    state_file = checkpoint / STATE_FILE
    return json.loads(state_file.read_text()).get("config", {}) if state_file.exists() else {}


def robust_encoder_dir(checkpoint: Path, override: Path | None = None) -> Path | None:
    """The folder holding E_dr's weights: `override`, the checkpoint itself, or the one training used."""
    from supir.robust_encoder import WEIGHTS

    if override is not None:
        if not (Path(override) / WEIGHTS).exists():
            raise ConfigError(f"{override} holds no robust encoder ({WEIGHTS})")
        return Path(override)
    if (checkpoint / WEIGHTS).exists():
        return checkpoint
    trained_with = _trainer_config(checkpoint).get("model", {}).get("robust_encoder")
    if trained_with:
        if not (Path(trained_with) / WEIGHTS).exists():
            raise ConfigError(
                f"{checkpoint} was trained with the robust encoder {trained_with}, which is gone: "
                "pass --robust-encoder"
            )
        return Path(trained_with)
    return None


def load_restorer(
    checkpoint: str | Path,
    pretrained: str | None = None,
    device="cpu",
    dtype=torch.float32,
    robust_encoder: str | Path | None = None,
):
    """(frozen SDXL parts in `dtype`, SupirUNet in fp32, E_dr or None, a line saying which encoder)."""
    from supir.conditioning import load_sdxl
    from supir.model import SupirUNet
    from supir.robust_encoder import RobustEncoder

    checkpoint = Path(checkpoint)
    if not (checkpoint / "adaptor_config.json").exists():
        raise ConfigError(f"{checkpoint} holds no adaptor (adaptor_config.json): give a checkpoint folder")
    if pretrained is None:
        pretrained = _trainer_config(checkpoint).get("model", {}).get("pretrained")
        if pretrained is None:
            raise ConfigError(f"{checkpoint} does not say which SDXL it was trained on: pass --pretrained")
    parts = load_sdxl(pretrained, device=device, dtype=dtype)
    model = SupirUNet.from_pretrained(parts.unet, checkpoint).eval()
    encoder_dir = robust_encoder_dir(checkpoint, None if robust_encoder is None else Path(robust_encoder))
    if encoder_dir is None:
        return parts, model, None, "the VAE encoder (the checkpoint has no robust encoder E_dr)"
    encoder = RobustEncoder.from_pretrained(encoder_dir, parts.vae)
    return parts, model, encoder, f"E_dr from {encoder_dir}"


def load_lq(path: Path, size: tuple[int, int]) -> torch.Tensor:
    """1×3×H×W in [-1, 1] at `size` (W, H), read with the one bytes->RGB rule (`supir.image_io`)."""
    try:
        with Image.open(path) as image:
            rgb = Image.fromarray(to_rgb8(image))
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for unreadable files
        raise InputImageError(f"cannot read {path}: {exc}") from exc
    array = np.asarray(rgb.resize(size, Image.BICUBIC), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as exc:  # noqa: BLE001
        raise InputImageError(f"cannot read {path}: {exc}") from exc


def to_pil(image: torch.Tensor) -> Image.Image:
    array = ((image.permute(1, 2, 0).float().cpu().numpy() + 1) * 127.5).round().clip(0, 255)
    return Image.fromarray(array.astype(np.uint8))
