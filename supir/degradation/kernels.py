"""Blur kernels of the Real-ESRGAN recipe, built from their closed forms.

All kernels are evaluated on the integer grid centred at 0 (``-(k//2) .. k//2``) and normalised to
sum 1. With Σ = R(θ) diag(σx², σy²) R(θ)ᵀ and q(x) = xᵀ Σ⁻¹ x:

- Gaussian:             exp(-q/2)
- generalized Gaussian: exp(-q^β / 2)        (β = 1 is the Gaussian)
- plateau:              1 / (1 + q^β)
- circular low-pass:    ω_c J1(ω_c r) / (2π r), centre ω_c² / (4π)   (the ideal 2-D low-pass, "sinc")

A kernel is described by a ``KernelSpec`` (JSON-friendly numbers) and materialised on demand, so a
recipe stays small and the kernel is bit-identical wherever it is rebuilt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special


@dataclass(frozen=True)
class KernelSpec:
    """One blur kernel. ``kind`` is a Real-ESRGAN kernel type, ``sinc`` or ``delta``."""

    kind: str
    size: int
    sigma_x: float = 0.0
    sigma_y: float = 0.0
    rotation: float = 0.0
    beta: float = 1.0
    omega_c: float = 0.0

    @property
    def separable(self) -> bool:
        """Isotropic Gaussians factor into two 1-D passes (exp(-(x²+y²)/2σ²) = g(x) g(y))."""
        return self.kind == "iso"


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(xx, yy) integer coordinates of a size x size kernel, centred at 0."""
    ax = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(ax, ax)


def quadratic_form(size: int, sigma_x: float, sigma_y: float, rotation: float) -> np.ndarray:
    """q(x) = xᵀ Σ⁻¹ x for Σ = R diag(σx², σy²) Rᵀ, evaluated on the kernel grid."""
    xx, yy = grid(size)
    c, s = math.cos(rotation), math.sin(rotation)
    # coordinates in the kernel's principal axes: u = Rᵀ x
    u = c * xx + s * yy
    v = -s * xx + c * yy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def gaussian(size: int, sigma_x: float, sigma_y: float | None = None, rotation: float = 0.0) -> np.ndarray:
    sigma_y = sigma_x if sigma_y is None else sigma_y
    k = np.exp(-0.5 * quadratic_form(size, sigma_x, sigma_y, rotation))
    return k / k.sum()


def generalized_gaussian(size: int, sigma_x: float, sigma_y: float, rotation: float, beta: float) -> np.ndarray:
    k = np.exp(-0.5 * quadratic_form(size, sigma_x, sigma_y, rotation) ** beta)
    return k / k.sum()


def plateau(size: int, sigma_x: float, sigma_y: float, rotation: float, beta: float) -> np.ndarray:
    k = 1.0 / (1.0 + quadratic_form(size, sigma_x, sigma_y, rotation) ** beta)
    return k / k.sum()


def circular_lowpass(size: int, omega_c: float) -> np.ndarray:
    xx, yy = grid(size)
    r = np.hypot(xx, yy)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = omega_c * special.j1(omega_c * r) / (2 * np.pi * r)
    k[size // 2, size // 2] = omega_c**2 / (4 * np.pi)  # the limit r -> 0 of the expression above
    return k / k.sum()


def gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """The 1-D factor of an isotropic Gaussian kernel (outer(g, g) == gaussian(size, sigma))."""
    ax = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-0.5 * (ax / sigma) ** 2)
    return g / g.sum()


def build(spec: KernelSpec) -> np.ndarray:
    """The size x size kernel (float64, sum 1) that ``spec`` describes."""
    kind, n = spec.kind, spec.size
    if kind == "delta":
        k = np.zeros((n, n))
        k[n // 2, n // 2] = 1.0
        return k
    if kind == "sinc":
        return circular_lowpass(n, spec.omega_c)
    if kind in ("iso", "aniso"):
        return gaussian(n, spec.sigma_x, spec.sigma_y, spec.rotation)
    if kind in ("generalized_iso", "generalized_aniso"):
        return generalized_gaussian(n, spec.sigma_x, spec.sigma_y, spec.rotation, spec.beta)
    if kind in ("plateau_iso", "plateau_aniso"):
        return plateau(n, spec.sigma_x, spec.sigma_y, spec.rotation, spec.beta)
    raise ValueError(f"unknown kernel kind {kind!r}")

