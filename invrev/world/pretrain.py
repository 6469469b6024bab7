"""Pretraining the relation world's model from scratch on captioned renders.

Runs unchanged on a CPU or a GPU (device from ``torch.cuda.is_available()``, bf16 autocast on
CUDA), with large batches, an EMA of the weights (what is shipped), atomic checkpoints, ``resume``,
and a wall-clock budget so a background run always ends with a saved model.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from invrev import runs
from invrev.world import benchmark, model, render, scene


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 100_000
    minutes: float = 60.0  # stop (and save) after this much wall time, whichever comes first
    batch_size: int = 128
    learning_rate: float = 5e-4
    weight_decay: float = 1e-2
    warmup: int = 200
    ema_decay: float = 0.999
    p_uncond: float = 0.1  # empty captions, for classifier-free guidance
    seed: int = 0
    checkpoint_every: int = 250
    workers: int = -1  # processes rendering batches; -1: none on a CPU, all cores but two on a GPU


def sample_batch(rng: np.random.Generator, n: int, p_uncond: float):
    """Renders and captions over all relations (named in words, unnamed under vague captions)."""
    train = benchmark.training_pairs()
    names = sorted(scene.ALL_RELATIONS)
    images, texts = [], []
    for _ in range(n):
        a, b = train[rng.integers(len(train))]
        relation = names[rng.integers(len(names))]
        images.append(render.render(a, relation, b, rng))
        texts.append("" if rng.random() < p_uncond else model.caption_for(a, relation, b, rng))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, texts


class Batches(torch.utils.data.Dataset):
    """Batch ``step`` of a run, rendered from its own generator seeded by ``(seed, step)``.

    Any worker process draws the same batch for a step, and a resume continues the same stream, so
    a run is reproducible whatever ``workers`` is (rendering is the CPU-bound part on a GPU).
    """

    def __init__(self, config: PretrainConfig, world: model.WorldModelConfig, tokenizer):
        self.config, self.world, self.tokenizer = config, world, tokenizer

    def __len__(self) -> int:
        return self.config.steps

    def __getitem__(self, step: int):
        x, texts = sample_batch(np.random.default_rng([self.config.seed, step]), self.config.batch_size, self.config.p_uncond)
        ids = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.world.max_tokens,
                             return_tensors="pt").input_ids
        return F.pixel_unshuffle(x, self.world.fold), ids


def _loader(batches: Batches, start: int, device: torch.device) -> torch.utils.data.DataLoader:
    workers = batches.config.workers
    if workers < 0:
        workers = max(0, min(14, (os.cpu_count() or 1) - 2)) if device.type == "cuda" else 0
    return torch.utils.data.DataLoader(batches, batch_size=None, sampler=range(start, batches.config.steps),
                                       num_workers=workers, pin_memory=device.type == "cuda",
                                       prefetch_factor=4 if workers else None)


def pretrain(folder: str | Path, config: PretrainConfig = PretrainConfig(),
             world: model.WorldModelConfig = model.WorldModelConfig(), resume: bool = True, progress: bool = True) -> Path:
    """Train into ``folder/checkpoint.pt``; write the EMA model to ``folder/model``. Returns that path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, text_encoder, unet, scheduler = model.build(folder / "model", world, config.seed)
    text_encoder.to(device).train()
    unet.to(device).train()
    params = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    ema = [p.detach().clone() for p in params]
    torch_gen = torch.Generator().manual_seed(config.seed)
    step, seconds = 0, 0.0
    ckpt = folder / "checkpoint.pt"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        text_encoder.load_state_dict(state["text_encoder"])
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        ema = [e.to(device) for e in state["ema"]]
        torch_gen.set_state(state["torch_rng"])
        step, seconds = state["step"], state["seconds"]
    alphas = scheduler.alphas_cumprod.to(device)
    log = _open_log(folder / "pretrain_log.csv", step)
    budget = config.minutes * 60
    start = time.perf_counter() - seconds
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="pretraining", unit="step")
    for x, ids in _loader(Batches(config, world, tokenizer), step, device):
        if time.perf_counter() - start >= budget:
            break
        x, ids = x.to(device, non_blocking=True), ids.to(device, non_blocking=True)
        t = torch.randint(0, len(alphas), (x.shape[0],), generator=torch_gen).to(device)
        noise = torch.randn(x.shape, generator=torch_gen).to(device)
        a = alphas[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - alphas[t]).sqrt().view(-1, 1, 1, 1)
        noisy, target = a * x + s * noise, a * noise - s * x  # v-prediction
        lr = config.learning_rate * min(1.0, (step + 1) / config.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            states = text_encoder(ids)[0]
            pred = unet(noisy, t, states).sample
        loss = F.mse_loss(pred.float(), target)
        if not torch.isfinite(loss):
            raise RuntimeError(f"pretraining loss became {loss.item()} at step {step + 1}; resume from the last checkpoint with a lower learning_rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        seconds = time.perf_counter() - start
        log.write(f"{step},{loss.item():.5f},{seconds:.1f}\n")
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % config.checkpoint_every == 0:
            log.flush()
            runs.atomic_torch_save(ckpt, {
                "text_encoder": text_encoder.state_dict(), "unet": unet.state_dict(),
                "optimizer": optimizer.state_dict(), "ema": ema,
                "torch_rng": torch_gen.get_state(), "step": step, "seconds": seconds,
            })
    bar.close()
    log.close()
    return export(folder, tokenizer, text_encoder, unet, scheduler, params, ema, world, config, step, seconds, device)


def _open_log(path: Path, step: int):
    """The loss log, continued at ``step``: rows past the checkpoint (or all, on a fresh start) dropped."""
    kept = []
    if step > 0 and path.is_file():
        kept = [line for line in path.read_text().splitlines()[1:] if int(line.split(",")[0]) <= step]
    log = open(path, "w")
    log.write("\n".join(["step,loss,seconds", *kept]) + "\n")
    return log


def export(folder, tokenizer, text_encoder, unet, scheduler, params, ema, world, config, step, seconds, device) -> Path:
    """Save the EMA weights with ``save_pretrained`` (fp32: the whole model is a few MB)."""
    text_encoder, unet = copy.deepcopy(text_encoder).eval(), copy.deepcopy(unet).eval()
    with torch.no_grad():
        for p, e in zip(list(text_encoder.parameters()) + list(unet.parameters()), ema):
            p.copy_(e)
    out = folder / "model"
    provenance = {
        "pretrain": asdict(config), "steps": step, "wall_seconds": round(seconds, 1),
        "hardware": runs.device_name(device),
        "command": f"invrev world pretrain --out {folder} --minutes {config.minutes} --batch-size {config.batch_size}",
    }
    model.save(out, tokenizer, text_encoder.cpu(), unet.cpu(), scheduler, world, provenance)
    (folder / "pretrain_summary.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out
