"""The training loop: one readable loop over K runs that share one frozen model.

A run's step is the paper's objective, Eq. 10 (:func:`_objective`): the denoising loss of Eq. 1 on
its micro-batch plus the weighted control loss of Eqs. 3–7 on ``<r>``. A single inversion is K = 1.
With K runs, each keeps its own exemplars, vectors, AdamW state and random stream, and only the
frozen model's forward pass is shared (:func:`_predict`: the runs' samples go through the text
encoder and UNet as one batch). Each run's loss depends only on its own vectors, so its gradients
(and result) are those it would get alone. Under ``accelerate launch`` on several GPUs each process
draws its own samples (seed + 1000·rank) and the vectors' gradients are averaged before each step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from invrev import embeddings, losses, runs, sampling, steering, text
from invrev.config import TrainConfig
from invrev.data import load_exemplars
from invrev.filters import gaussian_lowpass
from invrev.models import Components, load_components_cached
from invrev.run_state import Run, TrainingError, after_step, check_folder, finish, open_run


@dataclass(frozen=True)
class Speed:
    """How the trainer computes a step, never what: each only changes the time a step takes.

    ``benchmarks/train_step.py`` times each one switched off. The model's own settings (attention
    processor, memory format, frozen weights, ``torch.backends`` flags) are the caller's: the
    trainer uses the ``components`` it is given as they are.
    """

    cache_latents: bool = True  # encode the exemplars once; False: the VAE encodes every micro-batch, as ReVersion
    fused_adamw: bool = True  # on CUDA, AdamW's update as one kernel
    compile_unet: str | None = None  # a torch.compile mode for the UNet ("default", "reduce-overhead"); None: eager


def train(config: TrainConfig, folder: str | Path, **kwargs) -> Path:
    """Train one run into ``folder``; see :func:`train_many` for the keyword arguments."""
    return train_many([config], [folder], **kwargs)[0]


def train_many(
    configs: list[TrainConfig],
    folders: list[str | Path],
    *,
    components: Components | None = None,
    resume: bool = False,
    progress: bool = True,
    accelerator: Accelerator | None = None,
    speed: Speed = Speed(),
) -> list[Path]:
    """Train K runs jointly; returns their folders. Raises :class:`TrainingError` if any failed.

    ``resume=True`` continues each run from its last checkpoint and reaches the result it would
    have reached uninterrupted (bit-identical on the CPU). Without it, a folder that already holds a
    run is refused rather than overwritten. ``speed`` changes how fast, never what is computed.
    """
    if len(configs) != len(folders) or not configs:
        raise TrainingError("give one folder per config, and at least one config")
    _check_compatible(configs)
    folders = [Path(f) for f in folders]
    # Everything the user can get wrong is checked before the model loads (minutes for SD 1.5).
    for config, folder in zip(configs, folders):
        check_folder(config, folder, resume)
    exemplar_sets = [load_exemplars(c.exemplars, c.resolution) for c in configs]
    first = configs[0]
    # Autocast is ours, not accelerate's: its mixed-precision state is process-global, so a second
    # call with another precision would fail. Accelerate gives the device and the processes.
    accelerator = accelerator or Accelerator()
    components = components or load_components_cached(first.model, first.revision)
    vocab = steering.Vocabulary(components, [first.placeholder, first.inverse_placeholder])
    dtype = _precision(first.mixed_precision, accelerator.device)
    text_encoder, unet = components.compute_modules(accelerator.device, dtype)
    if speed.compile_unet:
        unet = torch.compile(unet, mode=speed.compile_unet)
    table = components.text_encoder.get_input_embeddings().weight.detach().to(accelerator.device, torch.float32)
    modules = _Modules(components, text_encoder, unet, dtype, table)
    started = runs.timestamp()
    all_runs = [open_run(c, f, e, components, vocab, accelerator, resume, fused_adamw=speed.fused_adamw,
                         cache_latents=speed.cache_latents) for c, f, e in zip(configs, folders, exemplar_sets)]
    trainable = [r for r in all_runs if r.config.train]
    total = sum(r.config.steps for r in trainable)
    bar = tqdm(total=total, initial=sum(r.step for r in trainable), disable=not progress or not accelerator.is_main_process,
               desc=f"training {len(trainable)} run(s)", unit="step")
    while any(r.active for r in trainable):
        active = [r for r in trainable if r.active]
        tick = time.perf_counter()
        _train_step(active, modules, vocab, accelerator)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize(accelerator.device)
        elapsed = (time.perf_counter() - tick) / len(active)
        for run in active:
            run.seconds += elapsed
            if run.failed is None:
                after_step(run, accelerator)
        bar.update(len(active))
        bar.set_postfix(loss=f"{sum(r.logged.get('loss', 0) for r in active) / len(active):.4f}")
    bar.close()
    for run in all_runs:
        if run.failed is None and not run.finished_before and accelerator.is_main_process:
            finish(run, started, accelerator, dtype)
    failed = [r for r in all_runs if r.failed]
    if failed:
        raise TrainingError("\n".join(f"{r.folder}: {r.failed}" for r in failed))
    return [r.folder for r in all_runs]


def _check_compatible(configs: list[TrainConfig]) -> None:
    shared = ("model", "revision", "resolution", "mixed_precision", "grad_accum", "placeholder", "inverse_placeholder")
    for key in shared:
        values = {getattr(c, key) for c in configs}
        if len(values) > 1:
            raise TrainingError(f"runs trained together must share {key}; got {sorted(map(str, values))}")


def _precision(setting: str, device: torch.device) -> torch.dtype:
    """The frozen model's compute dtype: ``auto`` is bf16 on a GPU that has it, else fp32."""
    if setting == "auto":
        setting = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "no"
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}[setting]


@dataclass
class _Modules:
    """What a step runs: the frozen modules in the compute dtype, and the fp32 token table on the
    compute device (in low precision the fp32 originals stay where they were loaded)."""

    components: Components
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    dtype: torch.dtype
    table: torch.Tensor


@dataclass
class Batch:
    """One micro-batch of a run: exemplar latents x_0, noise ε, timesteps t, captions c, and the
    control loss's draws."""

    captions: list[str]
    latents: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    picks: steering.Picks


def _sample_batch(run: Run, components: Components, vocab: steering.Vocabulary) -> Batch:
    """One micro-batch of a run, every random number from the run's own generator in a fixed order.

    Everything is drawn on the CPU so a run's stream is the same on any device and after a resume.
    """
    config, generator = run.config, run.generator
    idx = torch.randint(run.latent_mean.shape[0], (config.batch_size,), generator=generator)
    p_inverse = config.p_inverse if config.inverse else 0.0  # Eq. 2: "E_B <inv> <r> E_A" in place of "E_A <r> E_B"
    captions = text.sample_captions(run.exemplars.templates, idx.tolist(), generator, config.placeholder,
                                    config.inverse_placeholder, p_inverse)
    T = components.noise_scheduler.config.num_train_timesteps
    timesteps = sampling.sample_timesteps(config.batch_size, T, generator, run.probs)  # relation-focal or uniform
    shape = (config.batch_size, *run.latent_mean.shape[1:])
    noise = torch.randn(shape, generator=generator)
    posterior = torch.randn(shape, generator=generator)
    picks = vocab.pick(config, run.words, generator)
    device = run.latent_mean.device
    idx = idx.to(device)
    if run.images is None:
        mean, std = run.latent_mean[idx], run.latent_std[idx]
    else:
        with torch.no_grad():
            mean, std = components.codec.encode_dist(run.images[idx])
    latents = mean + std * _to(posterior, device)  # x_0 ~ the VAE posterior of the exemplar
    return Batch(captions, latents, _to(noise, device), _to(timesteps, device), picks)


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU -> device without stalling the GPU (pinned memory, asynchronous copy)."""
    if device.type != "cuda":
        return x
    return x.pin_memory().to(device, non_blocking=True)


@dataclass
class Objective:
    """Eq. 10's total and its two terms for one run's micro-batch."""

    total: torch.Tensor
    denoise: torch.Tensor
    control: torch.Tensor


def _objective(run: Run, batch: Batch, prediction: torch.Tensor, caption_ids: torch.Tensor, modules: _Modules) -> Objective:
    """Eq. 10 for one run's micro-batch, given the frozen model's prediction ε_θ(x_t, t, τ(c))."""
    config = run.config
    scheduler = modules.components.noise_scheduler
    # Eq. 1: L_denoise = ‖ε − ε_θ(x_t, t, τ(c))‖² (the target follows the scheduler's prediction_type)
    target = losses.diffusion_target(scheduler, batch.latents, batch.noise, batch.timesteps)
    denoise = losses.denoising_loss(prediction, target)
    # Eq. 3 (ReVersion's steer loss) or Eqs. 4–7 (λ_verb·L_verb + λ_prep·L_prep), on <r> only
    control = steering.control_loss(config, run.vectors[0], run.words, caption_ids, batch.picks, modules.table)
    # Eq. 10: L = λ_denoise·L_denoise + λ_control·L_control
    total = config.lambda_denoise * denoise + config.lambda_control * control
    return Objective(total, denoise, control)


def _predict(active: list[Run], batches: list[Batch], modules: _Modules, vocab: steering.Vocabulary):
    """ε_θ(x_t, t, τ(c)) of every run's micro-batch in one pass of the frozen model.

    The runs' samples are concatenated; each caption's placeholders take its own run's vectors;
    the predictions and caption token ids come back split per run."""
    components, device = modules.components, modules.table.device
    tok = components.tokenizer
    captions = [caption for batch in batches for caption in batch.captions]
    caption_ids = tok(captions, padding="max_length", truncation=True, max_length=tok.model_max_length,
                      return_tensors="pt").input_ids
    # x_t = √ᾱ_t·x_0 + √(1−ᾱ_t)·ε, then Eq. 8 on x_t where a run places the suppressor there
    noisy = torch.cat([_suppress_latent(run.config, components.noise_scheduler.add_noise(b.latents, b.noise, b.timesteps))
                       for run, b in zip(active, batches)])
    timesteps = torch.cat([b.timesteps for b in batches])
    vectors = torch.cat([_sample_vectors(run) for run in active])
    with torch.autocast(device.type, dtype=modules.dtype, enabled=modules.dtype != torch.float32):
        with embeddings.TokenInjector(modules.text_encoder, vocab.placeholders).use(vectors):
            states = modules.text_encoder(_to(caption_ids, device))[0]  # τ(c)
        prediction = modules.unet(noisy.to(modules.dtype), timesteps, states).sample
    sizes = [run.config.batch_size for run in active]
    return list(zip(prediction.split(sizes), caption_ids.split(sizes)))


def _train_step(active: list[Run], modules: _Modules, vocab: steering.Vocabulary, accelerator: Accelerator) -> None:
    """One optimizer step of every active run: ``grad_accum`` micro-batches of Eq. 10, then AdamW."""
    accum = active[0].config.grad_accum
    logged = [[] for _ in active]
    for _ in range(accum):
        batches = [_sample_batch(run, modules.components, vocab) for run in active]
        predictions = _predict(active, batches, modules, vocab)
        objectives = [_objective(run, batch, prediction, ids, modules)
                      for run, batch, (prediction, ids) in zip(active, batches, predictions)]
        # Each run's objective depends only on its own vectors: one backward gives each its own gradient.
        accelerator.backward(sum(o.total for o in objectives) / accum)
        for log, o in zip(logged, objectives):
            log.append(torch.stack([o.total, o.denoise, o.control]).detach())
    # One host sync per step for every run's numbers (a sync per value stalls the GPU).
    values = torch.stack([torch.stack(log).mean(0) for log in logged]).tolist()
    for run, (loss, denoise, control) in zip(active, values):
        _optimizer_step(run, loss, denoise, control, accelerator)


def _optimizer_step(run: Run, loss: float, denoise: float, control: float, accelerator: Accelerator) -> None:
    """AdamW on the run's vectors, or stop the run with a message if its loss is no longer finite."""
    if not all(map(math.isfinite, (loss, denoise, control))):
        kept = ("The last checkpoint is kept; --resume (resume=True) continues from it with the same config."
                if (run.folder / "checkpoint.pt").is_file() else
                "No checkpoint was written yet: delete the folder before retrying with a new config.")
        run.failed = (f"loss became {loss} at step {run.step + 1} (denoise {denoise:.4g}, control {control:.4g}); "
                      f"lower learning_rate or use mixed_precision='no'. {kept}")
        run.optimizer.zero_grad(set_to_none=True)
        return
    if accelerator.num_processes > 1:
        run.vectors.grad = accelerator.reduce(run.vectors.grad, reduction="mean")
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    run.logged = {"step": run.step, "loss": loss, "denoise": denoise, "control": control,
                  "lr": run.optimizer.param_groups[0]["lr"]}


def _sample_vectors(run: Run) -> torch.Tensor:
    """[B, 2, D]: <r> and <inv> per sample (a run without <inv> never writes it, so <r> fills the slot)."""
    vecs = run.vectors if run.vectors.shape[0] == 2 else torch.cat([run.vectors, run.vectors.detach()])
    return vecs.unsqueeze(0).expand(run.config.batch_size, -1, -1)


def _suppress_latent(config: TrainConfig, noisy: torch.Tensor) -> torch.Tensor:
    """Eq. 8 placed on x_t (``hf_suppress="latent"``), else x_t unchanged.

    σ is ``hf_sigma_latent``, in latent cells: the image σ scaled down (2 px -> 0.25 cells at SD 1.5)
    is a 3-tap near-identity, because what it removes is finer than a cell (docs/decisions.md)."""
    if config.hf_suppress != "latent":
        return noisy
    return gaussian_lowpass(noisy, config.hf_sigma_latent, config.hf_kernel_size or None)


