"""`sample_recipe`: every random choice of one degradation, drawn up front into a JSON record.

Splitting the draw (cheap, a few dozen scalars) from the application (deterministic image work)
makes a degradation reproducible from its record alone, lets the shard stage store the record next
to the sample, and lets the statistical tests check thousands of draws without touching pixels.
Noise fields are too big to record, so each order records the seed of its noise generator.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from schemas.runs import derive_seed
from supir.degradation.config import DegradationConfig
from supir.degradation.kernels import KernelSpec


def rng_for(seed: int, key: str) -> np.random.Generator:
    """The generator of one sample: a function of (global seed, sample key) only, never of worker order."""
    return np.random.default_rng(derive_seed(seed, key))


@dataclass(frozen=True)
class Resize:
    direction: str  # "up" | "down" | "keep"
    scale: float  # first order: relative to the input size; second: relative to GT/scale
    mode: str  # "area" | "bilinear" | "bicubic"


@dataclass(frozen=True)
class Noise:
    kind: str  # "gaussian" | "poisson"
    level: float  # Gaussian sigma in 8-bit levels, or the Poisson scale
    gray: bool  # one noise field shared by the three channels
    seed: int  # seed of this order's noise generator


@dataclass(frozen=True)
class Order:
    """One degradation order: blur (None = skipped), resize, noise, JPEG (None = skipped)."""

    kernel: KernelSpec | None
    resize: Resize
    noise: Noise
    jpeg_quality: int | None


@dataclass(frozen=True)
class Final:
    """The last step: [resize to GT/scale + sinc] and JPEG, in ``order``."""

    sinc: KernelSpec | None  # None: a delta kernel, i.e. no filtering
    resize_mode: str
    jpeg_quality: int
    sinc_first: bool  # True: [resize + sinc] then JPEG; False: JPEG then [resize + sinc]


@dataclass(frozen=True)
class Recipe:
    """Everything `apply` needs besides the GT image."""

    scale: int
    lq_size: str  # "scaled" | "gt"
    resize_back_mode: str
    gt_usm: bool
    usm_weight: float
    usm_radius: int
    usm_threshold: float
    first: Order
    second: Order | None
    final: Final | None
    # input limits (from the config), checked by `apply` before any work
    min_gt_side: int = 8
    max_gt_pixels: int = 4096 * 4096

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        def order(o):
            if o is None:
                return None
            return Order(
                kernel=KernelSpec(**o["kernel"]) if o["kernel"] is not None else None,
                resize=Resize(**o["resize"]),
                noise=Noise(**o["noise"]),
                jpeg_quality=o["jpeg_quality"],
            )

        f = d["final"]
        final = None
        if f is not None:
            final = Final(**{**f, "sinc": KernelSpec(**f["sinc"]) if f["sinc"] is not None else None})
        scalars = {k: v for k, v in d.items() if k not in ("first", "second", "final")}
        return cls(**scalars, first=order(d["first"]), second=order(d["second"]), final=final)


# ------------------------------------------------------------------------------- sampling
def _categorical(rng: np.random.Generator, items, probs):
    # cumulative search: ~20x cheaper than rng.choice(p=...) for a single draw
    cum = list(itertools.accumulate(probs))
    i = bisect.bisect_right(cum, rng.random() * cum[-1])
    return items[min(i, len(items) - 1)]


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * rng.random())


def _beta(rng: np.random.Generator, lo: float, hi: float) -> float:
    # Real-ESRGAN: half the time β < 1 (heavier tails), half the time β > 1 (flatter top)
    return _uniform(rng, lo, 1.0) if rng.random() < 0.5 else _uniform(rng, 1.0, hi)


def sample_sinc(rng: np.random.Generator, size: int, omega=None) -> KernelSpec:
    if omega is None:  # small kernels cannot hold a low cut-off: ω_c ≥ π/3 below size 13
        omega = (math.pi / 3, math.pi) if size < 13 else (math.pi / 5, math.pi)
    return KernelSpec(kind="sinc", size=size, omega_c=_uniform(rng, *omega))


def sample_kernel(rng, sizes, kinds, probs, sinc_prob, sigma, betag, betap, rotation) -> KernelSpec:
    size = int(sizes[int(rng.integers(len(sizes)))])
    if rng.random() < sinc_prob:
        return sample_sinc(rng, size)
    kind = _categorical(rng, kinds, probs)
    sigma_x = _uniform(rng, *sigma)
    if kind.endswith("aniso"):
        sigma_y, theta = _uniform(rng, *sigma), _uniform(rng, *rotation)
    else:
        sigma_y, theta = sigma_x, 0.0
    beta = 1.0
    if kind.startswith("generalized"):
        beta = _beta(rng, *betag)
    elif kind.startswith("plateau"):
        beta = _beta(rng, *betap)
    return KernelSpec(kind=kind, size=size, sigma_x=sigma_x, sigma_y=sigma_y, rotation=theta, beta=beta)


def _resize(rng, probs, rng_range, modes, by_factor=False) -> Resize:
    direction = _categorical(rng, ("up", "down", "keep"), probs)
    lo, hi = rng_range
    if direction == "up":
        scale = _uniform(rng, 1.0, hi)
    elif direction == "down":
        scale = 1.0 / _uniform(rng, lo, hi) if by_factor else _uniform(rng, lo, 1.0)
    else:
        scale = 1.0
    return Resize(direction=direction, scale=scale, mode=str(modes[int(rng.integers(len(modes)))]))


def _noise(rng, gaussian_prob, sigma_range, poisson_range, gray_prob) -> Noise:
    if rng.random() < gaussian_prob:
        kind, level = "gaussian", _uniform(rng, *sigma_range)
    else:
        kind, level = "poisson", _uniform(rng, *poisson_range)
    gray = bool(rng.random() < gray_prob)
    return Noise(kind=kind, level=level, gray=gray, seed=int(rng.integers(1 << 63)))


def _jpeg(rng, jpeg_range) -> int:
    return int(rng.integers(int(jpeg_range[0]), int(jpeg_range[1]) + 1))


def sample_recipe(config: DegradationConfig, rng: np.random.Generator) -> Recipe:
    """Draw one degradation from ``config`` (the order of draws is fixed, so the same rng state
    always gives the same recipe)."""
    c = config
    first = Order(
        kernel=sample_kernel(rng, c.kernel_sizes, c.kernel_list, c.kernel_prob, c.sinc_prob, c.blur_sigma,
                             c.betag_range, c.betap_range, c.rotation_range),
        resize=_resize(rng, c.resize_prob, c.resize_range, c.resize_modes, c.resize_by_factor),
        noise=_noise(rng, c.gaussian_noise_prob, c.noise_range, c.poisson_scale_range, c.gray_noise_prob),
        jpeg_quality=_jpeg(rng, c.jpeg_range),
    )
    second = final = None
    if c.second_order:
        kernel2 = sample_kernel(rng, c.kernel_sizes2, c.kernel_list2, c.kernel_prob2, c.sinc_prob2,
                                c.blur_sigma2, c.betag_range2, c.betap_range2, c.rotation_range)
        second = Order(
            kernel=kernel2 if rng.random() < c.second_blur_prob else None,
            resize=_resize(rng, c.resize_prob2, c.resize_range2, c.resize_modes2),
            noise=_noise(rng, c.gaussian_noise_prob2, c.noise_range2, c.poisson_scale_range2,
                         c.gray_noise_prob2),
            jpeg_quality=None,  # the second order's JPEG is part of the final step
        )
        sinc = None
        if rng.random() < c.final_sinc_prob:
            size = int(c.final_sinc_sizes[int(rng.integers(len(c.final_sinc_sizes)))])
            sinc = sample_sinc(rng, size, c.final_sinc_omega)
        final = Final(
            sinc=sinc,
            resize_mode=str(c.final_resize_modes[int(rng.integers(len(c.final_resize_modes)))]),
            jpeg_quality=_jpeg(rng, c.jpeg_range2),
            sinc_first=bool(rng.random() < c.sinc_first_prob),
        )
    return Recipe(
        scale=c.scale, lq_size=c.lq_size, resize_back_mode=c.resize_back_mode, gt_usm=c.gt_usm,
        usm_weight=c.usm_weight, usm_radius=c.usm_radius, usm_threshold=c.usm_threshold,
        first=first, second=second, final=final, min_gt_side=c.min_gt_side, max_gt_pixels=c.max_gt_pixels,
    )
