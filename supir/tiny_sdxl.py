"""A tiny, randomly initialised SDXL in diffusers format, for tests and the offline demo.

It has every component of `stabilityai/stable-diffusion-xl-base-1.0` (two CLIP text encoders, the
second with projection; two tokenizers; a UNet with `text_time` conditioning; a VAE with SDXL's
latent scaling factor; the Euler discrete scheduler with SDXL's schedule) at toy widths, so the very
same `from_pretrained(path)` code that loads the real model loads it. It is random: never present
its output as a result.

Sizes follow diffusers' own tiny SDXL test model, except the VAE, which keeps SDXL's downsampling
factor of 8 (four levels) so latent shapes match the real model's (64×64 image -> 8×8 latent).
"""

from __future__ import annotations

import json
import pathlib
from collections import Counter

import torch

# Base SDXL: 6 time ids (original size, crop top-left, target size), no aesthetic score.
ADDITION_TIME_EMBED_DIM = 8
TEXT_HIDDEN = 32  # each CLIP encoder; the UNet cross-attends to their concatenation (64)
POOLED_DIM = 32  # text_encoder_2's projection
VOCAB_SIZE = 1000
MAX_TOKENS = 77  # CLIP's context length, as in SDXL

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SDXL_SCHEDULER_CONFIG = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
}
SDXL_VAE_SCALING_FACTOR = 0.13025

TINY_UNET_CONFIG = {
    "sample_size": 8,  # latent side: the pipelines' default image is 64×64
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64),
    "layers_per_block": 2,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "attention_head_dim": (2, 4),
    "use_linear_projection": True,
    "transformer_layers_per_block": (1, 2),
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": ADDITION_TIME_EMBED_DIM,
    "projection_class_embeddings_input_dim": 6 * ADDITION_TIME_EMBED_DIM + POOLED_DIM,
    "cross_attention_dim": 2 * TEXT_HIDDEN,
}

TINY_VAE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (32, 32, 64, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "sample_size": 64,
    "scaling_factor": SDXL_VAE_SCALING_FACTOR,
}

# A few words to learn BPE merges from, so prompts tokenize into word pieces rather than bytes.
_MERGE_CORPUS = (
    "a photo of the cat dog face person man woman tree house street city sky water river mountain "
    "flower grass car building portrait landscape close up detailed texture sharp high quality "
    "low blur dirty messy painting cartoon deformation resolution over smooth cinematic contrast "
    "camera detail color grading ultra perfect skin pore hyper realistic maximum illustration "
    "drawing art sketch render engine frames watermark signature jpeg artifacts deformed lowres "
    "with and in on at standing sitting green red blue white black yellow brown wooden stone"
)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_clip_vocab_and_merges(
    vocab_size: int = VOCAB_SIZE,
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP-style byte-level BPE vocabulary learned greedily from a fixed word list (deterministic).

    Layout follows CLIP's: the 256 byte symbols, the same with the end-of-word marker `</w>`, the
    merged symbols in merge order, then `<|startoftext|>` and `<|endoftext|>`.
    """
    alphabet = list(_bytes_to_unicode().values())
    symbols = alphabet + [c + "</w>" for c in alphabet]
    words = Counter(_MERGE_CORPUS.split())
    # Each word as a tuple of symbols, the last carrying the end-of-word marker.
    segmented = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges: list[tuple[str, str]] = []
    budget = vocab_size - len(symbols) - 2
    while len(merges) < budget:
        pairs: Counter = Counter()
        for w, seg in segmented.items():
            for a, b in zip(seg, seg[1:]):
                pairs[(a, b)] += words[w]
        if not pairs:
            break
        # Most frequent pair; ties broken alphabetically so the result never depends on dict order.
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append((a, b))
        symbols.append(a + b)
        for w, seg in segmented.items():
            out, i = [], 0
            while i < len(seg):
                if i + 1 < len(seg) and seg[i] == a and seg[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segmented[w] = tuple(out)
    symbols += ["<|startoftext|>", "<|endoftext|>"]
    return {s: i for i, s in enumerate(symbols)}, merges


def _tiny_tokenizer():
    from transformers import CLIPTokenizer

    vocab, merges = tiny_clip_vocab_and_merges()
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=MAX_TOKENS)


def _tiny_text_encoders(tokenizer, seed: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=TEXT_HIDDEN,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=POOLED_DIM,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,  # CLIP pools the hidden state at this token
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(config).eval()
    torch.manual_seed(seed + 2)
    text_encoder_2 = CLIPTextModelWithProjection(config).eval()
    return text_encoder, text_encoder_2


def build_tiny_sdxl_pipeline(seed: int = 0):
    """The tiny SDXL as an in-memory `StableDiffusionXLPipeline` (random weights from `seed`)."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )

    tokenizer = _tiny_tokenizer()
    tokenizer_2 = _tiny_tokenizer()
    text_encoder, text_encoder_2 = _tiny_text_encoders(tokenizer, seed)
    torch.manual_seed(seed + 3)
    unet = UNet2DConditionModel(**TINY_UNET_CONFIG).eval()
    torch.manual_seed(seed + 4)
    vae = AutoencoderKL(**TINY_VAE_CONFIG).eval()
    scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG)
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,  # as the base SDXL model_index.json
    )


def build_tiny_sdxl(out_dir: str | pathlib.Path, seed: int = 0) -> pathlib.Path:
    """Write a complete diffusers-format tiny SDXL folder to `out_dir` and return its path.

    Loads with `StableDiffusionXLPipeline.from_pretrained(out_dir)` and
    `StableDiffusionXLImg2ImgPipeline.from_pretrained(out_dir)` (base-model semantics: 6 time ids,
    `requires_aesthetics_score=False`). Same seed -> same weights.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_tiny_sdxl_pipeline(seed).save_pretrained(out, safe_serialization=True)
    (out / "TINY_RANDOM_MODEL.json").write_text(
        json.dumps(
            {
                "warning": "tiny randomly initialised SDXL for tests and the offline demo; not a real model",
                "seed": seed,
                "built_by": "supir.tiny_sdxl.build_tiny_sdxl",
            },
            indent=2,
        )
        + "\n"
    )
    return out
