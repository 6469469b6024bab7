"""Sampling images from prompts with explicit seeds, and saving them with a grid."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from invrev import embeddings
from invrev.models import Components


def encode(components: Components, prompts: Sequence[str]) -> torch.Tensor:
    tok = components.tokenizer
    ids = tok(list(prompts), padding="max_length", truncation=True, max_length=tok.model_max_length,
              return_tensors="pt").input_ids.to(components.device)
    return components.text_encoder(ids)[0]


@torch.no_grad()
def generate(
    components: Components,
    prompts: Sequence[str],
    seeds: Sequence[int],
    steps: int = 50,
    guidance: float = 7.5,
    scheduler: str | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> list[np.ndarray]:
    """One image per (prompt, seed): classifier-free guidance with the empty prompt, as SD 1.5.

    The initial noise of image i comes from ``torch.Generator().manual_seed(seeds[i])`` on the CPU,
    so an image depends on its own seed only, not on the batch it was drawn in or the device.
    Defaults are ReVersion's inference settings (50 steps, guidance 7.5). Returns uint8 [H, W, 3].
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    out = []
    chunks = range(0, len(prompts), batch_size)
    for start in tqdm(chunks, disable=not progress, desc="generating", unit="batch"):
        batch = slice(start, start + batch_size)
        out.extend(_sample(components, prompts[batch], seeds[batch], steps, guidance, scheduler))
    return out


def _sample(components, prompts, seeds, steps, guidance, scheduler_name):
    sched = components.inference_scheduler(scheduler_name)
    sched.set_timesteps(steps, device=components.device)
    unet = components.unet
    dtype = unet.dtype
    cond = encode(components, prompts).to(dtype)
    uncond = encode(components, [""] * len(prompts)).to(dtype)
    states = torch.cat([uncond, cond])
    size = unet.config.sample_size
    shape = (unet.config.in_channels, size, size)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    x = noise.to(components.device) * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        pred_uncond, pred_cond = unet(inp.to(dtype), t, states).sample.float().chunk(2)
        pred = pred_uncond + guidance * (pred_cond - pred_uncond)
        x = sched.step(pred, t, x).prev_sample
    images = components.codec.decode(x)
    return [((img.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8) for img in images]


def load_run_tokens(components: Components, run_folder: str | Path) -> dict[str, torch.Tensor]:
    """Put a run's learned tokens into the model's table (as diffusers' ``load_textual_inversion``)."""
    files = sorted((Path(run_folder) / "learned").glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{run_folder}/learned has no *.safetensors: the run did not finish training")
    vectors = embeddings.load_learned(files)
    embeddings.use_learned(components.tokenizer, components.text_encoder, vectors)
    return vectors


def ascii_name(text: str, index: int) -> str:
    """A file name that any file system and tool takes: "003_a_red_circle_r_a_blue_square.png"."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:80]
    return f"{index:03d}_{slug}.png"


def save_images(images: Sequence[np.ndarray], prompts: Sequence[str], folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image, prompt) in enumerate(zip(images, prompts)):
        path = folder / ascii_name(prompt, i)
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def grid(images: Sequence[np.ndarray], columns: int, scale: int = 1, pad: int = 2) -> Image.Image:
    """Images tiled row-major with a white gutter, each upscaled ``scale``× (nearest, to stay crisp)."""
    if not images:
        raise ValueError("no images to put in a grid")
    h, w = images[0].shape[:2]
    h, w = h * scale, w * scale
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i, image in enumerate(images):
        tile = Image.fromarray(image).resize((w, h), Image.NEAREST)
        canvas.paste(tile, (pad + (i % columns) * (w + pad), pad + (i // columns) * (h + pad)))
    return canvas
