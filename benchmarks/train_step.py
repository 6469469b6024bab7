"""Speed of one training step at SD 1.5 scale: a ReVersion-style step against invrev's (issue 4).

Builds SD 1.5-shaped components with random weights (random weights time exactly like real ones;
nothing is downloaded), writes a few synthetic exemplars, and measures in one process, side by side:

- a reference-style step, written below as ReVersion's ``train.py`` does it: fp32, the VAE encoding
  the exemplars every micro-batch, batch 2 x accumulation 4, AdamW over the whole token table and the
  other rows copied back after every micro-batch;
- invrev's default single-run step, ``invrev.trainer.train_many([config])`` (bf16 on CUDA, cached
  latents, frozen UNet with input gradients only, batch 8 x accumulation 1);
- invrev's multi-run step, K runs through the UNet as one batch (``--k``; ``--k auto`` doubles K
  until memory runs out or throughput stops improving);
- with ``--ablate``, the single-run step with each optimisation flipped in turn.

Timing. The reference step is timed directly over ``--steps`` steps after ``--warmup`` steps, with
``torch.cuda.synchronize()`` on both sides. A train_many configuration is timed as the wall time of
a call with ``--steps`` steps minus that of a call with zero steps (same setup: opening runs, caching
latents, writing manifests), both after a warm-up call: the difference is exactly the steady-state
steps, including the trainer's per-step logging. FLOPs are counted with ``FlopCounterMode`` around
one reference step, and as the count of a one-step call minus a zero-step call for train_many.

    python benchmarks/train_step.py --scale tiny                     # CPU, well under a minute
    python benchmarks/train_step.py --k auto --ablate --out benchmarks/results/h200
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPTextConfig, CLIPTextModel

from invrev import embeddings, sampling, text, trainer, words
from invrev.config import TrainConfig
from invrev.data import load_exemplars, to_tensor, write_exemplars
from invrev.models import Components, VaeCodec
from invrev.testing import tiny_vocabulary
from invrev.tokenizer import build_tokenizer

# Every fp32 <-> bf16 cast of a random-weight model otherwise prints a from_pretrained hint.
diffusers_logging.get_logger("diffusers.models.modeling_utils").setLevel(diffusers_logging.ERROR)

RECIPE_SAMPLES = 24_000  # SPEC §6: 3000 steps x batch 2 x accumulation 4
GRID_RUNS = 60
TARGETS = {"speedup": 10.0, "peak_fraction": 0.45, "relation_s": 120.0, "grid_s": 2 * 3600.0}

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


# ---------------------------------------------------------------------------------------------
# Model, data and device helpers


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_gib(device: torch.device) -> float:
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
    _sync(device)
    tick = time.perf_counter()
    for _ in range(reps):
        torch.mm(a, b, out=out)
    _sync(device)
    label = f"bf16 matmul {n}^3" if cuda else f"fp32 matmul {n}^3, {torch.get_num_threads()} thread(s) (no bf16 peak on CPU)"
    return 2 * n**3 * reps / (time.perf_counter() - tick), label


# ---------------------------------------------------------------------------------------------
# The reference-style step (ReVersion's train.py, reproduced for timing only; never used to train)


class ReferenceStep:
    """One optimizer step as ReVersion's ``train.py`` takes it, on the same components.

    fp32 weights; each micro-batch encodes its exemplars with the VAE (``latent_dist.sample()``),
    draws importance-sampled timesteps with numpy and copies them to the device, runs the text
    encoder and UNet, adds the steer loss, backpropagates into the whole token table, calls AdamW
    (stepping on the last micro-batch, as accelerate's wrapper does), copies every other row back
    from a saved table and logs its losses with ``.item()``. Batch 2 x accumulation 4. Its data
    loader's per-sample image decode, resize and flip are left out, so the speed-ups are lower bounds.
    """

    def __init__(self, components: Components, exemplar_folder: Path, resolution: int, batch: int = 2, accum: int = 4):
        c = self.c = components
        self.batch, self.accum, self.device = batch, accum, components.device
        exemplars = load_exemplars(exemplar_folder)
        self.images, self.templates = to_tensor(exemplars.images, resolution).to(self.device), exemplars.templates
        (self.r_id,) = embeddings.add_placeholders(c.tokenizer, c.text_encoder, ["<r>"])
        self.embed = c.text_encoder.get_input_embeddings()
        self.embed.weight.requires_grad_(True)
        self.original = self.embed.weight.detach().clone()
        self.others = torch.arange(self.original.shape[0], device=self.device) != self.r_id
        self.optimizer = torch.optim.AdamW([self.embed.weight], lr=2e-3, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        self.positives = torch.tensor(_single_tokens(c.tokenizer, "prepositions"), device=self.device)
        stop = (_single_tokens(c.tokenizer, "stopwords") + _single_tokens(c.tokenizer, "prepositions")
                + c.tokenizer.all_special_ids + [self.r_id])
        self.stop = torch.tensor(stop, device=self.device)
        self.probs = sampling.relation_focal_probs(c.noise_scheduler.config.num_train_timesteps).numpy()
        self.rng = np.random.default_rng(2023)

    def step(self) -> None:
        c = self.c
        for micro in range(self.accum):
            idx = self.rng.integers(len(self.templates), size=self.batch)
            captions = [text.fill(self.templates[i][self.rng.integers(len(self.templates[i]))], "<r>") for i in idx]
            input_ids = c.tokenizer(captions, padding="max_length", truncation=True, max_length=c.tokenizer.model_max_length,
                                    return_tensors="pt").input_ids.to(self.device)
            latents = c.codec.vae.encode(self.images[idx]).latent_dist.sample() * c.codec.scale  # frozen: no graph
            noise = torch.randn_like(latents)
            timesteps = torch.tensor(self.rng.choice(len(self.probs), size=self.batch, p=self.probs)).to(self.device).long()
            noisy = c.noise_scheduler.add_noise(latents, noise, timesteps)
            pred = c.unet(noisy, timesteps, c.text_encoder(input_ids)[0]).sample
            denoise = F.mse_loss(pred.float(), noise.float())
            steer = self._steer(input_ids)
            loss = denoise + 0.01 * steer
            (loss / self.accum).backward()
            if micro == self.accum - 1:
                self.optimizer.step()
                self.optimizer.zero_grad()
            with torch.no_grad():
                self.embed.weight[self.others] = self.original[self.others]
            loss.item(), denoise.item(), steer.item()  # ReVersion logs every micro-batch

    def _steer(self, input_ids: torch.Tensor) -> torch.Tensor:
        """ReVersion's ``calculate_steer_loss``: gradient only through the first caption's <r> row."""
        inputs = self.embed(input_ids)
        pick = torch.randint(len(self.positives), (self.batch * 4,), device=self.device)
        positives = self.embed(self.positives[pick])
        with torch.no_grad():
            negatives = inputs[~torch.isin(input_ids, self.stop)]
            block = F.normalize(torch.cat([positives, negatives]), dim=1)
        r = F.normalize(inputs[0][input_ids[0] == self.r_id], dim=1)
        logits = r @ block.T / 0.07
        return (torch.logsumexp(logits, 1) - torch.logsumexp(logits[:, : len(positives)], 1)).mean()

    def close(self) -> None:
        self.embed.weight.requires_grad_(False)
        self.embed.weight.grad = None
        del self.optimizer


def _single_tokens(tokenizer, kind: str) -> list[int]:
    ids = [tokenizer(w, add_special_tokens=False).input_ids for w in words.load_words(kind)]
    return [i[0] for i in ids if len(i) == 1]


# ---------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Row:
    name: str
    kind: str  # reference | single | multi | ablation
    runs: int = 1
    samples_per_step: int = 0
    seconds_per_step: float | None = None
    samples_per_s: float | None = None
    flops_per_sample: float | None = None
    peak_memory_gib: float | None = None
    note: str = ""
    error: str | None = None
    extra: dict = field(default_factory=dict)


class Bench:
    """Everything one benchmark process shares: device, components, exemplars, step counts."""

    def __init__(self, scale: str, workdir: Path, steps: int, warmup: int):
        self.scale, self.workdir, self.steps, self.warmup = scale, workdir, steps, warmup
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.components = build_components(scale, workdir, self.device)
        self.resolution = SCALES[scale]["resolution"]
        self.exemplars = write_data(workdir / "data" / "inside", self.resolution)
        self.speed = trainer.Speed()
        self._calls = 0

    def config(self, **changes) -> TrainConfig:
        params = dict(exemplars=str(self.exemplars), model=self.components.model_id, revision="random",
                      resolution=self.resolution, batch_size=8, grad_accum=1, hf_sigma=SCALES[self.scale]["hf_sigma"])
        return TrainConfig.from_params({**params, **changes})

    def fresh(self) -> None:
        """Drop the trainer's cached low-precision copies, so a toggle applied to the fp32 UNet reaches them."""
        self.components._copies.clear()

    def call(self, configs: list[TrainConfig], steps: int) -> tuple[float, list[Path]]:
        """Wall time of one ``train_many`` call with ``steps`` steps (fresh run folders each call)."""
        self._calls += 1
        folders = [self.workdir / "runs" / f"call{self._calls}" / f"run{i}" for i in range(len(configs))]
        _sync(self.device)
        tick = time.perf_counter()
        trainer.train_many([c.replace(steps=steps) for c in configs], folders, components=self.components,
                           progress=False, speed=self.speed)
        _sync(self.device)
        return time.perf_counter() - tick, folders


def time_reference(bench: Bench) -> Row:
    bench.fresh()
    ref = ReferenceStep(bench.components, bench.exemplars, bench.resolution)
    row = Row("reference-style: fp32, VAE every step, 2x4, full-table AdamW", "reference", 1, ref.batch * ref.accum,
              note="ReVersion's train.py step")
    try:
        for _ in range(bench.warmup):
            ref.step()
        _reset_peak_memory(bench.device)
        _sync(bench.device)
        tick = time.perf_counter()
        for _ in range(bench.steps):
            ref.step()
        _sync(bench.device)
        row.seconds_per_step = (time.perf_counter() - tick) / bench.steps
        row.peak_memory_gib = _peak_memory_gib(bench.device)
        with FlopCounterMode(display=False) as counter:
            ref.step()
        row.flops_per_sample = counter.get_total_flops() / row.samples_per_step
    finally:
        ref.close()
    row.samples_per_s = row.samples_per_step / row.seconds_per_step
    return row


def time_runs(bench: Bench, name: str, kind: str, k: int, count_flops: bool = True, **changes) -> Row:
    """One train_many configuration at K runs: steady-state seconds per step, FLOPs, peak memory."""
    bench.fresh()
    configs = [bench.config(seed=2023 + i, **changes) for i in range(k)]
    row = Row(name, kind, k, k * configs[0].batch_size * configs[0].grad_accum)
    bench.call(configs, bench.warmup)  # compilation, cuDNN autotuning, allocator warm-up
    _reset_peak_memory(bench.device)
    # A run needs at least one step, so the setup cost is timed with one and subtracted with it.
    one, _ = bench.call(configs, 1)
    full, folders = bench.call(configs, 1 + bench.steps)
    row.peak_memory_gib = _peak_memory_gib(bench.device)
    row.seconds_per_step = (full - one) / bench.steps
    row.samples_per_s = row.samples_per_step / row.seconds_per_step
    # The trainer's own clock (log.csv, each run holds 1/K of every step) as a cross-check.
    last = (folders[0] / "log.csv").read_text().strip().splitlines()[-1]
    row.extra["trainer_log_seconds_per_step"] = float(last.split(",")[-1]) * k / (1 + bench.steps)
    if count_flops:
        with FlopCounterMode(display=False) as two:
            bench.call(configs, 2)
        with FlopCounterMode(display=False) as one:
            bench.call(configs, 1)
        row.flops_per_sample = (two.get_total_flops() - one.get_total_flops()) / row.samples_per_step
    return row


# ---------------------------------------------------------------------------------------------
# Optimisation toggles: each context manager puts the single-run step in the *non-default* state
# and yields config changes; it restores the default on exit. Each switches a documented option: a
# config field, a trainer ``Speed`` option, a torch.backends flag, or a diffusers/torch setting of
# the model the benchmark passes in (``components=``; the trainer uses it as given).


@contextlib.contextmanager
def _flip_bf16(bench: Bench):
    yield {"mixed_precision": "no" if bench.device.type == "cuda" else "bf16"}


@contextlib.contextmanager
def _speed(bench: Bench, **changes):
    """Switch documented trainer options (``invrev.trainer.Speed``) for the duration."""
    before = bench.speed
    bench.speed = dataclasses.replace(before, **changes)
    try:
        yield {}
    finally:
        bench.speed = before


@contextlib.contextmanager
def _setting(owner, name: str, value):
    """Set a ``torch.backends`` flag for the duration."""
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield {}
    finally:
        setattr(owner, name, before)


def _flip_tf32(bench: Bench):
    return _setting(torch.backends.cuda.matmul, "allow_tf32", True)


def _flip_cudnn_benchmark(bench: Bench):
    return _setting(torch.backends.cudnn, "benchmark", True)


@contextlib.contextmanager
def _flip_sdpa(bench: Bench):
    bench.components.unet.set_attn_processor(AttnProcessor())
    try:
        yield {}
    finally:
        bench.components.unet.set_attn_processor(AttnProcessor2_0())


@contextlib.contextmanager
def _flip_frozen(bench: Bench):
    unet = bench.components.unet
    unet.requires_grad_(True)
    try:
        yield {}
    finally:
        unet.requires_grad_(False)
        unet.zero_grad(set_to_none=True)


def _flip_cache(bench: Bench):
    return _speed(bench, cache_latents=False)


@contextlib.contextmanager
def _flip_channels_last(bench: Bench):
    bench.components.unet.to(memory_format=torch.channels_last)
    try:
        yield {}
    finally:
        bench.components.unet.to(memory_format=torch.contiguous_format)


def _flip_fused_adamw(bench: Bench):
    return _speed(bench, fused_adamw=False)


def _flip_compile(mode: str):
    @contextlib.contextmanager
    def flip(bench: Bench):
        with _speed(bench, compile_unet=mode):
            try:
                yield {}
            finally:
                torch._dynamo.reset()

    return flip


@dataclass(frozen=True)
class Toggle:
    name: str
    label: str
    flip: object  # context manager factory taking the Bench
    default_on: bool  # in invrev's default step on CUDA
    cuda_only: bool = False
    same_flops: bool = True  # flipping it leaves the counted FLOPs unchanged


TOGGLES = (
    Toggle("bf16", "bf16 autocast", _flip_bf16, True),
    Toggle("tf32", "TF32 matmul", _flip_tf32, False, cuda_only=True),
    Toggle("cudnn_benchmark", "cuDNN autotuning", _flip_cudnn_benchmark, False, cuda_only=True),
    Toggle("sdpa", "fused attention (SDPA)", _flip_sdpa, True),
    Toggle("frozen", "frozen UNet (no weight grads)", _flip_frozen, True, same_flops=False),
    Toggle("cache", "cached latents", _flip_cache, True, same_flops=False),
    Toggle("channels_last", "channels-last", _flip_channels_last, False),
    Toggle("fused_adamw", "fused AdamW", _flip_fused_adamw, True, cuda_only=True),
    Toggle("compile", "torch.compile(unet)", _flip_compile("default"), False, cuda_only=True),
    Toggle("cudagraphs", "CUDA graphs (compile, reduce-overhead)", _flip_compile("reduce-overhead"), False, cuda_only=True),
)


def ablate(bench: Bench, baseline: Row, names: list[str]):
    """Yield one row per toggle in ``names``: the single-run step with that optimisation flipped."""
    cuda = bench.device.type == "cuda"
    for toggle in (t for t in TOGGLES if t.name in names):
        on = toggle.default_on and (cuda or toggle.name != "bf16")  # bf16 is off by default on the CPU
        name = f"invrev 1 run, {toggle.label} {'off' if on else 'on'}"
        if toggle.cuda_only and not cuda:
            yield Row(name, "ablation", note=f"{toggle.label}: needs CUDA")
            continue
        try:
            with toggle.flip(bench) as changes:
                row = time_runs(bench, name, "ablation", 1, count_flops=not toggle.same_flops, **changes)
        except Exception as err:  # one failing optimisation must not lose the rest of a GPU session
            row = Row(name, "ablation", error=f"{type(err).__name__}: {err}"[:300])
        if row.error:
            _reset_peak_memory(bench.device)  # outside the except block: its traceback holds activations
            yield row
            continue
        if toggle.same_flops:
            row.flops_per_sample = baseline.flops_per_sample
        gain = baseline.samples_per_s / row.samples_per_s if on else row.samples_per_s / baseline.samples_per_s
        row.extra["speedup_from_optimisation"] = gain
        row.note = f"{toggle.label}: x{gain:.2f}"
        yield row


def multi_run(bench: Bench, k: str, single: Row):
    """Yield the multi-run rows: one K, or K = 2, 4, 8, ... until out of memory or no gain above 5 %."""
    ks = [int(k)] if k != "auto" else [2 ** i for i in range(1, 11)]
    best = None
    for runs in ks:
        name = f"invrev {runs} runs ({runs}x8x1)"
        try:
            row = time_runs(bench, name, "multi", runs)
        except Exception as err:  # out of memory ends the sweep (cuBLAS/cuDNN report it as other errors too)
            row = Row(name, "multi", runs, error=f"{type(err).__name__}: {err}"[:300])
        if row.error:
            _reset_peak_memory(bench.device)  # outside the except block: its traceback holds activations
            row.extra["ends_sweep"] = best is not None  # expected in a sweep once a smaller K has worked
            yield row
            break
        row.note = f"x{row.samples_per_s / single.samples_per_s:.2f} over 1 run" if single.samples_per_s else ""
        yield row
        if best is not None and row.samples_per_s < 1.05 * best.samples_per_s:
            break
        best = row if best is None or row.samples_per_s > best.samples_per_s else best


# ---------------------------------------------------------------------------------------------
# Table


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _fill(rows: list[Row], peak: float) -> list[dict]:
    reference = next((r for r in rows if r.kind == "reference" and r.samples_per_s), None)
    table = []
    for r in rows:
        sps = r.samples_per_s
        achieved = r.flops_per_sample * sps if sps and r.flops_per_sample else None
        table.append({
            **asdict(r),
            "speedup_vs_reference": sps / reference.samples_per_s if sps and reference else None,
            "tflops": achieved / 1e12 if achieved else None,
            "peak_fraction": achieved / peak if achieved else None,
            "relation_seconds": RECIPE_SAMPLES / sps if sps else None,
            "grid_seconds": GRID_RUNS * RECIPE_SAMPLES / sps if sps else None,
        })
    return table


def markdown(table: list[dict]) -> str:
    head = ("configuration", "samples/s", "vs reference", "TFLOP/s", "of peak", "peak mem (GiB)",
            "24k samples", f"{GRID_RUNS} x 24k", "note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    g = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731
    for r in table:
        cells = (r["name"], g(r["samples_per_s"], ".3g"), g(r["speedup_vs_reference"], ".2f"), g(r["tflops"], ".3g"),
                 g(r["peak_fraction"], ".1%"), g(r["peak_memory_gib"], ".2f"), _duration(r["relation_seconds"]),
                 _duration(r["grid_seconds"]), r["error"] or r["note"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(table: list[dict]) -> dict:
    """SPEC §6 / issue 4 targets, judged on the best invrev row (meaningful at full scale on CUDA)."""
    ours = [r for r in table if r["kind"] in ("single", "multi") and r["samples_per_s"]]
    if not ours:
        return {}
    best = max(ours, key=lambda r: r["samples_per_s"])
    single = next((r for r in ours if r["kind"] == "single"), best)
    return {
        "best": best["name"],
        "speedup_vs_reference >= 10": (best["speedup_vs_reference"] or 0) >= TARGETS["speedup"],
        "fraction_of_peak >= 45%": (best["peak_fraction"] or 0) >= TARGETS["peak_fraction"],
        "one relation (1 run) <= 2 min": single["relation_seconds"] <= TARGETS["relation_s"],
        "60-run grid <= 2 h": best["grid_seconds"] <= TARGETS["grid_s"],
    }


def write_out(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Training-step benchmark ({result['scale']} scale, {result['device']})", "",
             f"Peak: {result['peak_tflops']:.3g} TFLOP/s ({result['peak_label']}). "
             f"{result['steps']} timed steps after {result['warmup']} warm-up steps per configuration.", "",
             result["markdown"], ""]
    if result["targets"]:
        lines += ["Targets: " + ", ".join(f"{k}: {v}" for k, v in result["targets"].items()), ""]
    path.with_suffix(".md").write_text("\n".join(lines))


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=tuple(SCALES), default="sd15")
    p.add_argument("--k", default=None, help="runs in the multi-run row, or 'auto' (default 16 on CUDA, 4 otherwise)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 10; 3 at tiny scale)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; 1 at tiny scale)")
    p.add_argument("--ablate", nargs="?", const="all", default="",
                   help=f"flip optimisations one at a time: 'all' or a comma list of {','.join(t.name for t in TOGGLES)}")
    p.add_argument("--out", type=Path, default=None, help="also write FILE.json and FILE.md")
    args = p.parse_args(argv)
    tiny = args.scale == "tiny"
    args.k = args.k or ("16" if torch.cuda.is_available() else "4")
    if args.k != "auto" and (not args.k.isdigit() or int(args.k) < 1):
        p.error(f"--k must be a positive integer or 'auto', not {args.k!r}")
    args.steps = args.steps or (3 if tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 3)
    names = [t.name for t in TOGGLES] if args.ablate == "all" else [n for n in args.ablate.split(",") if n]
    unknown = set(names) - {t.name for t in TOGGLES}
    if unknown:
        p.error(f"unknown --ablate names {sorted(unknown)}; choose from {[t.name for t in TOGGLES]}")
    args.ablate = names
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="invrev-bench-") as tmp:
        bench = Bench(args.scale, Path(tmp), args.steps, args.warmup)
        device = torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else "CPU"
        peak, peak_label = measure_peak(bench.device)
        result = {"scale": args.scale, "device": device, "torch": torch.__version__, "steps": args.steps,
                  "warmup": args.warmup, "peak_tflops": peak / 1e12, "peak_label": peak_label}
        rows: list[Row] = []

        def record(row: Row) -> None:
            rows.append(row)
            speed = f"{row.samples_per_s:.4g} samples/s" if row.samples_per_s else "-"
            print(f"measured {row.name}: {speed}; {row.error or row.note}", file=sys.stderr, flush=True)
            table = _fill(rows, peak)
            result.update(rows=table, markdown=markdown(table), targets=targets(table) if args.scale == "sd15" else {})
            if args.out:
                write_out(args.out, result)

        main_rows = (("reference-style", "reference", lambda: time_reference(bench)),
                     ("invrev 1 run (8x1)", "single", lambda: time_runs(bench, "invrev 1 run (8x1)", "single", 1)))
        for name, kind, measure in main_rows:
            try:
                record(measure())
            except Exception as err:  # keep what was measured; the exit status reports the failure
                record(Row(name, kind, error=f"{type(err).__name__}: {err}"[:300]))
        single = rows[-1]
        if single.samples_per_s:
            for row in multi_run(bench, args.k, single):
                record(row)
            for row in ablate(bench, single, args.ablate):
                record(row)
    print(f"{args.scale} scale on {device}; peak {peak / 1e12:.3g} TFLOP/s ({peak_label}); "
          f"{args.steps} timed steps after {args.warmup} warm-up steps per configuration")
    print(result["markdown"])
    if result["targets"]:
        print("targets:", ", ".join(f"{k}: {v}" for k, v in result["targets"].items()))
    return result


if __name__ == "__main__":
    outcome = main()
    failed = [r for r in outcome["rows"] if r["error"] and r["kind"] != "ablation" and not r["extra"].get("ends_sweep")]
    sys.exit(1 if failed else 0)
