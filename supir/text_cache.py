"""Cached text conditioning: the two CLIP encoders' outputs stored with each shard sample.

SDXL's text encoders hold 0.82B parameters (1.5 GiB in bf16) that a fine-tuning run would keep on
the GPU only to re-encode the same captions every epoch. The shard step can instead encode each
sample's training prompt (caption + positive prompt, or a negative sample's prompt) once and store
the result as two optional members:

- ``txtemb.npy``: float16 77×(768+1280) penultimate-layer token embeddings of both encoders;
- ``txtpool.npy``: float16 1280 pooled embedding of the second encoder;

plus ``text_encoder`` in the sample's json (which weights made them). The trainer then reads them
instead of loading the encoders; caption dropout uses zeros, exactly what ``encode_prompts`` gives
the empty prompt. Training without the cache keeps working: the members are optional.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass

import numpy as np
import torch

from schemas.errors import MissingWeightsError
from schemas.sample import TEXT_EMBEDS_MEMBER, TEXT_POOLED_MEMBER
from supir.conditioning import encode_prompts


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def read_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def text_encoder_id(parts) -> str:
    """A short identity of the two text encoders' weights (config + first/last tensors' bytes)."""
    h = hashlib.sha256()
    for encoder in (parts.text_encoder, parts.text_encoder_2):
        h.update(encoder.config.to_json_string(use_diff=False).encode())
        tensors = list(encoder.state_dict().values())
        for t in (tensors[0], tensors[-1]):
            h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def text_members(parts, texts: list[str]) -> list[dict[str, bytes]]:
    """The cache members of each text (float16, as stored)."""
    embeds, pooled = encode_prompts(parts, texts)
    embeds = embeds.float().cpu().numpy().astype(np.float16)
    pooled = pooled.float().cpu().numpy().astype(np.float16)
    return [{TEXT_EMBEDS_MEMBER: _npy(e), TEXT_POOLED_MEMBER: _npy(p)} for e, p in zip(embeds, pooled)]


@dataclass
class TextEncoders:
    """SDXL's two text encoders and tokenizers alone (what `encode_prompts` needs), on the CPU."""

    text_encoder: torch.nn.Module
    text_encoder_2: torch.nn.Module
    tokenizer: object
    tokenizer_2: object
    unet: None = None


@functools.lru_cache(maxsize=2)
def load_text_encoders(pretrained: str) -> tuple[TextEncoders, str]:
    """The encoders of an SDXL diffusers folder, loaded once per process, and their identity."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    try:
        parts = TextEncoders(
            CLIPTextModel.from_pretrained(pretrained, subfolder="text_encoder").eval(),
            CLIPTextModelWithProjection.from_pretrained(pretrained, subfolder="text_encoder_2").eval(),
            CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer"),
            CLIPTokenizer.from_pretrained(pretrained, subfolder="tokenizer_2"),
        )
    except OSError as exc:
        raise MissingWeightsError(f"--text-encoder {pretrained!r}: not an SDXL diffusers folder ({exc})") from exc
    return parts, text_encoder_id(parts)


def cached_text_members(pretrained: str, text: str) -> tuple[dict[str, bytes], str]:
    """The cache members of one training prompt, and the encoders' identity for the sample's json.

    One intra-op thread while encoding: CPU float results can depend on the thread count, and shard
    bytes must not depend on the machine (the engine runs one shard task per core anyway).
    """
    parts, identity = load_text_encoders(str(pretrained))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return text_members(parts, [text])[0], identity
    finally:
        torch.set_num_threads(threads)
