"""The one walk of the recipe: the order of steps Real-ESRGAN prescribes, for any backend's operations.

The CPU operations are used for real; each call is recorded on the way through."""

import dataclasses

import numpy as np
import pytest
import skimage.data

from schemas.errors import InputImageError
from supir.degradation import cpu, orders, preset, rng_for, sample_recipe
from supir.degradation.kernels import KernelSpec


def recorded(log: list) -> orders.Ops:
    def wrap(name, fn):
        def call(img, *args):
            out = fn(img, *args)
            if name != "size":
                log.append((name, tuple(out.shape[:2])))
            return out

        return call

    return orders.Ops(**{f.name: wrap(f.name, getattr(cpu.OPS, f.name)) for f in dataclasses.fields(orders.Ops)})


def gt(h=64, w=80):
    return np.ascontiguousarray(skimage.data.astronaut()[100 : 100 + h, 150 : 150 + w]).astype(np.float32) / 255


def steps(log):
    return [name for name, _ in log]


@pytest.mark.parametrize("sinc_first", [True, False])
def test_second_order_recipe_runs_its_steps_in_order(sinc_first):
    recipe = sample_recipe(preset("realesrgan").replace(second_blur_prob=1.0, final_sinc_prob=1.0, gt_usm=True),
                           rng_for(0, "walk"))
    recipe = dataclasses.replace(
        recipe, first=dataclasses.replace(recipe.first, resize=dataclasses.replace(recipe.first.resize, scale=0.5)),
        final=dataclasses.replace(recipe.final, sinc_first=sinc_first))
    log = []
    lq = orders.degrade(recorded(log), recipe, gt())
    final = ["resize", "blur", "jpeg"] if sinc_first else ["jpeg", "resize", "blur"]
    s = recipe.second.resize.scale  # relative to GT / scale = 16x20; skipped when it is the size already
    second_resize = [] if (int(16 * s), int(20 * s)) == (32, 40) else ["resize"]
    assert steps(log) == ["usm_sharpen", "blur", "resize", "add_noise", "jpeg",  # first order
                          "blur", *second_resize, "add_noise",  # second order
                          *final, "quantise"]
    assert log[2][1] == (32, 40)  # first resize relative to the input size
    assert lq.shape[:2] == (16, 20) == orders.lq_shape(recipe, 64, 80)  # final resize to GT / scale
    assert lq.dtype == np.uint8


def test_skipped_and_delta_kernels_cost_nothing_and_gt_size_output_is_resized_back():
    recipe = sample_recipe(preset("supir"), rng_for(1, "walk"))
    recipe = dataclasses.replace(
        recipe, first=dataclasses.replace(recipe.first, kernel=KernelSpec("delta", 21)),
        second=dataclasses.replace(recipe.second, kernel=None), final=dataclasses.replace(recipe.final, sinc=None))
    log = []
    lq = orders.degrade(recorded(log), recipe, gt())
    assert "blur" not in steps(log)
    assert steps(log)[-3:] == ["quantise", "resize", "quantise"] and lq.shape[:2] == (64, 80)


def test_single_order_recipe_goes_straight_to_the_lq_size():
    recipe = sample_recipe(preset("diffbir"), rng_for(2, "walk"))
    log = []
    orders.degrade(recorded(log), recipe, gt())
    # no final step; scale 1: the LQ size is the GT size, so the resize back is skipped
    assert steps(log) == ["blur", "resize", "add_noise", "jpeg", "resize", "quantise", "quantise"]
    assert log[-1][1] == (64, 80)


def test_gt_size_limits_are_checked_by_the_recipe():
    recipe = sample_recipe(preset("realesrgan").replace(min_gt_side=10, max_gt_pixels=100 * 100), rng_for(0, "x"))
    orders.check_gt_size(recipe, 10, 1000)
    with pytest.raises(InputImageError, match="minimum side 10"):
        orders.check_gt_size(recipe, 9, 50)
    with pytest.raises(InputImageError, match="max_gt_pixels=10000"):
        orders.check_gt_size(recipe, 101, 100)
