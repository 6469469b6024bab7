"""The high-frequency suppressor: a separable Gaussian low-pass (paper Eqs. 8–9)."""

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
