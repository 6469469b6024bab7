"""The training-step benchmark's models, data and device helpers: SD 1.5-shaped components with
random weights built on the device, synthetic exemplars, synchronisation, peak memory and the
measured matrix peak. Used by ``train_step.py``."""

from __future__ import annotations

import gc
import resource
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel

from invrev import words
from invrev.data import write_exemplars
from invrev.models import Components, VaeCodec
from invrev.testing import tiny_vocabulary
from invrev.tokenizer import build_tokenizer

# Every fp32 <-> bf16 cast of a random-weight model otherwise prints a from_pretrained hint.
diffusers_logging.get_logger("diffusers.models.modeling_utils").setLevel(diffusers_logging.ERROR)

_UNET_BLOCKS = {
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
# SD 1.5's configs (stable-diffusion-v1-5 unet/, text_encoder/, vae/); "tiny" keeps every block
# type and shrinks widths, depth and images so the whole script runs on a CPU in seconds.
SCALES = {
    "sd15": {
        "unet": dict(sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                     cross_attention_dim=768, attention_head_dim=8, **_UNET_BLOCKS),
        "text": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu"),
        "vae": dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=512,
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4),
        "resolution": 512,
        "hf_sigma": 2.0,  # the recipe's default
    },
    "tiny": {
        "unet": dict(sample_size=8, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                     cross_attention_dim=32, attention_head_dim=8, **_UNET_BLOCKS),
        "text": dict(vocab_size=None, hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu"),
        "vae": dict(block_out_channels=(32, 32), layers_per_block=1, sample_size=16,
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2),
        "resolution": 16,
        "hf_sigma": 0.8,  # as the tiny tests use
    },
}

def build_components(scale: str, workdir: Path, device: torch.device) -> Components:
    """SD 1.5-shaped components with random weights, built directly on ``device``, frozen, fp32."""
    spec = SCALES[scale]
    bpe = words.find_clip_bpe() if scale == "sd15" else None
    if bpe:
        tokenizer = words.clip_tokenizer_from_bpe(bpe, workdir / "tokenizer")
    else:  # ids stay below the table size, so a smaller vocabulary costs the same per step
        tokenizer = build_tokenizer(tiny_vocabulary(), workdir / "tokenizer")
    text_config = {**spec["text"], "vocab_size": spec["text"]["vocab_size"] or len(tokenizer)}
    torch.manual_seed(0)
    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            **text_config, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, **spec["unet"])
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, scaling_factor=0.18215, **spec["vae"])
    for module in (text_encoder, unet, vae):
        module.requires_grad_(False).eval()
    # SD 1.5's shipped scheduler; training builds DDPM from it, as invrev.models does.
    pndm = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                         steps_offset=1, set_alpha_to_one=False, num_train_timesteps=1000)
    scheduler_config = {"_class_name": "PNDMScheduler", **pndm.config}
    return Components(tokenizer, text_encoder, unet, DDPMScheduler.from_config(scheduler_config), scheduler_config,
                      VaeCodec(vae), model_id=f"benchmark/random-{scale}", revision="random")


def write_data(folder: Path, resolution: int, n: int = 4) -> Path:
    """``n`` noise images at the run resolution and two templates each, in the ReVersion layout."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8) for _ in range(n)]
    pairs = [("cat", "box"), ("dog", "tree"), ("bird", "stone"), ("cat", "tree")]
    templates = [[f"a {a} {{}} a {b}", f"{a} {{}} {b}"] for a, b in (pairs * n)[:n]]
    return write_exemplars(folder, images, templates)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak allocated GPU memory since the last reset; on the CPU the process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def measure_peak(device: torch.device) -> tuple[float, str]:
    """Measured matrix peak in FLOP/s: bf16 8192^3 matmul on CUDA, fp32 1024^3 on the CPU."""
    cuda = device.type == "cuda"
    n, dtype, reps = (8192, torch.bfloat16, 20) if cuda else (1024, torch.float32, 5)
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    out = torch.empty_like(a)
    for _ in range(3):
        torch.mm(a, b, out=out)
    sync(device)
    tick = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b, out=out)
    sync(device)
    label = f"bf16 matmul {n}^3" if cuda else f"fp32 matmul {n}^3, {torch.get_num_threads()} thread(s) (no bf16 peak on CPU)"
    return 2 * n**3 * reps / (time.perf_counter() - tick), label
