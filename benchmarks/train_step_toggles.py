"""The training-step benchmark's optimisation toggles (``--ablate``). Each context manager puts the
single-run step in the *non-default* state and yields config changes; it restores the default on
exit. Each switches a documented option: a config field, a trainer ``Speed`` option, a
torch.backends flag, or a diffusers/torch setting of the model the benchmark passes in
(``components=``; the trainer uses it as given). Used by ``train_step.py``."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

if TYPE_CHECKING:
    from train_step import Bench


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
