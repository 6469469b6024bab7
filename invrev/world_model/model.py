"""The relation world's text-to-image model: SD 1.5's shape at 32 px, trained from scratch.

Same classes as SD 1.5 (CLIPTokenizer, causal CLIPTextModel, UNet2DConditionModel, a diffusers
scheduler), in pixel space: 32×32×3 images are folded 2×2 into 16×16×12 (``PixelCodec``), which
cut a step 20× against running the UNet at 32×32 in an earlier measurement (issue 5). The UNet
also gets the pooled text in its time embedding (``addition_embed_type="text"``), which helps a
small model bind roles ("A above B" against "B above A"). v-prediction with a cosine schedule;
DDIM with clipping for sampling, as pixel space needs thresholding.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from invrev.tokenizer import build_tokenizer
from invrev.words import load_words
from invrev.world import scene


@dataclass(frozen=True)
class WorldModelConfig:
    """Sizes chosen so one inversion (150 steps × 8 samples) takes well under a minute on 2 CPU cores (35 s measured)."""

    image_size: int = 32
    fold: int = 2
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    max_tokens: int = 24  # the longest caption ("a blue square <inv> <r> a red circle", templates) is 13
    unet_channels: tuple[int, ...] = (64, 128, 192)
    layers_per_block: int = 1
    head_dim: int = 32


def vocabulary() -> list[str]:
    """Every word the world's captions use, the project's word lists, and the initial words."""
    words = {"a", "and", "reverse", scene.SWAP_WORD}
    for entity in scene.ENTITIES:
        words.update(entity.text.split())
    for relation in scene.ALL_RELATIONS.values():
        words.update(relation.words.split())
        words.update((relation.inverse_words or "").split())
        words.update((relation.handle or "").split())
        for phrase in relation.synonyms + relation.converses:
            words.update(phrase.split())
    for kind in ("prepositions", "verbs", "stopwords"):
        words.update(load_words(kind))
    return sorted(words)


def build(folder: str | Path, config: WorldModelConfig = WorldModelConfig(), seed: int = 0):
    """Fresh, randomly initialised components (tokenizer saved under ``folder/tokenizer``)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(vocabulary(), Path(folder) / "tokenizer", model_max_length=config.max_tokens)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_width, intermediate_size=4 * config.text_width,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
        max_position_embeddings=config.max_tokens, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    channels = 3 * config.fold ** 2
    n = len(config.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=config.image_size // config.fold,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=config.unet_channels,
        layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        cross_attention_dim=config.text_width,
        attention_head_dim=config.head_dim,
        norm_num_groups=32,
        addition_embed_type="text",
        addition_embed_type_num_heads=config.text_heads,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
        clip_sample=True, clip_sample_range=1.0, set_alpha_to_one=True, steps_offset=0,
    )
    return tokenizer, text_encoder, unet, scheduler


def save(folder: str | Path, tokenizer, text_encoder, unet, scheduler, config: WorldModelConfig, provenance: dict) -> Path:
    """``save_pretrained`` each component (diffusers layout, fp16) and ``invrev.json`` (codec, provenance)."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder / "tokenizer")
    # fp16 on disk halves the size (the repo keeps it); the loader reads it back as fp32.
    # Shards of at most 15 MB: files come back from a lent GPU machine at 16 MiB at most.
    text_encoder.half().save_pretrained(folder / "text_encoder", max_shard_size="15MB")
    unet.half().save_pretrained(folder / "unet", max_shard_size="15MB")
    scheduler.save_pretrained(folder / "scheduler")
    # diffusers records where a loaded model came from; a shipped model names no folder of a machine.
    unet_config = folder / "unet" / "config.json"
    unet_config.write_text(json.dumps({k: v for k, v in json.loads(unet_config.read_text()).items()
                                       if k != "_name_or_path"}, indent=2, sort_keys=True) + "\n")
    meta = {"latent": {"type": "pixel", "factor": config.fold}, "world_model": asdict(config), **provenance}
    (folder / "invrev.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return folder
