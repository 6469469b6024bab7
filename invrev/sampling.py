"""Relation-focal importance sampling of diffusion timesteps (ReVersion §3.3)."""

from __future__ import annotations

import math

import torch


def relation_focal_probs(num_timesteps: int, alpha: float = 0.5) -> torch.Tensor:
    """p(t) ∝ 1 − α·cos(π t / T) for t in {0..T−1}, float64, summing to 1.

    With α = 0.5 and T = 1000 late (noisy) steps are ≈3× likelier than early ones and the mean t is
    ≈601: relations are decided early in denoising, at high noise, so that is where to train.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1) so that every probability stays positive")
    t = torch.arange(num_timesteps, dtype=torch.float64)
    weights = 1.0 - alpha * torch.cos(math.pi * t / num_timesteps)
    return weights / weights.sum()


def sample_timesteps(
    n: int, num_timesteps: int, generator: torch.Generator, probs: torch.Tensor | None = None
) -> torch.Tensor:
    """Draw ``n`` timesteps (int64, on the generator's device): from ``probs``, or uniform if None."""
    if probs is None:
        return torch.randint(0, num_timesteps, (n,), generator=generator, device=generator.device)
    return torch.multinomial(probs.to(generator.device), n, replacement=True, generator=generator)
