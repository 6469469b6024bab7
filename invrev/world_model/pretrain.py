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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from invrev import measure, models, runs
from invrev.tokenizer import extend_tokenizer
from invrev.world import benchmark, captions, render, scene
from invrev.world_model import model
from invrev.world_model.config import PretrainConfig

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


@dataclass
class Pretraining:
    """A pretraining run's state, like the trainer's ``Run``: the modules being trained, their EMA
    (what is exported), the optimiser, the noise generator and the counters a checkpoint keeps."""

    folder: Path
    config: PretrainConfig
    world: model.WorldModelConfig
    tokenizer: Any
    text_encoder: Any
    unet: Any
    scheduler: Any
    device: torch.device
    step: int = 0
    seconds: float = 0.0
    best: float = -1.0
    params: list = field(default_factory=list)
    ema: list = field(default_factory=list)
    optimizer: Any = None
    torch_gen: Any = None

    def __post_init__(self):
        self.text_encoder.to(self.device).train()
        self.unet.to(self.device).train()
        self.params = list(self.text_encoder.parameters()) + list(self.unet.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=self.config.learning_rate,
                                           weight_decay=self.config.weight_decay, fused=self.device.type == "cuda")
        self.ema = [p.detach().clone() for p in self.params]
        self.torch_gen = torch.Generator().manual_seed(self.config.seed)

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / "checkpoint.pt"

    def resume(self) -> None:
        """Continue from ``checkpoint.pt`` (weights, optimiser, EMA, noise stream, counters)."""
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        self.text_encoder.load_state_dict(state["text_encoder"])
        self.unet.load_state_dict(state["unet"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.ema = [e.to(self.device) for e in state["ema"]]
        self.torch_gen.set_state(state["torch_rng"])
        self.step, self.seconds, self.best = state["step"], state["seconds"], state.get("best", -1.0)

    def save_checkpoint(self) -> None:
        runs.atomic_torch_save(self.checkpoint_path, {
            "text_encoder": self.text_encoder.state_dict(), "unet": self.unet.state_dict(),
            "optimizer": self.optimizer.state_dict(), "ema": self.ema, "torch_rng": self.torch_gen.get_state(),
            "step": self.step, "seconds": self.seconds, "best": self.best,
        })

    def ema_modules(self):
        """Eval-mode copies of the text encoder and UNet holding the EMA weights."""
        text_encoder, unet = copy.deepcopy(self.text_encoder).eval(), copy.deepcopy(self.unet).eval()
        with torch.no_grad():
            for p, e in zip(list(text_encoder.parameters()) + list(unet.parameters()), self.ema):
                p.copy_(e)
        return text_encoder, unet

    def train_step(self, x: torch.Tensor, ids: torch.Tensor, alphas: torch.Tensor) -> float:
        """One optimiser step on a batch (v-prediction, warm-up, clipping), then the EMA update."""
        config = self.config
        x, ids = x.to(self.device, non_blocking=True), ids.to(self.device, non_blocking=True)
        t = torch.randint(0, len(alphas), (x.shape[0],), generator=self.torch_gen).to(self.device)
        noise = torch.randn(x.shape, generator=self.torch_gen).to(self.device)
        a = alphas[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - alphas[t]).sqrt().view(-1, 1, 1, 1)
        noisy, target = a * x + s * noise, a * noise - s * x  # v-prediction
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate * min(1.0, (self.step + 1) / config.warmup)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            pred = self.unet(noisy, t, self.text_encoder(ids)[0]).sample
        loss = F.mse_loss(pred.float(), target)
        if not torch.isfinite(loss):
            raise RuntimeError(f"pretraining loss became {loss.item()} at step {self.step + 1}; "
                               "resume from the last checkpoint with a lower learning_rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.step += 1
        decay = min(config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1 - decay)
        return loss.item()

    def export(self, name: str = "model", extra: dict | None = None) -> Path:
        """Save the EMA weights with ``save_pretrained`` into ``folder/name``."""
        config = self.config
        text_encoder, unet = self.ema_modules()
        out = self.folder / name
        tokenizer = self.tokenizer
        if config.init_from:  # words the lists gained during a run: single tokens, rows from "and"
            tokenizer = grow_vocabulary(tokenizer, text_encoder, out / "tokenizer")
        provenance = {
            "pretrain": asdict(config), "steps": self.step, "wall_seconds": round(self.seconds, 1),
            "hardware": runs.device_name(self.device),
            "command": f"invrev world pretrain --out {self.folder.name} --minutes {config.minutes} --batch-size {config.batch_size}"
                       + (f" --init-from {config.init_from}" if config.init_from else ""),
            **(extra or {}),
        }
        if config.init_from:
            provenance["warm_start"] = _provenance_of(config.init_from)
        provenance.update(_sampling_for(config, provenance.get("warm_start", {}), type(self.scheduler).__name__))
        model.save(out, tokenizer, text_encoder.cpu(), unet.cpu(), self.scheduler, self.world, provenance)
        (self.folder / f"{name}_summary.json").write_text(json.dumps(provenance, indent=2) + "\n")
        return out

    def validate_and_keep(self, bar) -> None:
        """Sample the EMA model on validation pairs, log it, and keep it in ``best_model/`` if it is the best yet."""
        text_encoder, unet = self.ema_modules()
        rows = validate(self.tokenizer, text_encoder, unet, self.scheduler, self.world, guidance=self.config.eval_guidance)
        score = validation_score(rows)
        log = self.folder / "eval_log.csv"
        new = not log.is_file()
        with open(log, "a") as f:
            if new:
                f.write("step,seconds,relation,prompt,n,entity,relation_acc,reversed\n")
            for r in rows:
                f.write(f"{self.step},{self.seconds:.0f},{r['relation']},{r['prompt']},{r['n']},{r['entity']:.3f},"
                        f"{r['relation_acc']:.3f},{r['reversed']:.3f}\n")
        summary = " ".join(f"{r['relation'][:6]}{'/swap' if r['prompt'] == 'swap' else ''}:{r['relation_acc']:.2f}"
                           for r in rows if r["prompt"] != "words" or scene.RELATIONS[r["relation"]].named)
        bar.write(f"step {self.step}: validation score {score:.3f} (best {max(self.best, score):.3f}) {summary}")
        if score > self.best:
            self.export("best_model", extra={"validation_score": round(score, 4), "validation": rows})
            self.best = score


def pretrain(folder: str | Path, config: PretrainConfig = PretrainConfig(),
             world: model.WorldModelConfig = model.WorldModelConfig(), resume: bool = True, progress: bool = True) -> Path:
    """Train into ``folder/checkpoint.pt``; write the EMA model to ``folder/model``. Returns that path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resuming = resume and (folder / "checkpoint.pt").is_file()
    if config.init_from:
        # A resume keeps the tokenizer its checkpoint was made with (the word lists may have grown since).
        tokenizer, text_encoder, unet, scheduler, world = warm_start(config.init_from, folder,
                                                                     folder / "tokenizer" if resuming else None)
    else:
        tokenizer, text_encoder, unet, scheduler = model.build(folder / "model", world, config.seed)
    run = Pretraining(folder, config, world, tokenizer, text_encoder, unet, scheduler, device)
    if resuming:
        run.resume()
    alphas = scheduler.alphas_cumprod.to(device)
    log = _open_log(folder / "pretrain_log.csv", run.step)
    start = time.perf_counter() - run.seconds
    bar = tqdm(total=config.steps, initial=run.step, disable=not progress, desc="pretraining", unit="step")
    for x, ids in _loader(Batches(config, world, tokenizer), run.step, device):
        if time.perf_counter() - start >= config.minutes * 60:
            break
        loss = run.train_step(x, ids, alphas)
        run.seconds = time.perf_counter() - start
        log.write(f"{run.step},{loss:.5f},{run.seconds:.1f}\n")
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        if config.eval_every and run.step % config.eval_every == 0:  # before the checkpoint, which keeps ``best``
            run.validate_and_keep(bar)
        if run.step % config.checkpoint_every == 0:
            log.flush()
            run.save_checkpoint()
    bar.close()
    log.close()
    return run.export()


def _open_log(path: Path, step: int):
    """The loss log, continued at ``step``: rows past the checkpoint (or all, on a fresh start) dropped."""
    kept = []
    if step > 0 and path.is_file():
        kept = [line for line in path.read_text().splitlines()[1:] if int(line.split(",")[0]) <= step]
    log = open(path, "w")
    log.write("\n".join(["step,loss,seconds", *kept]) + "\n")
    return log


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
    tokenizer, _ = extend_tokenizer(tokenizer, model.vocabulary() if words is None else words, folder)
    rows = text_encoder.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            table = text_encoder.get_input_embeddings().weight
            table[rows:] = table[tokenizer.convert_tokens_to_ids("and</w>")]
    return tokenizer


def validate(tokenizer, text_encoder, unet, scheduler, world, pairs: int = 6, guidance: float = 1.5,
             steps: int = VALIDATION_STEPS, seed: int = 0) -> list[dict]:
    """Per benchmark relation, one image per validation pair (``invrev.measure``, image seeds of
    ``layout``), scored: named relations in words, unnamed ones by their handle and in words, and
    each in the swap form "B ob <words or handle> A", scored as "A <words> B". ``reversed`` is how
    often an image passes with A and B swapped (near 0 for a model that learned direction)."""
    components = models.Components(tokenizer, text_encoder, unet, scheduler,
                                   {**scheduler.config, "_class_name": type(scheduler).__name__},
                                   models.PixelCodec(world.fold), "pretraining", "main")
    items = [it for relation, info in sorted(scene.RELATIONS.items())
             for kind in ("words", "swap") + (() if info.named else ("handle",))
             for it in measure.items(relation, kind, pairs, split="validation")]
    _, scores = measure.draw(components, items, seed, 1, steps=steps, guidance=guidance, batch_size=64)
    return [{"relation": relation, "prompt": kind, "n": c["n"], "entity": c["entity_accuracy"],
             "relation_acc": c["relation_accuracy"], "reversed": c["reversed_rate"]}
            for (relation, kind), c in measure.cells(items, scores, 1).items()]


def validation_score(rows: list[dict]) -> float:
    """One number to keep checkpoints by: mean over the ten relations of (entity + relation) / 2,
    named relations in words and unnamed ones by handle, and each in the swap form, less the
    named ones' reversed rate."""
    kept = [r for r in rows if r["prompt"] == "swap" or (r["prompt"] == "words") == scene.RELATIONS[r["relation"]].named]
    return sum((r["entity"] + r["relation_acc"]) / 2 - r["reversed"] * scene.RELATIONS[r["relation"]].named
               for r in kept) / len(kept)
