"""Pinned CPU outputs: the numpy/OpenCV backend's LQ bytes for fixed recipes and seeds.

The CPU backend promises "same recipe, same bytes" (shards store the recipe, not the LQ), so any
change to how it executes a recipe must keep these digests. They were recorded with the library
versions below; with other OpenCV/numpy/SciPy builds the bytes may legitimately differ (different
SIMD paths in resize/filter2D/FFT), so the test then skips rather than fails.
"""

import hashlib

import cv2
import numpy as np
import pytest
import scipy
import skimage.data

from supir.degradation import apply, preset, rng_for, sample_recipe

RECORDED_WITH = {"opencv": "5.0.0", "numpy": "2.4.6", "scipy": "1.17.1"}
CASES = {
    "realesrgan": lambda: preset("realesrgan"),
    "realesrgan_usm": lambda: preset("realesrgan").replace(gt_usm=True),
    "supir": lambda: preset("supir"),
    "stablesr": lambda: preset("stablesr"),
    "diffbir": lambda: preset("diffbir"),
}
SEEDS = range(8)
# sha256 of (LQ of a 76x100 photo crop + LQ of a 13x11 crop), first 16 hex digits, per seed
DIGESTS = {
    "diffbir": [
        "26c04bfccc7b6e9d", "c556bdeab2fcc284", "184a64f8a6882ecb", "8cc1f7bdc4b68725",
        "1970b8acd1fc48f2", "24d51914aa0ed9cb", "1c967c86a1e9aad2", "97dcbbebfc6f960e",
    ],
    "realesrgan": [
        "1df2756a16da8c83", "f1cf341a7eebbd53", "9ff320bd5531addc", "a6833c1199933109",
        "fa9e2bd95dff9964", "0b8c4ce8751035d7", "d51dfaa30c937f25", "01c27906ba8d850e",
    ],
    "realesrgan_usm": [
        "c218d8e0f3f70e19", "227a333e5b1b4d27", "a596e37a10615bd3", "d3d74ecbb762e796",
        "04f34774f10da7c8", "32bf74223b2b7600", "6e81d2449d528d4a", "caf5ee0294227542",
    ],
    "stablesr": [
        "607a6daba6f5ffd4", "068ac33f796535db", "025ba999f7414138", "28932b9891a620f0",
        "99e57fab203ede35", "8ba598154d976e11", "8ee08ce4241a8fb8", "bebc9ebd9ac277f1",
    ],
    "supir": [
        "4ae07385358e94bb", "10d4ce8e325511b8", "297c1f4c1ddb7ba4", "2f40d6139b8afc30",
        "8fcafb982e20c54d", "64b14cd66c50d1cd", "d7e8b581948b9793", "e6120ff5e62ba87b",
    ],
}


def lq_digest(config, seed: int) -> str:
    photo = skimage.data.astronaut()
    recipe = sample_recipe(config, rng_for(seed, "golden"))
    h = hashlib.sha256()
    for crop in (photo[90:166, 170:270], photo[200:213, 200:211]):
        h.update(apply(recipe, np.ascontiguousarray(crop)).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("case", sorted(CASES))
def test_cpu_backend_bytes_are_pinned(case):
    here = {"opencv": cv2.__version__, "numpy": np.__version__, "scipy": scipy.__version__}
    if here != RECORDED_WITH:
        pytest.skip(f"digests recorded with {RECORDED_WITH}, running {here}")
    assert [lq_digest(CASES[case](), seed) for seed in SEEDS] == DIGESTS[case]
