"""The high-frequency suppressor: a separable Gaussian low-pass (paper Eqs. 8–9), and the power
spectra its sigma is chosen from (notebook 01)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, kernel_size: int | None = None, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps; the default size 2·⌈3σ⌉+1 keeps 99.7% of the mass."""
    if sigma <= 0:
        raise ValueError(f"sigma={sigma} must be positive (use hf_suppress='off' for no filter)")
    size = kernel_size or 2 * math.ceil(3 * sigma) + 1
    if size % 2 == 0:
        raise ValueError(f"kernel_size={size} must be odd so the filter does not shift the image")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def gaussian_lowpass(x: torch.Tensor, sigma: float, kernel_size: int | None = None) -> torch.Tensor:
    """H(x) = h * x (Eq. 9) for ``x`` of shape [B, C, H, W]; same shape, dtype and device out.

    Separable (a row pass then a column pass), reflect padding so the borders do not darken. The taps
    sum to one, so the DC gain is exactly one: a constant image passes unchanged and the mean is kept
    up to border effects. The kernel is clipped to the image so reflect padding stays valid.
    """
    if x.ndim != 4:
        raise ValueError(f"expected [B, C, H, W], got shape {tuple(x.shape)}")
    taps = gaussian_kernel1d(sigma, kernel_size, dtype=x.dtype, device=x.device)
    half = min(taps.numel() // 2, x.shape[-1] - 1, x.shape[-2] - 1)
    taps = taps[taps.numel() // 2 - half : taps.numel() // 2 + half + 1]
    taps = taps / taps.sum()
    channels = x.shape[1]
    row = taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    col = taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="reflect"), row, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, half, half), mode="reflect"), col, groups=channels)


def power_spectrum(images: torch.Tensor) -> torch.Tensor:
    """|x̂(f)|² of the mean-removed ``images`` [..., H, W], averaged over every leading dimension
    (images, channels): [H, W] in ``torch.fft.fft2``'s frequency order."""
    centred = images - images.mean((-2, -1), keepdim=True)
    return (torch.fft.fft2(centred).abs() ** 2).mean(tuple(range(images.ndim - 2)))


def frequency_radius(n: int, *, device=None) -> torch.Tensor:
    """|f| in cycles per pixel at each point of an n×n ``fft2`` grid: [n, n], float64."""
    f = torch.fft.fftfreq(n, dtype=torch.float64, device=device)
    return (f[:, None] ** 2 + f[None, :] ** 2).sqrt()


def radial_power(spectrum: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The radially averaged power of a square ``spectrum`` [n, n]: (radius, mean power), both [R].

    Frequencies are binned by |f| rounded to a multiple of 1/n cycle per pixel; bin k is the mean
    over the grid's points in it, at radius k/n. Every bin up to the corner's holds a point (out
    along an axis, then along the edge to the corner, |f| grows by at most 1/n a point), so no mean
    divides by zero.
    """
    n = spectrum.shape[-1]
    if spectrum.shape != (n, n):
        raise ValueError(f"expected a square [n, n] spectrum, got shape {tuple(spectrum.shape)}")
    bins = (frequency_radius(n, device=spectrum.device) * n).round().long().flatten()
    totals = torch.zeros(int(bins.max()) + 1, dtype=spectrum.dtype, device=spectrum.device)
    totals = totals.index_add(0, bins, spectrum.flatten())
    return torch.arange(len(totals), device=spectrum.device) / n, totals / torch.bincount(bins)
