"""The one rule that turns image bytes into the 8-bit RGB every stage sees.

Ingest judges an image, shard crops its GT, caption and negatives feed it to a model and
`supir.restore` restores it: all of them must see the same pixels, so all of them convert here.
Transparent pixels are composited on white; 16-bit and float data keep their top 8 bits (float
is stretched to its range); palette, CMYK, gray and the other modes convert with PIL.
"""

import numpy as np
from PIL import Image


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any PIL mode to 8-bit RGB: alpha composited on white, 16-bit scaled, palette/CMYK/gray converted."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img)
        if mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr = (arr - lo) / (hi - lo or 1.0) * 255.0
        elif arr.dtype != np.uint8:
            # 16-bit data (PIL keeps it in 'I' or 'I;16'): keep the top 8 bits.
            arr = np.right_shift(np.clip(arr, 0, 65535).astype(np.uint32), 8) if arr.max() > 255 else arr
        gray = np.clip(arr, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        img = background
    elif img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(img)
