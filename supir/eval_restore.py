"""The methods `supir-data eval` compares: the bicubic baseline and SUPIR checkpoints.

A method maps one LQ image (uint8 RGB) to a result at the protocol's output size. A checkpoint is a
folder `supir.restore` reads: one of ours (`runs/.../checkpoints/step-N`) or a released one imported
by `python -m supir.convert import`; it restores with the `--settings` preset of
`supir.restore_settings` (`paper`: T=100, λ=7.5, τ_r=4; `release`: the official test.py defaults).
The input is the LQ brought to the output size by bicubic interpolation, as the paper's pipeline
feeds SDXL-sized images; the working size follows the preset's rules (multiple of 8 or 64), with
its minimum short side capped at the protocol's size (so a `--size 64` test does not work at 1024).
The sampling seed is a function of (seed, image, degradation): every checkpoint sees the same noise.
The prompt is the paper's test prompt (appendix A.2): with a captioning model, the LLaVA caption of
the checkpoint's own cleaned LQ, D(E_dr(x_LQ)) at a short side of 512 as the release does, joined to
the positive quality prompt; without one, the positive prompt alone.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from schemas.errors import ConfigError

BICUBIC = "bicubic"


@dataclass(frozen=True)
class Method:
    """One column of the comparison: a baseline (``checkpoint=None``) or a checkpoint folder."""

    name: str
    checkpoint: str | None = None
    settings: str = "paper"
    pretrained: str | None = None  # SDXL folder (default: the one the checkpoint was trained on)
    steps: int | None = None  # sampler steps override (tests, quick looks)
    caption_model: str | None = None  # LLaVA folder: caption each cleaned LQ (the paper's test prompt)
    caption_max_tokens: int = 512
    caption_size: int = 512  # short side the cleaned LQ is captioned at (the release: 512)


def checkpoint_methods(paths: list[str], settings: str, pretrained: str | None, steps: int | None,
                       caption_model: str | None = None, caption_max_tokens: int = 512,
                       caption_size: int = 512) -> list[Method]:
    """Methods named after their folders (parent-folder prefix, then a number, where names clash)."""
    from supir.restore_settings import SETTINGS

    if settings not in SETTINGS:
        raise ConfigError(f"unknown --settings {settings!r}; one of {', '.join(sorted(SETTINGS))}")
    resolved = [Path(raw).resolve() for raw in paths]
    for path in resolved:
        if path.is_file():
            raise ConfigError(f"{path} is a file: import a released checkpoint first with "
                              f"`python -m supir.convert import {path} --pretrained SDXL_DIR --out DIR`")  # fmt: skip
        if not (path / "adaptor_config.json").exists():
            raise ConfigError(f"{path} holds no adaptor (adaptor_config.json): give a checkpoint folder")
    bases = [p.name for p in resolved]
    methods, names = [], {BICUBIC}
    for path, base in zip(resolved, bases):
        name = f"{path.parent.name}-{base}" if bases.count(base) > 1 or base == BICUBIC else base
        unique, i = name, 2
        while unique in names:
            unique, i = f"{name}-{i}", i + 1
        names.add(unique)
        methods.append(Method(unique, str(path), settings, pretrained, steps, caption_model, caption_max_tokens,
                              caption_size))
    return methods


def upscale(lq: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic to (W, H): the baseline, and every method's input."""
    image = Image.fromarray(lq)
    return np.asarray(image if image.size == size else image.resize(size, Image.Resampling.BICUBIC))


class Restorer:
    """``restorer(lq, (W, H), seed) -> uint8 RGB`` for one method, loaded once per actor."""

    def __init__(self, method: Method, device: str = "cpu", dtype=None, size: int = 1024):
        self.method = method
        if method.checkpoint is None:
            return
        import torch

        from supir.restore_loading import load_restorer
        from supir.restore_settings import SETTINGS

        self.device = device
        self.parts, self.model, self.hint_encoder, self.source = load_restorer(
            method.checkpoint, method.pretrained, device, dtype or torch.float32
        )
        settings = SETTINGS[method.settings]
        if method.steps is not None:
            settings = dataclasses.replace(settings, sampler=dataclasses.replace(settings.sampler, steps=method.steps))
        self.settings = dataclasses.replace(settings, min_size=min(settings.min_size, size))
        self.captioner = None
        if method.caption_model:
            from supir.captioning import LlavaCaptioner

            self.captioner = LlavaCaptioner(method.caption_model, device, dtype or torch.float32,
                                            method.caption_max_tokens)
        self.last_prompt = None  # the prompt of the latest call (tests, logs)

    def __call__(self, lq: np.ndarray, size: tuple[int, int], seed: int) -> np.ndarray:
        base = upscale(lq, size)
        if self.method.checkpoint is None:
            return base
        import torch

        from supir.prompts import NEGATIVE_PROMPTS, POSITIVE_PROMPT
        from supir.restore import caption_cleaned_tensor, restore_batch
        from supir.restore_loading import to_pil
        from supir.restore_settings import working_size

        s = self.settings
        work, _ = working_size(*size, 1.0, s.min_size, s.size_multiple)
        x = torch.from_numpy(upscale(base, work).astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        prompt = POSITIVE_PROMPT
        if self.captioner is not None:
            caption = caption_cleaned_tensor(self.captioner, self.parts, self.hint_encoder, x,
                                             short_side=self.method.caption_size)
            prompt = f"{caption}{s.prompt_join}{POSITIVE_PROMPT}" if caption else POSITIVE_PROMPT
        self.last_prompt = prompt
        generator = torch.Generator().manual_seed(seed)
        restored = restore_batch(self.model, self.parts, x.to(self.device), [prompt], s.sampler,
                                 NEGATIVE_PROMPTS[s.negative], generator, self.hint_encoder, s)  # fmt: skip
        out = to_pil(restored[0])
        return np.asarray(out if out.size == size else out.resize(size, Image.Resampling.BICUBIC))
