"""The Real-ESRGAN second-order degradation: config + presets, recipe sampling, CPU and torch backends.

    from supir.degradation import preset, sample_recipe, apply, rng_for
    recipe = sample_recipe(preset("supir"), rng_for(seed, image_id))
    lq = apply(recipe, gt)            # uint8 RGB in, uint8 RGB out, deterministic

`orders.py` walks the recipe once for both backends: `cpu.py` (numpy + OpenCV, real libjpeg) and
`torch_backend.py` (`apply_batch_torch`). Every name is imported on first use, so the CPU path
never loads torch.
`jpeg.py` holds the IJG quantisation tables every JPEG-quality computation uses.
"""

import importlib

# name -> defining module, imported on first use: `supir.degradation.jpeg` (numpy only) is imported
# by ingest's quality signals, which must not pay for OpenCV/SciPy/torch
_EXPORTS = {
    "PRESETS": "config", "DegradationConfig": "config", "preset": "config",
    "apply": "cpu", "usm_sharpen_uint8": "cpu",
    "KernelSpec": "kernels",
    "lq_shape": "orders",
    "Final": "recipe", "Noise": "recipe", "Order": "recipe", "Recipe": "recipe", "Resize": "recipe",
    "rng_for": "recipe", "sample_recipe": "recipe",
    "apply_batch_torch": "torch_backend",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
