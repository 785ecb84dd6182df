"""Blur kernels against their closed forms (written out independently here)."""

import math

import numpy as np
import pytest
from scipy import special, stats

from supir.degradation import kernels
from supir.degradation.kernels import KernelSpec


def _coords(n):
    ax = np.arange(n) - n // 2
    return np.meshgrid(ax, ax)  # xx varies along columns (x), yy along rows (y)


def test_isotropic_gaussian_is_the_normalised_normal_density():
    n, s = 21, 2.3
    xx, yy = _coords(n)
    pdf = stats.multivariate_normal([0, 0], [[s * s, 0], [0, s * s]]).pdf(np.dstack([xx, yy]))
    np.testing.assert_allclose(kernels.gaussian(n, s), pdf / pdf.sum(), rtol=1e-10)


def test_anisotropic_gaussian_uses_the_rotated_covariance():
    n, sx, sy, theta = 15, 2.5, 0.7, 0.6
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = rot @ np.diag([sx**2, sy**2]) @ rot.T
    xx, yy = _coords(n)
    pdf = stats.multivariate_normal([0, 0], cov).pdf(np.dstack([xx, yy]))
    np.testing.assert_allclose(kernels.gaussian(n, sx, sy, theta), pdf / pdf.sum(), rtol=1e-10)
    # rotating by 90 degrees swaps the axes
    np.testing.assert_allclose(kernels.gaussian(n, sx, sy, math.pi / 2), kernels.gaussian(n, sy, sx, 0.0), atol=1e-15)


def test_generalized_gaussian_and_plateau_closed_forms():
    n, sx, sy, theta, beta = 21, 1.8, 1.1, -0.4, 0.7
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    inv = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    xx, yy = _coords(n)
    pts = np.dstack([xx, yy])
    q = np.einsum("...i,ij,...j->...", pts, inv, pts)
    g = np.exp(-0.5 * q**beta)
    np.testing.assert_allclose(kernels.generalized_gaussian(n, sx, sy, theta, beta), g / g.sum(), rtol=1e-10)
    p = 1 / (1 + q**beta)
    np.testing.assert_allclose(kernels.plateau(n, sx, sy, theta, beta), p / p.sum(), rtol=1e-10)
    # beta = 1 is the Gaussian
    np.testing.assert_allclose(kernels.generalized_gaussian(n, sx, sy, theta, 1.0),
                               kernels.gaussian(n, sx, sy, theta), rtol=1e-12)


def test_circular_lowpass_closed_form_and_centre_limit():
    n, wc = 13, 1.9
    k = kernels.circular_lowpass(n, wc)
    xx, yy = _coords(n)
    r = np.hypot(xx, yy)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = wc * special.j1(wc * r) / (2 * np.pi * r)
    ref[n // 2, n // 2] = wc**2 / (4 * np.pi)
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-10)
    # the centre value is the r -> 0 limit: continuous with its neighbours' trend
    tiny = 1e-6
    assert math.isclose(wc * special.j1(wc * tiny) / (2 * np.pi * tiny), wc**2 / (4 * np.pi), rel_tol=1e-9)


@pytest.mark.parametrize(
    "spec",
    [
        KernelSpec("iso", 7, 0.2, 0.2),
        KernelSpec("aniso", 21, 3.0, 0.2, 2.0),
        KernelSpec("generalized_aniso", 17, 1.0, 2.0, 0.3, beta=3.5),
        KernelSpec("plateau_iso", 9, 1.4, 1.4, beta=1.5),
        KernelSpec("sinc", 21, omega_c=math.pi / 5),
        KernelSpec("delta", 21),
    ],
)
def test_every_kernel_is_normalised_point_symmetric_and_pads_to_21(spec):
    k = kernels.build(spec)
    assert k.shape == (spec.size, spec.size)
    assert math.isclose(k.sum(), 1.0, rel_tol=1e-12)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-15)  # correlation == convolution
    padded = np.pad(k, (21 - spec.size) // 2)  # the reference's zero-padding to 21x21
    assert padded.shape == (21, 21) and math.isclose(padded.sum(), 1.0, rel_tol=1e-12)
    assert padded[10, 10] == k[spec.size // 2, spec.size // 2]


def test_isotropic_gaussian_separates_into_two_1d_passes():
    g = kernels.gaussian_1d(19, 2.7)
    np.testing.assert_allclose(np.outer(g, g), kernels.gaussian(19, 2.7), rtol=1e-12)
    assert KernelSpec("iso", 19, 2.7, 2.7).separable and not KernelSpec("aniso", 19, 2.7, 1.0).separable


def test_unknown_kernel_kind_is_refused():
    with pytest.raises(ValueError, match="unknown kernel kind"):
        kernels.build(KernelSpec("box", 7))
