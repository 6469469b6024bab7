"""Sampling images from prompts with explicit seeds, and saving them with a grid."""

from __future__ import annotations

import json
import math
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
    steps: int | None = None,
    guidance: float | None = None,
    scheduler: str | None = None,
    batch_size: int = 32,
    progress: bool = False,
    guidance_rescale: float | None = None,
) -> list[np.ndarray]:
    """One image per (prompt, seed): classifier-free guidance with the empty prompt, as SD 1.5.

    The initial noise of image i comes from ``torch.Generator().manual_seed(seeds[i])`` on the CPU,
    so an image depends on its own seed only, not on the batch it was drawn in or the device.
    ``steps``, ``guidance``, ``scheduler`` and ``guidance_rescale`` left None take the model's
    recommended settings (``components.sampling``: the world model's own, else ReVersion's 50 steps
    at guidance 7.5, the shipped scheduler, no rescale).
    Returns uint8 [H, W, 3].
    """
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds: give one seed per prompt")
    steps, guidance, scheduler = resolve_sampling(components, steps, guidance, scheduler)
    if steps < 1 or not math.isfinite(guidance):
        raise GenerateError(f"steps={steps}, guidance={guidance}: give at least 1 denoising step (--steps) and a finite guidance")
    rescale = components.sampling.get("guidance_rescale", 0.0) if guidance_rescale is None else guidance_rescale
    out = []
    chunks = range(0, len(prompts), batch_size)
    for start in tqdm(chunks, disable=not progress, desc="generating", unit="batch"):
        batch = slice(start, start + batch_size)
        out.extend(_sample(components, prompts[batch], seeds[batch], steps, guidance, scheduler, rescale))
    return out


def resolve_sampling(components: Components, steps: int | None = None, guidance: float | None = None,
                     scheduler: str | None = None) -> tuple[int, float, str | None]:
    """(steps, guidance, scheduler): what is given, else the model's recommendation."""
    own = components.sampling
    return (own["steps"] if steps is None else steps, own["guidance"] if guidance is None else guidance,
            own["scheduler"] if scheduler is None else scheduler)


def _sample(components, prompts, seeds, steps, guidance, scheduler_name, rescale=0.0):
    sched = components.inference_scheduler(scheduler_name)
    sched.set_timesteps(steps, device=components.device)
    unet = components.unet
    dtype = unet.dtype
    cond = encode(components, prompts).to(dtype)
    # At guidance 1 the guided prediction is the conditional one: half the UNet work, same images.
    guided = guidance != 1.0
    states = torch.cat([encode(components, [""] * len(prompts)).to(dtype), cond]) if guided else cond
    size = unet.config.sample_size
    shape = (unet.config.in_channels, size, size)
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    x = noise.to(components.device) * sched.init_noise_sigma
    for t in sched.timesteps:
        if not guided:
            x = sched.step(unet(sched.scale_model_input(x, t).to(dtype), t, states).sample.float(), t, x).prev_sample
            continue
        inp = sched.scale_model_input(torch.cat([x, x]), t)
        pred_uncond, pred_cond = unet(inp.to(dtype), t, states).sample.float().chunk(2)
        pred = pred_uncond + guidance * (pred_cond - pred_uncond)
        if rescale:  # Lin et al. 2024, Eq. 15-16: bring the guided prediction's spread back to the conditional one's
            dims = tuple(range(1, pred.ndim))
            fixed = pred * (pred_cond.std(dim=dims, keepdim=True) / pred.std(dim=dims, keepdim=True))
            pred = rescale * fixed + (1 - rescale) * pred
        x = sched.step(pred, t, x).prev_sample
    images = components.codec.decode(x)
    return [((img.permute(1, 2, 0).cpu().numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8) for img in images]


class GenerateError(ValueError):
    """A run folder, prompt or output folder that generation cannot use; the message names the fix."""


def read_run_tokens(run_folder: str | Path) -> dict[str, torch.Tensor]:
    """A finished run's learned tokens, read and checked before any model loads."""
    folder = Path(run_folder)
    if not (folder / "config.json").is_file():
        what = "no such folder" if not folder.exists() else "no config.json in it"
        raise GenerateError(f"--run {folder}: {what}; give a run folder that `invrev train` wrote "
                            f"(runs/<relation>/<variant>/seed<k>)")
    config = json.loads((folder / "config.json").read_text())
    if config.get("train") is False:
        raise GenerateError(f"--run {folder} is an `sd` run, which learns no token: drop --run and write the "
                            f"relation in words in the prompt")
    # The relation's own token first (messages suggest it), then any others.
    first = embeddings.file_name(config.get("placeholder", "<r>"))
    files = sorted((folder / "learned").glob("*.safetensors"), key=lambda p: (p.name != first, p.name))
    if not files:
        raise GenerateError(f"--run {folder} did not finish training (no learned/*.safetensors): continue it with "
                            f"`invrev train ... --resume`")
    return embeddings.load_learned(files)


def load_run_tokens(components: Components, run_folder: str | Path) -> dict[str, torch.Tensor]:
    """Put a run's learned tokens into the model's table (as diffusers' ``load_textual_inversion``)."""
    vectors = read_run_tokens(run_folder)
    try:
        embeddings.use_learned(components.tokenizer, components.text_encoder, vectors)
    except embeddings.TokenError as err:
        raise embeddings.TokenError(f"{Path(run_folder) / 'learned'}: {err}") from None
    return vectors


def check_prompts(prompts: Sequence[str], tokens: Sequence[str]) -> None:
    """Refuse a prompt without any learned token: it would run silently as if nothing were learned."""
    for prompt in prompts:
        if tokens and not any(t in prompt.lower() for t in tokens):
            first = next(iter(tokens))
            raise GenerateError(f"prompt {prompt!r} has none of the run's learned tokens ({', '.join(tokens)}): "
                                f"write {first} where the relation goes, e.g. 'a cat {first} a dog', or drop --run "
                                f"to prompt in words")


def ascii_name(text: str, index: int, seed: int) -> str:
    """A file name that any file system and tool takes: "003_a_red_circle_r_a_blue_square_seed7.png"."""
    slug = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:80]
    return f"{index:03d}_{slug}_seed{seed}.png"


def image_paths(prompts: Sequence[str], seeds: Sequence[int], folder: str | Path) -> list[Path]:
    """Where :func:`save_images` writes each (prompt, seed) image."""
    return [Path(folder) / ascii_name(p, i, s) for i, (p, s) in enumerate(zip(prompts, seeds))]


def check_free(paths: Sequence[Path]) -> None:
    """Refuse to overwrite images an earlier call made (another seed, run or model may have made them)."""
    taken = [p for p in paths if p.exists()]
    if taken:
        raise GenerateError(f"{taken[0].parent} already holds {', '.join(p.name for p in taken[:3])}"
                            f"{f' and {len(taken) - 3} more' if len(taken) > 3 else ''} from an earlier call: "
                            f"choose another --out, or pass --overwrite to replace them")


def save_images(images: Sequence[np.ndarray], paths: Sequence[Path]) -> list[Path]:
    from invrev.runs import atomic_write

    for image, path in zip(images, paths):
        atomic_write(path, lambda handle, im=image: Image.fromarray(im).save(handle, format="PNG"))
    return list(paths)


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
        canvas.paste(tile, grid_box(i, columns, (w, h), pad)[:2])
    return canvas


def grid_box(index: int, columns: int, size: tuple[int, int], pad: int = 2) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of image ``index`` of a :func:`grid` of ``size`` = (w, h) images."""
    w, h = size
    x, y = pad + (index % columns) * (w + pad), pad + (index // columns) * (h + pad)
    return x, y, x + w, y + h
