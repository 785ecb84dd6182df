"""The degradation config: one flat dataclass whose field names are Real-ESRGAN's option names.

Defaults are the Real-ESRGAN x4plus recipe (``shared/REALESRGAN.md``; options
``train_realesrgan_x4plus.yml`` and ``realesrgan_dataset.py``). Fields ending in ``2`` belong to
the second degradation order, exactly as in the reference options, so a Real-ESRGAN user can read
and override them without a translation table.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
RESIZE_MODES = ("area", "bilinear", "bicubic")


def _odd_sizes(lo: int = 7, hi: int = 21) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, 2))


@dataclass(frozen=True)
class DegradationConfig:
    """Every probability and range of the second-order degradation; see ``docs/degradation.md``."""

    scale: int = 4  # GT / LQ size ratio of the second order's target size
    # SUPIR trains on same-size pairs: "gt" resizes the final LQ back to the GT size.
    lq_size: str = "scaled"  # "scaled" (GT/scale) | "gt"
    resize_back_mode: str = "bicubic"  # interpolation of the resize back to the GT size
    gt_usm: bool = False  # unsharp-mask the GT before degrading it (Real-ESRGAN's ``gt_usm``)
    usm_weight: float = 0.5
    usm_radius: int = 50
    usm_threshold: float = 10.0

    # kernels of the first blur
    kernel_sizes: tuple[int, ...] = field(default_factory=_odd_sizes)
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    rotation_range: tuple[float, float] = (-math.pi, math.pi)

    # first order
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    # DiffBIR draws a down-sampling *factor* uniformly (1/scale ~ U(lo, hi)) instead of a scale.
    resize_by_factor: bool = False
    resize_modes: tuple[str, ...] = RESIZE_MODES
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)  # sigma, in 8-bit levels
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)  # integer libjpeg qualities, both ends included

    # second order
    second_order: bool = True  # False: a single order (DiffBIR), no final sinc/JPEG step
    kernel_sizes2: tuple[int, ...] = field(default_factory=_odd_sizes)
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    second_blur_prob: float = 0.8
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    resize_modes2: tuple[str, ...] = RESIZE_MODES
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[int, int] = (30, 95)

    # final step: [resize to GT/scale + sinc] and JPEG, in one of two orders
    final_sinc_prob: float = 0.8
    final_sinc_sizes: tuple[int, ...] = field(default_factory=_odd_sizes)
    final_sinc_omega: tuple[float, float] = (math.pi / 3, math.pi)
    sinc_first_prob: float = 0.5  # P([resize + sinc] then JPEG); else JPEG then [resize + sinc]
    final_resize_modes: tuple[str, ...] = RESIZE_MODES

    # input limits: smaller GTs cannot be degraded meaningfully, larger ones would exhaust memory
    min_gt_side: int = 8
    max_gt_pixels: int = 4096 * 4096

    def __post_init__(self):
        # YAML/JSON give lists: store tuples so the config stays hashable and frozen.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))
        self.validate()

    # ----------------------------------------------------------------- validation
    def validate(self) -> None:
        def fail(msg: str):
            raise ConfigError(f"degradation config: {msg}")

        if self.scale < 1:
            fail(f"scale must be >= 1, got {self.scale}")
        if self.lq_size not in ("scaled", "gt"):
            fail(f"lq_size must be 'scaled' or 'gt', got {self.lq_size!r}")
        for name in ("resize_back_mode",):
            if getattr(self, name) not in RESIZE_MODES:
                fail(f"{name} must be one of {RESIZE_MODES}, got {getattr(self, name)!r}")
        for suffix in ("", "2"):
            sizes = getattr(self, f"kernel_sizes{suffix}")
            if not sizes or any(s < 1 or s % 2 == 0 for s in sizes):
                fail(f"kernel_sizes{suffix} must be odd positive sizes, got {sizes}")
            kl, kp = getattr(self, f"kernel_list{suffix}"), getattr(self, f"kernel_prob{suffix}")
            unknown = set(kl) - set(KERNEL_TYPES)
            if unknown:
                fail(f"kernel_list{suffix} has unknown kernel types {sorted(unknown)}; known: {KERNEL_TYPES}")
            if len(kl) != len(kp):
                fail(f"kernel_list{suffix} and kernel_prob{suffix} differ in length")
            self._check_probs(f"kernel_prob{suffix}", kp)
            for name in ("blur_sigma", "betag_range", "betap_range"):
                self._check_range(f"{name}{suffix}", getattr(self, f"{name}{suffix}"), positive=True)
        if not self.final_sinc_sizes or any(s < 1 or s % 2 == 0 for s in self.final_sinc_sizes):
            fail(f"final_sinc_sizes must be odd positive sizes, got {self.final_sinc_sizes}")
        for name in ("resize_prob", "resize_prob2"):
            if len(getattr(self, name)) != 3:
                fail(f"{name} must be 3 probabilities (up, down, keep)")
            self._check_probs(name, getattr(self, name))
        for name in ("resize_modes", "resize_modes2", "final_resize_modes"):
            modes = getattr(self, name)
            if not modes or set(modes) - set(RESIZE_MODES):
                fail(f"{name} must be a non-empty subset of {RESIZE_MODES}, got {modes}")
        lo, hi = self.resize_range
        if not (0 < lo <= 1 <= hi) and not self.resize_by_factor:
            fail(f"resize_range must satisfy 0 < lo <= 1 <= hi, got {self.resize_range}")
        if self.resize_by_factor and not (1 <= lo <= hi):
            fail(f"resize_range (down-sampling factors) must satisfy 1 <= lo <= hi, got {self.resize_range}")
        lo, hi = self.resize_range2
        if not (0 < lo <= 1 <= hi):
            fail(f"resize_range2 must satisfy 0 < lo <= 1 <= hi, got {self.resize_range2}")
        for name in ("noise_range", "noise_range2", "poisson_scale_range", "poisson_scale_range2",
                     "final_sinc_omega", "rotation_range"):
            self._check_range(name, getattr(self, name), positive=name.startswith(("noise", "poisson")))
        for name in ("jpeg_range", "jpeg_range2"):
            lo, hi = getattr(self, name)
            if not (1 <= lo <= hi <= 100) or int(lo) != lo or int(hi) != hi:
                fail(f"{name} must be integer qualities 1 <= lo <= hi <= 100, got {getattr(self, name)}")
        for name in ("sinc_prob", "sinc_prob2", "second_blur_prob", "final_sinc_prob", "sinc_first_prob",
                     "gaussian_noise_prob", "gaussian_noise_prob2", "gray_noise_prob", "gray_noise_prob2"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                fail(f"{name} must be a probability in [0, 1], got {p}")
        if self.min_gt_side < max(1, self.scale):
            fail(f"min_gt_side must be >= scale ({self.scale}), got {self.min_gt_side}")

    @staticmethod
    def _check_probs(name: str, probs) -> None:
        if any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-6):
            raise ConfigError(f"degradation config: {name} must be non-negative and sum to 1, got {probs}")

    @staticmethod
    def _check_range(name: str, rng, positive: bool) -> None:
        if len(rng) != 2 or rng[0] > rng[1] or (positive and rng[0] < 0):
            raise ConfigError(f"degradation config: {name} must be [lo, hi] with lo <= hi, got {rng}")

    # ------------------------------------------------------------- (de)serialising
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def replace(self, **overrides) -> DegradationConfig:
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"degradation config: unknown fields {sorted(unknown)}")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DegradationConfig:
        """A preset (``preset: stablesr``, default ``realesrgan``) with the other keys as overrides."""
        data = dict(data)
        base = preset(data.pop("preset", "realesrgan"))
        return base.replace(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> DegradationConfig:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read degradation config {path}: {exc}") from exc
        try:
            if path.suffix.lower() == ".json":
                data = json.loads(text)
            else:
                import yaml

                data = yaml.safe_load(text)
        except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError
            raise ConfigError(f"{path} is not valid JSON/YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of degradation options")
        # a file may nest the options under `degradation:` (as inside a larger training config)
        data = data.get("degradation", data)
        return cls.from_dict(data)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        else:
            import yaml

            path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


# ---------------------------------------------------------------------------- presets
def _stablesr() -> DegradationConfig:
    # StableSR's degradation options (milder: higher JPEG qualities, weaker noise, less blur).
    return DegradationConfig(
        blur_sigma=(0.2, 1.5), betag_range=(0.5, 2.0), betap_range=(1.0, 1.5),
        resize_range=(0.3, 1.5), noise_range=(1.0, 15.0), poisson_scale_range=(0.05, 2.0),
        jpeg_range=(60, 95),
        second_blur_prob=0.5, blur_sigma2=(0.2, 1.0), betag_range2=(0.5, 2.0), betap_range2=(1.0, 1.5),
        resize_range2=(0.6, 1.2), noise_range2=(1.0, 12.0), poisson_scale_range2=(0.05, 1.0),
        jpeg_range2=(60, 100),
    )


def _diffbir() -> DegradationConfig:
    # DiffBIR v1: one order; 41x41 iso/aniso Gaussian blur, down-sampling factor U(1, 12),
    # Gaussian noise sigma U(0, 15), JPEG U(30, 100), bilinear resize back to the GT size.
    return DegradationConfig(
        scale=1, lq_size="gt", resize_back_mode="bilinear",
        kernel_sizes=(41,), kernel_list=("iso", "aniso"), kernel_prob=(0.5, 0.5),
        sinc_prob=0.0, blur_sigma=(0.1, 12.0),
        resize_prob=(0.0, 1.0, 0.0), resize_range=(1.0, 12.0), resize_by_factor=True,
        resize_modes=("bilinear",),
        gaussian_noise_prob=1.0, noise_range=(0.0, 15.0), gray_noise_prob=0.0, jpeg_range=(30, 100),
        second_order=False, final_sinc_prob=0.0,
    )


PRESETS = {
    "realesrgan": DegradationConfig,
    # SUPIR: the Real-ESRGAN recipe, LQ resized back to the GT size (same-size training pairs).
    "supir": lambda: DegradationConfig(lq_size="gt"),
    "stablesr": _stablesr,
    "diffbir": _diffbir,
}


def preset(name: str = "supir") -> DegradationConfig:
    """A named recipe: ``realesrgan``, ``supir`` (default), ``stablesr`` or ``diffbir``."""
    try:
        return PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown degradation preset {name!r}; choose one of {sorted(PRESETS)}") from None
