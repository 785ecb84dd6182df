"""The Real-ESRGAN second-order degradation: config + presets, recipe sampling, CPU and torch backends.

    from supir.degradation import preset, sample_recipe, apply, rng_for
    recipe = sample_recipe(preset("supir"), rng_for(seed, image_id))
    lq = apply(recipe, gt)            # uint8 RGB in, uint8 RGB out, deterministic

The torch backend (`apply_batch_torch`) is imported lazily so that the CPU path never loads torch.
"""

from supir.degradation.config import PRESETS, DegradationConfig, preset
from supir.degradation.cpu import apply, lq_shape, usm_sharpen_uint8
from supir.degradation.kernels import KernelSpec
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
