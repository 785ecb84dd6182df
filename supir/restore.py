"""Restore images with a trained checkpoint: restoration-guided EDM sampling with CFG.

    python -m supir.restore IN OUT --checkpoint runs/sdxl/checkpoints/step-100000 [--upscale 2]

IN is an image or a folder of images; OUT is a folder (PNG per input). The LQ image is resized to the
output size (like the training LQ), encoded to the hint latent, and sampled with the paper's defaults
(T = 100, λ_cfg = 7.5, τ_r = 4, the positive prompt appended to --prompt, the negative-quality prompt).
Large images use the VAE's tiled encode/decode.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from schemas.errors import ConfigError, InputImageError, SupirDataError
from supir.conditioning import decode_latents, encode_images, encode_prompts, sdxl_time_ids
from supir.prompts import NEGATIVE_PROMPTS, POSITIVE_PROMPT, training_prompt
from supir.sampler import SamplerConfig, eps_denoise, restoration_guided_sample

TILED_VAE_ABOVE = 1024  # pixels per side above which the VAE runs tiled
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def make_denoiser(model, parts, z_lq: torch.Tensor, prompts: list[str], negative_prompt: str | None):
    """The sampler's denoiser: (x, σ, control scale) -> (D with the prompts, D with the negative prompt).

    Both predictions come from one batched call; with `negative_prompt=None` only the positive one.
    """
    device = z_lq.device
    b = z_lq.shape[0]
    pos_embeds, pos_pooled = encode_prompts(parts, prompts)
    height, width = (s * parts.vae_scale_factor for s in z_lq.shape[-2:])
    time_ids = sdxl_time_ids(torch.tensor([[height, width]] * b), torch.zeros(b, 2), (height, width)).to(
        device
    )
    embeds, pooled, hint, ids = pos_embeds, pos_pooled, z_lq, time_ids
    if negative_prompt is not None:
        neg_embeds, neg_pooled = encode_prompts(parts, [negative_prompt] * b)
        embeds, pooled = torch.cat([pos_embeds, neg_embeds]), torch.cat([pos_pooled, neg_pooled])
        hint, ids = torch.cat([z_lq, z_lq]), torch.cat([time_ids, time_ids])

    @torch.no_grad()
    def denoiser(x, sigma, control_scale):
        cond = {
            "encoder_hidden_states": embeds,
            "lq_latent": hint,
            "control_scale": control_scale,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids},
        }
        if negative_prompt is None:
            return eps_denoise(model, x, sigma, **cond), None
        pos, neg = eps_denoise(model, torch.cat([x, x]), sigma, **cond).chunk(2)
        return pos, neg

    return denoiser


@torch.no_grad()
def restore_batch(
    model,
    parts,
    lq: torch.Tensor,
    prompts: list[str],
    sampler: SamplerConfig,
    negative_prompt: str = NEGATIVE_PROMPTS["paper"],
    generator: torch.Generator | None = None,
    hint_encoder=None,
) -> torch.Tensor:
    """LQ images in [-1, 1] (B×3×H×W, H and W multiples of 8) -> restored images in [-1, 1]."""
    device = next(parts.vae.parameters()).device
    z_lq = encode_images(hint_encoder if hint_encoder is not None else parts.vae, lq.to(device), sample=False)
    use_cfg = sampler.cfg_scale != 0 or sampler.cfg_scale_min not in (None, 0)
    denoiser = make_denoiser(model, parts, z_lq, prompts, negative_prompt if use_cfg else None)
    with frozen_autocast(model, device):
        z = restoration_guided_sample(denoiser, z_lq, sampler, generator=generator)
    return decode_latents(parts.vae, z)


def frozen_autocast(model, device):
    """Autocast to the frozen UNet's dtype when it is bf16/fp16 (the trainable parts stay fp32, as in
    training); a no-op for an fp32 UNet. Without it the fp32 adaptor meets bf16 activations."""
    unet = getattr(getattr(model, "module", model), "unet", None)
    dtype = getattr(unet, "dtype", torch.float32)
    if dtype not in (torch.bfloat16, torch.float16):
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def load_restorer(checkpoint: str | Path, pretrained: str | None = None, device="cpu", dtype=torch.float32):
    """(frozen SDXL parts in `dtype`, SupirUNet with the checkpoint's trainable weights in fp32)."""
    from supir.checkpoint import STATE_FILE
    from supir.conditioning import load_sdxl
    from supir.model import SupirUNet

    checkpoint = Path(checkpoint)
    if not (checkpoint / "adaptor_config.json").exists():
        raise ConfigError(f"{checkpoint} holds no adaptor (adaptor_config.json): give a checkpoint folder")
    if pretrained is None:
        state_file = checkpoint / STATE_FILE
        if not state_file.exists():
            raise ConfigError(f"{checkpoint} does not say which SDXL it was trained on: pass --pretrained")
        pretrained = json.loads(state_file.read_text())["config"]["model"]["pretrained"]
    parts = load_sdxl(pretrained, device=device, dtype=dtype)
    return parts, SupirUNet.from_pretrained(parts.unet, checkpoint).eval()


def _load_image(path: Path, upscale: float) -> tuple[torch.Tensor, tuple[int, int]]:
    try:
        image = Image.open(path).convert("RGB")
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for unreadable files
        raise InputImageError(f"cannot read {path}: {exc}") from exc
    w, h = image.size
    out = (round(w * upscale), round(h * upscale))
    # The network works on multiples of 8 pixels (one latent cell); resize back at the end.
    work = (max(64, round(out[0] / 8) * 8), max(64, round(out[1] / 8) * 8))
    array = np.asarray(image.resize(work, Image.BICUBIC), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)[None], out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m supir.restore", description=__doc__.split("\n")[0])
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--pretrained", default=None, help="SDXL folder/hub id (default: the one trained on)")
    p.add_argument("--prompt", default="", help="image description; the positive prompt is appended")
    p.add_argument("--negative", default="paper", choices=sorted(NEGATIVE_PROMPTS))
    p.add_argument("--upscale", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--cfg-scale", type=float, default=7.5)
    p.add_argument(
        "--cfg-scale-min", type=float, default=None, help="λ linear in σ: --cfg-scale at σ_T, this at 0"
    )
    p.add_argument("--tau-r", type=float, default=4.0)
    p.add_argument("--s-churn", type=float, default=0.0)
    p.add_argument("--s-noise", type=float, default=1.0)
    p.add_argument("--control-scale", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="frozen SDXL weights (auto: bfloat16 on CUDA, float16 on GPUs without bf16, float32 on CPU); "
        "the VAE stays float32",
    )
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.input.is_dir():
            inputs = sorted(f for f in args.input.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif args.input.exists():
            inputs = [args.input]
        else:
            raise ConfigError(f"input {args.input} does not exist")
        if not inputs:
            raise ConfigError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.input}")
        dtype = args.dtype
        if dtype == "auto":
            cuda = args.device.startswith("cuda")
            dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if cuda else "float32"
        parts, model = load_restorer(args.checkpoint, args.pretrained, args.device, getattr(torch, dtype))
        sampler = SamplerConfig(
            steps=args.steps,
            cfg_scale=args.cfg_scale,
            cfg_scale_min=args.cfg_scale_min,
            tau_r=args.tau_r,
            s_churn=args.s_churn,
            s_noise=args.s_noise,
            control_scale=args.control_scale,
        )
        prompt = training_prompt(args.prompt, is_negative=False) if args.prompt else POSITIVE_PROMPT
        args.output.mkdir(parents=True, exist_ok=True)
        for path in inputs:
            lq, out_size = _load_image(path, args.upscale)
            if max(lq.shape[-2:]) > TILED_VAE_ABOVE:
                parts.vae.enable_tiling()
            else:
                parts.vae.disable_tiling()
            generator = torch.Generator().manual_seed(args.seed)
            restored = restore_batch(
                model, parts, lq, [prompt], sampler, NEGATIVE_PROMPTS[args.negative], generator
            )
            array = ((restored[0].permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().clip(0, 255)
            image = Image.fromarray(array.astype(np.uint8)).resize(out_size, Image.BICUBIC)
            image.save(args.output / f"{path.stem}.png")
            print(f"{path} -> {args.output / (path.stem + '.png')}")
    except SupirDataError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
