"""Tiny SD-shaped pipelines for tests and examples, built offline from configs with fixed seeds.

The layout and the classes are those of SD 1.5 (CLIP tokenizer and text encoder, UNet2DCondition,
AutoencoderKL, PNDM scheduler config), only a thousand times smaller, saved with ``save_pretrained``
and read back by :func:`invrev.models.load_components`, the loader that reads SD 1.5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from invrev.tokenizer import build_tokenizer

TINY_WORDS = "a the cat dog bird stone rock wall box tree and reverse red blue green".split()


def tiny_vocabulary() -> list[str]:
    """The tiny model's words: a few entities plus the project's word lists (for the steer losses)."""
    from invrev.words import load_words

    lists = [w for kind in ("prepositions", "verbs", "stopwords") for w in load_words(kind)]
    return sorted(set(TINY_WORDS) | set(lists))


def build_tiny_pipeline(folder: str | Path, seed: int = 0, hidden: int = 32) -> Path:
    """Build and ``save_pretrained`` a tiny SD-shaped pipeline (16 px images, 8 px latents)."""
    folder = Path(folder)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(tiny_vocabulary(), folder / "tokenizer")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=16,
    )
    # SD 1.5's shipped scheduler config (PNDM, scaled-linear betas), so training builds DDPM from it.
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
        steps_offset=1, set_alpha_to_one=False, num_train_timesteps=1000,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def write_tiny_exemplars(folder: str | Path, n: int = 4, size: int = 16, seed: int = 0) -> Path:
    """A relation folder in the ReVersion layout: ``n`` coloured-block images and their templates."""
    from invrev.data import write_exemplars

    rng = np.random.default_rng(seed)
    entities = ["cat", "dog", "bird", "stone", "box", "tree"]
    images, templates = [], []
    for i in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        img[: size // 2] = rng.integers(0, 255, 3)
        img[size // 2 :] = rng.integers(0, 255, 3)
        a, b = entities[i % len(entities)], entities[(i + 1) % len(entities)]
        images.append(img)
        templates.append([f"{a} {{}} {b}", f"a {a} {{}} a {b}"])
    return write_exemplars(Path(folder), images, templates)
