"""The losses of Inv-ReVersion, as pure tensor functions (device and dtype from the inputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def steer_loss(
    r: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.07,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """ReVersion's relation-steering contrastive loss (paper Eq. 3), a multi-positive InfoNCE.

    L = −log( Σ_p exp(cos(r,p)/γ) / Σ_{x∈P∪N} exp(cos(r,x)/γ) ) on raw token-embedding vectors:
    ``r`` is [D], ``positives`` [P, D], ``negatives`` [N, D]. Cosine similarity, as ReVersion's
    code does (the paper writes Rᵀ·P; the vectors are normalised there). Computed with logsumexp so
    γ = 0.07 cannot overflow. Leading batch dimensions ([B, P, D], [B, N, D]) give one loss per
    example; ``negative_mask`` [B, N] (True = use) lets examples have different numbers of negatives.
    """
    pos = F.cosine_similarity(r, positives, dim=-1) / temperature
    neg = F.cosine_similarity(r, negatives, dim=-1) / temperature
    if negative_mask is not None:
        neg = neg.masked_fill(~negative_mask, float("-inf"))
    return torch.logsumexp(torch.cat([pos, neg], dim=-1), -1) - torch.logsumexp(pos, -1)


def pos_weighted_control_loss(
    r: torch.Tensor,
    verbs: torch.Tensor,
    prepositions: torch.Tensor,
    negatives: torch.Tensor,
    lambda_verb: float = 0.5,
    temperature: float = 0.07,
    negative_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paper Eqs. 4–7: λ_verb·InfoNCE(r; verbs, N) + λ_prep·InfoNCE(r; prepositions, N), λ_prep = 1 − λ_verb.

    Eq. 4 writes −(λ_v L_v + λ_p L_p) with L the log-ratio; each steer_loss is already −log, so the
    sum below is the same quantity.
    """
    verb_term = steer_loss(r, verbs, negatives, temperature, negative_mask)
    prep_term = steer_loss(r, prepositions, negatives, temperature, negative_mask)
    return lambda_verb * verb_term + (1.0 - lambda_verb) * prep_term


def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict, following ``scheduler.config.prediction_type``."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if kind == "sample":
        return latents
    raise ValueError(f"scheduler prediction_type {kind!r} is not supported (epsilon, v_prediction, sample)")


def denoising_loss(prediction: torch.Tensor, target: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Paper Eq. 1: ‖target − ε_θ(x_t, t, τ(c))‖², averaged in fp32 (per sample if asked)."""
    err = (prediction.float() - target.float()) ** 2
    return err.flatten(1).mean(1) if per_sample else err.mean()
