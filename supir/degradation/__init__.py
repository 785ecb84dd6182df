"""The Real-ESRGAN second-order degradation: config + presets, recipe sampling, CPU and torch backends.

    from supir.degradation import preset, sample_recipe, apply, rng_for
    recipe = sample_recipe(preset("supir"), rng_for(seed, image_id))
    lq = apply(recipe, gt)            # uint8 RGB in, uint8 RGB out, deterministic

`orders.py` walks the recipe once for both backends: `cpu.py` (numpy + OpenCV, real libjpeg) and
`torch_backend.py` (`apply_batch_torch`, imported lazily so that the CPU path never loads torch).
`jpeg.py` holds the IJG quantisation tables every JPEG-quality computation uses.
"""

from supir.degradation.config import PRESETS, DegradationConfig, preset
from supir.degradation.cpu import apply, usm_sharpen_uint8
from supir.degradation.kernels import KernelSpec
from supir.degradation.orders import lq_shape
from supir.degradation.recipe import Final, Noise, Order, Recipe, Resize, rng_for, sample_recipe

__all__ = [
    "PRESETS", "DegradationConfig", "Final", "KernelSpec", "Noise", "Order", "Recipe", "Resize",
    "apply", "apply_batch_torch", "lq_shape", "preset", "rng_for", "sample_recipe", "usm_sharpen_uint8",
]


def __getattr__(name):
    if name == "apply_batch_torch":
        from supir.degradation.torch_backend import apply_batch_torch

        return apply_batch_torch
    raise AttributeError(name)
