"""The text prompts of the SUPIR recipe (paper §3.2 and the released sampler's defaults)."""

# LLaVA-1.5 captioning prompt, as in the paper.
CAPTION_PROMPT = "Describe this image and its style in a very detailed manner"

# Negative-quality prompt: used by SDEdit to make negative samples, as their training caption, and
# as the negative prompt of classifier-free guidance at sampling time.
NEGATIVE_PROMPT_PAPER = (
    "oil painting, cartoon, blur, dirty, messy, low quality, deformation, low resolution, over-smooth"
)
NEGATIVE_PROMPT_RELEASED = (
    "painting, oil painting, illustration, drawing, art, sketch, oil painting, cartoon, CG Style, "
    "3D render, unreal engine, blurring, dirty, messy, worst quality, low quality, frames, watermark, "
    "signature, jpeg artifacts, deformed, lowres, over-smooth"
)
NEGATIVE_PROMPTS = {"paper": NEGATIVE_PROMPT_PAPER, "released": NEGATIVE_PROMPT_RELEASED}

# Positive-quality prompt appended to every positive caption (training) and to the restoration prompt.
POSITIVE_PROMPT = (
    "Cinematic, High Contrast, highly detailed, taken using a Canon EOS R camera, hyper detailed photo - "
    "realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing, skin pore "
    "detailing, hyper sharpness, perfect without deformations."
)


def training_prompt(caption: str, is_negative: bool) -> str:
    """Text conditioning of one training sample: caption + positive prompt; negatives keep their prompt."""
    if is_negative:
        return caption
    caption = caption.strip()
    return f"{caption} {POSITIVE_PROMPT}" if caption else POSITIVE_PROMPT
