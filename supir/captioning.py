"""Caption the E_dr-cleaned image with LLaVA before sampling, as the released SUPIR pipeline does.

The release captions D(E_dr(x_LQ)) at a short side of 512 (the degradations would otherwise leak
into the text: "a blurry photo of...") and prepends the caption to the positive prompt. Any
`LlavaForConditionalGeneration` folder (`save_pretrained` layout; llava-hf/llava-1.5-*-hf for real
runs) loads through `from_pretrained`, with greedy decoding so a restore is reproducible (the
release samples at temperature 0.2, top-p 0.7).
"""

from __future__ import annotations

import torch

from schemas.errors import MissingWeightsError

# The question of the released LLaVA agent (llava_agent.py), in llava-1.5's conversation format.
RELEASED_QUESTION = "Describe this image and its style in a very detailed manner."
LLAVA_TEMPLATE = "USER: <image>\n{prompt} ASSISTANT:"


class LlavaCaptioner:
    """PIL images -> one caption each (newlines folded to spaces, as released)."""

    def __init__(
        self, path: str, device: str = "cpu", dtype: torch.dtype = torch.float32, max_new_tokens=512
    ):
        from transformers import AutoProcessor, LlavaForConditionalGeneration

        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
        except OSError as exc:
            raise MissingWeightsError(
                f"cannot load the captioning model {path!r} ({exc}): give --caption-model a local LLaVA "
                "folder (save_pretrained layout), e.g. llava-hf/llava-1.5-13b-hf downloaded beforehand"
            ) from exc
        self.processor.tokenizer.padding_side = "left"
        self.max_new_tokens = max_new_tokens

    @torch.inference_mode()
    def __call__(self, images: list, question: str = RELEASED_QUESTION) -> list[str]:
        text = [LLAVA_TEMPLATE.format(prompt=question)] * len(images)
        inputs = self.processor(images=images, text=text, return_tensors="pt", padding=True).to(
            self.model.device
        )
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1] :]
        captions = self.processor.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [" ".join(c.split()) for c in captions]
