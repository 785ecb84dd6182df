"""Loading SDXL's frozen parts and computing its conditioning: text embeddings, size ids, latents.

SDXL conditions on the penultimate hidden states of both CLIP text encoders (concatenated: 768 +
1280 = 2048 channels), the pooled projection of the second encoder, and 6 "time ids" (original size,
crop top-left, target size; base model: no aesthetic score). An empty prompt maps to zero embeddings
(`force_zeros_for_empty_prompt` of the base model): that is what caption dropout trains for CFG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from schemas.errors import MissingWeightsError


@dataclass
class SDXLParts:
    """The frozen SDXL components the trainer and the sampler need."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    text_encoder_2: torch.nn.Module
    tokenizer: object
    tokenizer_2: object

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_sdxl(pretrained: str | Path, device="cpu", dtype=torch.float32, text_device=None) -> SDXLParts:
    """Load from a diffusers folder or hub id (the hub only when the environment allows it).

    ``text_device``: where the two text encoders live (default ``device``); training from cached text
    conditioning keeps them on the CPU, for validation prompts only.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    path = str(pretrained)
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype)
        # The SDXL VAE overflows in fp16; keep it in float32 (it is small and frozen).
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32)
        te = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype)
        te2 = CLIPTextModelWithProjection.from_pretrained(path, subfolder="text_encoder_2", dtype=dtype)
        tok = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer")
        tok2 = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2")
    except OSError as exc:
        raise MissingWeightsError(
            f"cannot load SDXL from {path!r} ({exc}). Give a local diffusers folder (model.pretrained) "
            "or download stabilityai/stable-diffusion-xl-base-1.0 into the Hugging Face cache first; "
            "for a CPU demo use supir/configs/tiny.yaml, which builds a tiny random SDXL."
        ) from exc
    parts = SDXLParts(unet, vae, te, te2, tok, tok2)
    for m in (unet, vae, te, te2):
        m.requires_grad_(False).eval().to(device if m not in (te, te2) or text_device is None else text_device)
    return parts


@torch.no_grad()
def encode_prompts(parts: SDXLParts, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B×77×(d1+d2) token embeddings, B×d_pool pooled embedding) on the UNet's device; "" -> zeros."""
    device = next(parts.text_encoder.parameters()).device
    hidden, pooled = [], None
    for tokenizer, encoder in (
        (parts.tokenizer, parts.text_encoder),
        (parts.tokenizer_2, parts.text_encoder_2),
    ):
        ids = tokenizer(
            prompts,
            padding="max_length",
            max_length=tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(device)
        out = encoder(ids, output_hidden_states=True)
        hidden.append(out.hidden_states[-2])
        pooled = out.text_embeds if hasattr(out, "text_embeds") else pooled
    embeds = torch.cat(hidden, dim=-1)
    empty = torch.tensor([not p.strip() for p in prompts], device=device)
    embeds = torch.where(empty[:, None, None], torch.zeros_like(embeds), embeds)
    pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
    if parts.unet is None:  # the text encoders alone (supir/text_cache.py)
        return embeds, pooled
    unet_device = next(parts.unet.parameters()).device
    return embeds.to(unet_device), pooled.to(unet_device)


def sdxl_time_ids(original_size: torch.Tensor, crop_top_left: torch.Tensor, target_size) -> torch.Tensor:
    """B×6 micro-conditioning: (orig h, orig w, crop top, crop left, target h, target w)."""
    b = original_size.shape[0]
    target = torch.as_tensor(target_size, dtype=torch.float32).reshape(1, 2).expand(b, 2)
    return torch.cat([original_size.float(), crop_top_left.float(), target], dim=1)


@torch.no_grad()
def encode_images(vae, images: torch.Tensor, generator=None, sample: bool = True) -> torch.Tensor:
    """Images in [-1, 1] -> scaled latents (a posterior sample for targets, its mean for hints)."""
    vae_dtype = next(vae.parameters()).dtype
    dist = vae.encode(images.to(vae_dtype)).latent_dist
    z = dist.sample(generator=generator) if sample else dist.mode()
    return z.float() * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor) -> torch.Tensor:
    vae_dtype = next(vae.parameters()).dtype
    return vae.decode((z / vae.config.scaling_factor).to(vae_dtype)).sample.float().clamp(-1, 1)
