"""Pretraining the relation world's model on captioned renders, from scratch or from a model.

Runs unchanged on a CPU or a GPU (device from ``torch.cuda.is_available()``, bf16 autocast on
CUDA), with large batches, an EMA of the weights (what is shipped), atomic checkpoints, ``resume``,
and a wall-clock budget so a background run always ends with a saved model. ``init_from`` continues
from a shipped model instead (a warm start): its tokenizer is extended with any new words, every
existing token keeping its id, and the new rows start from "and". With ``eval_every`` the EMA
model is sampled on validation pairs every so many steps (``validate``), and the best so far by
that measure is kept in ``best_model/``.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from invrev import models, runs
from invrev.world import benchmark, captions, model, render, scene
from invrev.world.pretrain_config import PretrainConfig

VALIDATION_STEPS = 25  # sampler steps of the validation during pretraining (with the training scheduler)


def caption_mix(config: PretrainConfig) -> captions.CaptionMix:
    return captions.CaptionMix(handle=config.handle_share, synonym=config.synonym_share,
                               converse=config.converse_share, swap=config.swap_share, bare=config.bare_share)


def sample_batch(rng: np.random.Generator, n: int, p_uncond: float, unnamed_share: float = 0.5,
                 mix: captions.CaptionMix = captions.CaptionMix()):
    """Renders and captions over all relations: ``unnamed_share`` of the scenes show an unnamed
    relation; ``mix`` says how each is captioned (:func:`captions.sample_caption`)."""
    train = benchmark.training_pairs()
    unnamed = sorted(r for r, info in scene.ALL_RELATIONS.items() if not info.named)
    named = sorted(r for r, info in scene.ALL_RELATIONS.items() if info.named)
    images, texts = [], []
    for _ in range(n):
        a, b = train[rng.integers(len(train))]
        names = unnamed if rng.random() < unnamed_share else named
        relation = names[rng.integers(len(names))]
        images.append(render.render(a, relation, b, rng))
        texts.append("" if rng.random() < p_uncond else captions.sample_caption(a, relation, b, rng, mix))
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
        c = self.config
        x, texts = sample_batch(np.random.default_rng([c.seed, step]), c.batch_size, c.p_uncond, c.unnamed_share,
                                caption_mix(c))
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
    if config.init_from:
        # A resume keeps the tokenizer its checkpoint was made with (the word lists may have grown since).
        kept = folder / "tokenizer" if resume and (folder / "checkpoint.pt").is_file() else None
        tokenizer, text_encoder, unet, scheduler, world = warm_start(config.init_from, folder, kept)
    else:
        tokenizer, text_encoder, unet, scheduler = model.build(folder / "model", world, config.seed)
    text_encoder.to(device).train()
    unet.to(device).train()
    params = list(text_encoder.parameters()) + list(unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay,
                                  fused=device.type == "cuda")
    ema = [p.detach().clone() for p in params]
    torch_gen = torch.Generator().manual_seed(config.seed)
    step, seconds, best = 0, 0.0, -1.0
    ckpt = folder / "checkpoint.pt"
    if resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        text_encoder.load_state_dict(state["text_encoder"])
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        ema = [e.to(device) for e in state["ema"]]
        torch_gen.set_state(state["torch_rng"])
        step, seconds, best = state["step"], state["seconds"], state.get("best", -1.0)
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
        if config.eval_every and step % config.eval_every == 0:  # before the checkpoint, which keeps ``best``
            best = _validate_and_keep(folder, tokenizer, text_encoder, unet, scheduler, params, ema, world, config,
                                      step, seconds, device, best, bar)
        if step % config.checkpoint_every == 0:
            log.flush()
            runs.atomic_torch_save(ckpt, {
                "text_encoder": text_encoder.state_dict(), "unet": unet.state_dict(),
                "optimizer": optimizer.state_dict(), "ema": ema,
                "torch_rng": torch_gen.get_state(), "step": step, "seconds": seconds, "best": best,
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


def _ema_copies(text_encoder, unet, ema):
    """Eval-mode copies of the two modules holding the EMA weights."""
    text_encoder, unet = copy.deepcopy(text_encoder).eval(), copy.deepcopy(unet).eval()
    with torch.no_grad():
        for p, e in zip(list(text_encoder.parameters()) + list(unet.parameters()), ema):
            p.copy_(e)
    return text_encoder, unet


def export(folder, tokenizer, text_encoder, unet, scheduler, params, ema, world, config, step, seconds, device,
           name: str = "model", extra: dict | None = None) -> Path:
    """Save the EMA weights with ``save_pretrained`` into ``folder/name``."""
    text_encoder, unet = _ema_copies(text_encoder, unet, ema)
    out = folder / name
    if config.init_from:  # words the lists gained during a run: single tokens, rows from "and"
        tokenizer = grow_vocabulary(tokenizer, text_encoder, out / "tokenizer")
    provenance = {
        "pretrain": asdict(config), "steps": step, "wall_seconds": round(seconds, 1),
        "hardware": runs.device_name(device),
        "command": f"invrev world pretrain --out {folder.name} --minutes {config.minutes} --batch-size {config.batch_size}"
                   + (f" --init-from {config.init_from}" if config.init_from else ""),
        **(extra or {}),
    }
    if config.init_from:
        provenance["warm_start"] = _provenance_of(config.init_from)
    provenance.update(_sampling_for(config, provenance.get("warm_start", {}), type(scheduler).__name__))
    model.save(out, tokenizer, text_encoder.cpu(), unet.cpu(), scheduler, world, provenance)
    (folder / f"{name}_summary.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out


def _sampling_for(config: PretrainConfig, source: dict, scheduler: str) -> dict:
    """The sampling settings an exported model recommends until a sweep chooses its own: a warm
    start's source's (chosen on validation pairs for that model), else those its validation sampled
    at. Without them it would be sampled as SD 1.5 (guidance 7.5), where the world model collapses."""
    sweep = "choose this model's own with `invrev world sweep --write-model`"
    if "sampling" in source:
        return {"sampling": source["sampling"], "sampling_source": f"inherited from {config.init_from}; {sweep}"}
    return {"sampling": {"guidance": config.eval_guidance, "steps": VALIDATION_STEPS, "scheduler": scheduler,
                         "guidance_rescale": 0.0},
            "sampling_source": f"the settings of the validation during pretraining; {sweep}"}


def _provenance_of(source: str) -> dict:
    """What the model a warm start continued from says of itself (its ``invrev.json``, less sizes)."""
    meta = Path(models.resolve_model(source)) / "invrev.json"
    info = json.loads(meta.read_text()) if meta.is_file() else {}
    return {k: v for k, v in info.items() if k not in ("latent", "world_model")}


def warm_start(source: str, out: Path, tokenizer_folder: Path | None = None):
    """A shipped model's components, ready to train on: fp32, the tokenizer extended with the words
    of :func:`model.vocabulary` it lacks (old ids unchanged; or the tokenizer in ``tokenizer_folder``,
    on a resume), new embedding rows copied from "and"."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    src = models.resolve_model(source)
    meta = json.loads((Path(src) / "invrev.json").read_text())
    world = model.WorldModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["world_model"].items()})
    if tokenizer_folder is not None:
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder)
    else:
        tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", dtype=torch.float32)
    tokenizer = grow_vocabulary(tokenizer, text_encoder, out / "tokenizer", words=None if tokenizer_folder is None else [])
    unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", torch_dtype=torch.float32)
    scheduler = DDIMScheduler.from_pretrained(src, subfolder="scheduler")
    return tokenizer, text_encoder, unet, scheduler, world


def grow_vocabulary(tokenizer, text_encoder, folder: Path, words: list[str] | None = None):
    """``tokenizer`` extended with ``words`` (default: :func:`model.vocabulary`) it lacks, saved to
    ``folder``, every old id kept; the text encoder gets a row per new token, copied from "and"."""
    from invrev.tokenizer import extend_tokenizer

    tokenizer, _ = extend_tokenizer(tokenizer, model.vocabulary() if words is None else words, folder)
    rows = text_encoder.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            table = text_encoder.get_input_embeddings().weight
            table[rows:] = table[tokenizer.convert_tokens_to_ids("and</w>")]
    return tokenizer


def _validate_and_keep(folder, tokenizer, text_encoder, unet, scheduler, params, ema, world, config, step, seconds,
                       device, best, bar) -> float:
    """Sample the EMA model on validation pairs, log it, and keep it in ``best_model/`` if it is the best yet."""
    te, un = _ema_copies(text_encoder, unet, ema)
    rows = validate(tokenizer, te, un, scheduler, world, guidance=config.eval_guidance)
    score = validation_score(rows)
    log = folder / "eval_log.csv"
    new = not log.is_file()
    with open(log, "a") as f:
        if new:
            f.write("step,seconds,relation,prompt,n,entity,relation_acc,reversed\n")
        for r in rows:
            f.write(f"{step},{seconds:.0f},{r['relation']},{r['prompt']},{r['n']},{r['entity']:.3f},"
                    f"{r['relation_acc']:.3f},{r['reversed']:.3f}\n")
    summary = " ".join(f"{r['relation'][:6]}{'/swap' if r['prompt'] == 'swap' else ''}:{r['relation_acc']:.2f}" for r in rows if r["prompt"] != "words" or scene.RELATIONS[r["relation"]].named)
    bar.write(f"step {step}: validation score {score:.3f} (best {max(best, score):.3f}) {summary}")
    if score > best:
        export(folder, tokenizer, text_encoder, unet, scheduler, params, ema, world, config, step, seconds, device,
               name="best_model", extra={"validation_score": round(score, 4), "validation": rows})
        best = score
    return best


def validate(tokenizer, text_encoder, unet, scheduler, world, pairs: int = 6, guidance: float = 1.5,
             steps: int = VALIDATION_STEPS, seed: int = 12345) -> list[dict]:
    """Per benchmark relation, images from validation pairs, scored: named relations in words,
    unnamed ones by their handle and in words, and each in the swap form "B ob <words or handle> A". ``reversed`` is how often an image passes as the
    caption with A and B swapped (a direction check: near 0 for a model that learned direction)."""
    from invrev import generate
    from invrev.world import captions, scorer

    components = models.Components(tokenizer, text_encoder, unet, scheduler,
                                   {**scheduler.config, "_class_name": type(scheduler).__name__},
                                   models.PixelCodec(world.fold), "pretraining", "main")
    jobs = []
    for relation, info in sorted(scene.RELATIONS.items()):
        for a, b in benchmark.validation_pairs(relation, pairs):
            jobs.append((relation, "words", a, b, captions.relation_text(a, relation, b)))
            if not info.named:
                jobs.append((relation, "handle", a, b, captions.caption(a, relation, b, handle=True)))
            # The role swap (world language v2): "B ob <words> A", scored as "A <words> B".
            swapped_words = info.words if info.named else info.handle
            jobs.append((relation, "swap", a, b, captions.phrase(a, swapped_words, b, swap=True)))
    images = generate.generate(components, [j[4] for j in jobs], [seed + i for i in range(len(jobs))], steps, guidance,
                               batch_size=64)
    rows = {}
    for (relation, prompt, a, b, _), image in zip(jobs, images):
        s = scorer.score(image, a, relation, b)
        swapped = scorer.score(image, b, relation, a)
        row = rows.setdefault((relation, prompt), {"relation": relation, "prompt": prompt, "n": 0, "entity": 0.0,
                                                   "relation_acc": 0.0, "reversed": 0.0})
        row["n"] += 1
        row["entity"] += s.entity
        row["relation_acc"] += s.relation
        row["reversed"] += swapped.relation and not scene.ALL_RELATIONS[relation].symmetric
    for row in rows.values():
        for key in ("entity", "relation_acc", "reversed"):
            row[key] /= row["n"]
    return list(rows.values())


def validation_score(rows: list[dict]) -> float:
    """One number to keep checkpoints by: mean over the ten relations of (entity + relation) / 2,
    named relations in words and unnamed ones by handle, and each in the swap form, less the
    named ones' reversed rate."""
    kept = [r for r in rows if r["prompt"] == "swap" or (r["prompt"] == "words") == scene.RELATIONS[r["relation"]].named]
    return sum((r["entity"] + r["relation_acc"]) / 2 - r["reversed"] * scene.RELATIONS[r["relation"]].named
               for r in kept) / len(kept)
