"""Restore images with a trained checkpoint: restoration-guided EDM sampling with CFG.

    python -m supir.restore IN OUT --checkpoint runs/sdxl/checkpoints/step-100000 [--upscale 2]
        [--settings paper|release|release-gradio] [--caption-model llava-folder] [--tile-size 1024]

IN is an image or a folder of images; OUT is a folder (PNG per input). `--settings` picks the
paper's recipe or the released code's defaults (`supir.restore_settings`); every flag left out
comes from it. The LQ image is read with the project's one RGB rule, resized to the working size,
encoded by the checkpoint's degradation-robust encoder E_dr (the plain VAE encoder when it has
none) to the hint latent, and sampled; the VAE runs tiled on large images, the UNet with
`--tile-size`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from pathlib import Path

import torch
from PIL import Image

from schemas.errors import ConfigError
from supir.cli_main import cli_main
from supir.colorfix import COLOR_FIXES
from supir.conditioning import decode_latents, encode_images, encode_prompts, sdxl_time_ids
from supir.image_io import IMAGE_SUFFIXES
from supir.prompts import NEGATIVE_PROMPTS, POSITIVE_PROMPT
from supir.restore_loading import image_size, load_lq, load_restorer, to_pil
from supir.restore_settings import RELEASED_SIZE, SETTINGS, RestoreSettings, working_size
from supir.sampler import SamplerConfig, eps_denoise, restoration_guided_sample
from supir.tiling import tiled_denoiser

TILED_VAE_ABOVE = 1024  # pixels per side above which the VAE runs tiled


def time_ids_for(b: int, height: int, width: int, fixed: bool) -> torch.Tensor:
    """SDXL's size conditioning: the release fixes 1024/1024 with crop (0, 0); otherwise the image's size."""
    size = (RELEASED_SIZE, RELEASED_SIZE) if fixed else (height, width)
    return sdxl_time_ids(torch.tensor([size] * b), torch.zeros(b, 2), size)


def make_denoiser(
    model,
    parts,
    z_lq: torch.Tensor,
    prompts: list[str],
    negative_prompt: str | None,
    fixed_size_conditioning: bool = False,
    tile: int | None = None,
    tile_stride: int | None = None,
):
    """The sampler's denoiser: (x, σ, control scale) -> (D with the prompts, D with the negative prompt).

    Both predictions come from one batched call; with `negative_prompt=None` only the positive one.
    With `tile` (latent cells) the UNet runs per window of the latent, with that window of the hint.
    """
    b = z_lq.shape[0]
    embeds, pooled = encode_prompts(parts, prompts)
    height, width = (s * parts.vae_scale_factor for s in z_lq.shape[-2:])
    ids = time_ids_for(b, height, width, fixed_size_conditioning).to(z_lq.device)
    copies = 1
    if negative_prompt is not None:
        neg_embeds, neg_pooled = encode_prompts(parts, [negative_prompt] * b)
        embeds, pooled, ids, copies = (
            torch.cat([embeds, neg_embeds]),
            torch.cat([pooled, neg_pooled]),
            ids.repeat(2, 1),
            2,
        )

    @torch.no_grad()
    def denoise_window(x, sigma, control_scale, window):
        top, bottom, left, right = window
        cond = {
            "encoder_hidden_states": embeds,
            "lq_latent": z_lq[..., top:bottom, left:right].repeat(copies, 1, 1, 1),
            "control_scale": control_scale,
            "added_cond_kwargs": {"text_embeds": pooled, "time_ids": ids},
        }
        if copies == 1:
            return eps_denoise(model, x, sigma, **cond), None
        pos, neg = eps_denoise(model, x.repeat(2, 1, 1, 1), sigma, **cond).chunk(2)
        return pos, neg

    if tile is not None and tile < max(z_lq.shape[-2:]):
        return tiled_denoiser(denoise_window, tile, tile_stride or max(1, tile // 2))
    whole = (0, z_lq.shape[-2], 0, z_lq.shape[-1])
    return lambda x, sigma, control_scale: denoise_window(x, sigma, control_scale, whole)


def guidance_target(kind: str, vae, z_lq: torch.Tensor, generator=None, cleaned=None) -> torch.Tensor:
    """What restoration guidance pulls toward: the paper's z_LQ, or the release's E(D(z_LQ)) (a sample).

    `cleaned` = D(z_LQ) when the caller has decoded it already (the colour fix needs it too).
    """
    if kind == "hint":
        return z_lq
    if kind == "cleaned":
        cleaned = decode_latents(vae, z_lq) if cleaned is None else cleaned
        return encode_images(vae, cleaned, generator=generator, sample=True)
    raise ConfigError(f"unknown guidance target {kind!r}: hint or cleaned")


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
    settings: RestoreSettings | None = None,
    tile: int | None = None,
) -> torch.Tensor:
    """LQ images in [-1, 1] (B×3×H×W, H and W multiples of 8) -> restored images in [-1, 1].

    `settings` supplies the guidance target, size conditioning and colour fix (default: the paper's);
    `sampler` and `negative_prompt` are given apart so that validation can choose its own.
    """
    settings = settings or SETTINGS["paper"]
    device = next(parts.vae.parameters()).device
    z_lq = encode_images(hint_encoder if hint_encoder is not None else parts.vae, lq.to(device), sample=False)
    cleaned = None  # D(E_dr(x)): the release's guidance source and colour reference
    if settings.guidance_target == "cleaned" or settings.color_fix is not None:
        cleaned = decode_latents(parts.vae, z_lq)
    z_target = guidance_target(settings.guidance_target, parts.vae, z_lq, generator, cleaned)
    use_cfg = sampler.cfg_scale != 0 or sampler.cfg_scale_start not in (None, 0)
    denoiser = make_denoiser(
        model,
        parts,
        z_lq,
        prompts,
        negative_prompt if use_cfg else None,
        settings.fixed_size_conditioning,
        tile,
    )
    with frozen_autocast(model, device):
        z = restoration_guided_sample(denoiser, z_target, sampler, generator=generator)
    restored = decode_latents(parts.vae, z)
    if settings.color_fix is not None:
        restored = COLOR_FIXES[settings.color_fix](restored, cleaned).clamp(-1, 1)
    return restored


def frozen_autocast(model, device):
    """Autocast to the frozen UNet's dtype when it is bf16/fp16 (the trainable parts stay fp32, as in
    training); a no-op for an fp32 UNet. Without it the fp32 adaptor meets bf16 activations."""
    unet = getattr(getattr(model, "module", model), "unet", None)
    dtype = getattr(unet, "dtype", torch.float32)
    if dtype not in (torch.bfloat16, torch.float16):
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


@torch.no_grad()
def caption_cleaned(captioner, parts, hint_encoder, path: Path, upscale: float, short_side: int = 512) -> str:
    """The release's caption: LLaVA on D(E_dr(x_LQ)) at a short side of 512 (multiple of 64)."""
    (w, h), _ = working_size(*image_size(path), upscale, RELEASED_SIZE, 64)
    (w, h), _ = working_size(w, h, short_side / min(w, h), 0, 64)
    return caption_cleaned_tensor(captioner, parts, hint_encoder, load_lq(path, (w, h)))


@torch.no_grad()
def caption_cleaned_tensor(captioner, parts, hint_encoder, lq: torch.Tensor, short_side: int | None = None) -> str:
    """LLaVA on D(E_dr(lq)) for an LQ tensor (1, 3, H, W) in [-1, 1]; resized first to ``short_side``
    (a multiple of 64) when given."""
    if short_side is not None:
        (w, h), _ = working_size(lq.shape[-1], lq.shape[-2], short_side / min(lq.shape[-2:]), 0, 64)
        lq = torch.nn.functional.interpolate(lq.float(), size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)
    lq = lq.to(next(parts.vae.parameters()).device)
    z = encode_images(hint_encoder if hint_encoder is not None else parts.vae, lq, sample=False)
    return captioner([to_pil(decode_latents(parts.vae, z)[0])])[0]


def settings_from_args(args) -> RestoreSettings:
    """The chosen preset with every flag the user gave applied on top."""
    base = SETTINGS[args.settings]
    sampler_overrides = {
        k: getattr(args, k)
        for k in ("steps", "cfg_scale", "cfg_scale_start", "s_churn", "s_noise", "control_scale")
        if getattr(args, k) is not None
    }
    if args.tau_r is not None:  # ≤ 0 switches guidance off, as the release's s_stage1 = -1
        sampler_overrides["tau_r"] = args.tau_r if args.tau_r > 0 else None
    overrides = {
        k: getattr(args, k) for k in ("min_size", "negative", "seed") if getattr(args, k) is not None
    }
    if args.color_fix is not None:
        overrides["color_fix"] = None if args.color_fix == "none" else args.color_fix
    sampler = dataclasses.replace(base.sampler, **sampler_overrides)
    return dataclasses.replace(base, sampler=sampler, **overrides)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m supir.restore", description=__doc__.split("\n")[0])
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--checkpoint", required=True, type=Path)
    p.add_argument("--pretrained", default=None, help="SDXL folder/hub id (default: the one trained on)")
    p.add_argument(
        "--settings", default="paper", choices=sorted(SETTINGS), help="paper recipe or released defaults"
    )
    p.add_argument(
        "--robust-encoder", type=Path, default=None, help="E_dr folder (default: the checkpoint's)"
    )
    p.add_argument("--prompt", default="", help="image description; the positive prompt is appended")
    p.add_argument("--caption-model", default=None, help="LLaVA folder: caption the E_dr-cleaned image")
    p.add_argument("--caption-max-tokens", type=int, default=512)
    p.add_argument("--caption-size", type=int, default=512, help="short side LLaVA's image is cleaned at")
    p.add_argument("--negative", default=None, choices=sorted(NEGATIVE_PROMPTS))
    p.add_argument("--upscale", type=float, default=1.0)
    p.add_argument("--min-size", type=int, default=None, help="raise the short side to this (release: 1024)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg-scale", type=float, default=None, help="paper's λ (released s = λ + 1), at σ → 0")
    p.add_argument("--cfg-scale-start", type=float, default=None, help="λ at σ_max: λ linear in σ̂")
    p.add_argument("--tau-r", type=float, default=None, help="restoration guidance exponent; ≤ 0: off")
    p.add_argument("--s-churn", type=float, default=None)
    p.add_argument("--s-noise", type=float, default=None)
    p.add_argument("--control-scale", type=float, default=None)
    p.add_argument("--color-fix", default=None, choices=["wavelet", "adain", "none"])
    p.add_argument("--tile-size", type=int, default=0, help="UNet tile in pixels (0: whole image)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="frozen SDXL weights (auto: bfloat16 on CUDA, float16 on GPUs without bf16, float32 on CPU); "
        "the VAE stays float32",
    )
    return p


def list_inputs(path: Path) -> list[Path]:
    if path.is_dir():
        inputs = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    elif path.exists():
        inputs = [path]
    else:
        raise ConfigError(f"input {path} does not exist")
    if not inputs:
        raise ConfigError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
    return inputs


def run(args) -> int:
    inputs = list_inputs(args.input)
    settings = settings_from_args(args)
    dtype = args.dtype
    if dtype == "auto":
        cuda = args.device.startswith("cuda")
        dtype = ("bfloat16" if torch.cuda.is_bf16_supported() else "float16") if cuda else "float32"
    parts, model, hint_encoder, source = load_restorer(
        args.checkpoint, args.pretrained, args.device, getattr(torch, dtype), args.robust_encoder
    )
    print(f"hint encoder: {source}")
    captioner = None
    if args.caption_model:
        from supir.captioning import LlavaCaptioner

        captioner = LlavaCaptioner(
            args.caption_model, args.device, getattr(torch, dtype), args.caption_max_tokens
        )
    args.output.mkdir(parents=True, exist_ok=True)
    tile = args.tile_size // parts.vae_scale_factor if args.tile_size else None
    for path in inputs:
        work, out_size = working_size(
            *image_size(path), args.upscale, settings.min_size, settings.size_multiple
        )
        caption = args.prompt
        if captioner is not None:
            caption = (
                caption
                + " "
                + caption_cleaned(captioner, parts, hint_encoder, path, args.upscale, args.caption_size)
            ).strip()
            print(f"{path}: caption {caption!r}")
        prompt = f"{caption}{settings.prompt_join}{POSITIVE_PROMPT}" if caption else POSITIVE_PROMPT
        if max(work) > TILED_VAE_ABOVE:
            parts.vae.enable_tiling()
        else:
            parts.vae.disable_tiling()
        generator = torch.Generator().manual_seed(settings.seed)
        restored = restore_batch(
            model, parts, load_lq(path, work), [prompt], settings.sampler,
            NEGATIVE_PROMPTS[settings.negative], generator, hint_encoder, settings, tile,
        )  # fmt: skip
        to_pil(restored[0]).resize(out_size, Image.BICUBIC).save(args.output / f"{path.stem}.png")
        print(f"{path} -> {args.output / (path.stem + '.png')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli_main(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
