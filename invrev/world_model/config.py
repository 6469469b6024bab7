"""Pretraining's settings, in a module that imports nothing heavy: the command line takes its
options and their defaults from these fields, so the two cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 100_000
    minutes: float = 60.0  # stop (and save) after this much wall time, whichever comes first
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 200
    ema_decay: float = 0.999
    p_uncond: float = 0.1  # empty captions, for classifier-free guidance
    seed: int = 0
    checkpoint_every: int = 250
    workers: int = -1  # processes rendering batches; -1: none on a CPU, all cores but two on a GPU
    unnamed_share: float = 0.5  # fraction of scenes showing one of the five unnamed relations
    handle_share: float = 0.5  # fraction of those captioned by the relation's handle, not "A and B"
    # World language v2 (captions.CaptionMix): synonyms, converses, the swap word, no articles.
    synonym_share: float = 0.3
    converse_share: float = 0.25
    swap_share: float = 0.3
    bare_share: float = 0.25
    init_from: str = ""  # a model folder to continue from (warm start); "" builds a fresh model
    eval_every: int = 0  # sample the EMA model on validation pairs every so many steps (0: never)
    eval_guidance: float = 1.5
