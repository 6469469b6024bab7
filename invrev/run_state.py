"""One inversion inside the training loop: its state, and its folder as the loop keeps it.

:func:`open_run` checks the folder and opens a run fresh or from its checkpoint; :func:`after_step`
appends to ``log.csv`` and checkpoints; :func:`finish` writes the learned tokens, the manifest and
``done.json``. A resumed run reaches the result it would have reached uninterrupted.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator

from invrev import embeddings, runs, sampling, steering
from invrev.config import TrainConfig
from invrev.data import ExemplarSet, to_tensor
from invrev.filters import gaussian_lowpass
from invrev.models import Components

LOG_FIELDS = ("step", "loss", "denoise", "control", "lr", "seconds")


class TrainingError(RuntimeError):
    """A run cannot start or went wrong; its folder keeps the last good checkpoint."""


@dataclass
class Run:
    """The state of one inversion inside a (possibly joint) training loop."""

    config: TrainConfig
    folder: Path
    exemplars: ExemplarSet
    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    words: steering.RunWords
    vectors: torch.nn.Parameter  # [1 or 2, D]: <r>, and <inv> when the inverse expansion is on
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    probs: torch.Tensor | None
    images: torch.Tensor | None = None  # the exemplars, kept when the latents are not cached
    step: int = 0
    seconds: float = 0.0
    failed: str | None = None
    finished_before: bool = False  # resumed after done.json: its record is left as it was
    logged: dict = field(default_factory=dict)  # the last step's losses and learning rate

    @property
    def active(self) -> bool:
        return self.failed is None and self.step < self.config.steps


def check_folder(config: TrainConfig, folder: Path, resume: bool) -> None:
    """Refuse a folder that holds another run, or that cannot be written, naming the fix."""
    if folder.exists() and not folder.is_dir():
        raise TrainingError(f"{folder} is a file, not a run folder; choose another --out")
    if folder.is_dir() and any(folder.iterdir()):
        checkpoint, done, saved = folder / "checkpoint.pt", folder / "done.json", folder / "config.json"
        differs = saved.is_file() and saved.read_text().strip() != config.to_json().strip()
        if not checkpoint.is_file() and not done.is_file() and (differs or not resume):
            raise TrainingError(f"{folder} already holds a run that stopped before its first checkpoint, so nothing "
                                f"learned is kept there: delete that folder to start over, or choose a new folder")
        if not resume:
            what = "a finished run" if done.is_file() else "an interrupted run"
            raise TrainingError(f"{folder} already holds {what}; it is never overwritten: choose a new folder "
                                f"(or seed){'' if done.is_file() else ', or continue it with --resume (resume=True)'}")
        if differs:
            raise TrainingError(f"{folder} holds a run with a different config.json; resume it with that config or use a new folder")
        return
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    try:
        if not ancestor.is_dir():
            raise NotADirectoryError(0, "not a folder")
        tempfile.TemporaryFile(dir=ancestor).close()
    except OSError as err:
        raise TrainingError(f"cannot write the run folder {folder}: {ancestor} is not a writable folder "
                            f"({err.strerror or err}); choose another --out or make it writable") from None


def open_run(config: TrainConfig, folder: Path, exemplars: ExemplarSet, components: Components,
              vocab: steering.Vocabulary, accelerator: Accelerator, resume: bool, *, fused_adamw: bool = True,
              cache_latents: bool = True) -> Run:
    """A run of ``config`` in ``folder``: fresh (writing config.json and the log's header), or, with
    ``resume``, from its checkpoint. Without ``cache_latents`` it keeps the exemplar images, which
    the trainer then encodes every micro-batch."""
    checkpoint = folder / "checkpoint.pt"
    run_words = vocab.for_config(config)
    mean, std = encode_exemplars(config, exemplars, components, accelerator)
    init_words = [config.init_word, config.inverse_init_word][: 2 if config.inverse else 1]
    init = torch.stack([embeddings.word_vector(components.tokenizer, components.text_encoder, w) for w in init_words])
    vectors = torch.nn.Parameter(init.to(accelerator.device))
    optimizer = torch.optim.AdamW(
        [vectors], lr=config.effective_lr, betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay, eps=config.adam_epsilon,
        fused=accelerator.device.type == "cuda" and fused_adamw,
    )
    generator = torch.Generator().manual_seed(config.seed + 1000 * accelerator.process_index)
    T = components.noise_scheduler.config.num_train_timesteps
    probs = sampling.relation_focal_probs(T, config.importance_alpha) if config.importance_sampling else None
    run = Run(config, folder, exemplars, mean, std, run_words, vectors, optimizer, generator, probs,
              images=None if cache_latents else exemplar_images(config, exemplars, accelerator.device),
              finished_before=resume and (folder / "done.json").is_file())
    if resume and checkpoint.is_file():
        load_checkpoint(run, checkpoint)
    elif accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_text(folder / "config.json", config.to_json() + "\n")
        with open(folder / "log.csv", "w", newline="") as handle:
            csv.writer(handle).writerow(LOG_FIELDS)
    return run


@torch.no_grad()
def encode_exemplars(config: TrainConfig, exemplars: ExemplarSet, components: Components, accelerator: Accelerator):
    """Encode the exemplars once (SPEC §6: re-encoding every step is most of the reference's FLOPs).

    The posterior's mean and std are kept and a fresh latent is sampled each step, so the training
    distribution is the reference's.
    """
    if getattr(components.codec, "vae", None) is not None:
        components.codec.vae.to(accelerator.device)
    return components.codec.encode_dist(exemplar_images(config, exemplars, accelerator.device))


def exemplar_images(config: TrainConfig, exemplars: ExemplarSet, device: torch.device) -> torch.Tensor:
    """x_0 as the model sees it: with ``hf_suppress="image"`` through the low-pass H = h * x (Eq. 8)."""
    images = to_tensor(exemplars.images, config.resolution).to(device)
    if config.hf_suppress == "image":
        images = gaussian_lowpass(images, config.hf_sigma, config.hf_kernel_size or None)
    return images


def after_step(run: Run, accelerator: Accelerator) -> None:
    if not accelerator.is_main_process:
        return
    row = {**run.logged, "seconds": round(run.seconds, 3)}
    if run.step % run.config.log_every == 0 or run.step == run.config.steps:
        with open(run.folder / "log.csv", "a", newline="") as handle:
            csv.DictWriter(handle, LOG_FIELDS).writerow({k: row[k] for k in LOG_FIELDS})
    if run.step % run.config.checkpoint_every == 0 or run.step == run.config.steps:
        save_checkpoint(run)


def save_checkpoint(run: Run) -> None:
    runs.atomic_torch_save(run.folder / "checkpoint.pt", {
        "step": run.step,
        "seconds": run.seconds,
        "vectors": run.vectors.detach().cpu(),
        "optimizer": run.optimizer.state_dict(),
        "generator": run.generator.get_state(),
        "model_fingerprint": runs.model_fingerprint(run.config.model, run.config.revision),
    })


def load_checkpoint(run: Run, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved, now = state.get("model_fingerprint"), runs.model_fingerprint(run.config.model, run.config.revision)
    if saved is not None and saved != now:
        raise TrainingError(f"{run.folder} was trained on another model than {run.config.model!r} is now "
                            f"({saved}, now {now}); move that folder away or train into a new runs root")
    with torch.no_grad():
        run.vectors.copy_(state["vectors"].to(run.vectors.device))
    run.optimizer.load_state_dict(state["optimizer"])
    run.generator.set_state(state["generator"])
    run.step, run.seconds = state["step"], state["seconds"]
    truncate_log(run.folder / "log.csv", run.step)


def truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint: the resumed run writes them again."""
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def finish(run: Run, started: str, accelerator: Accelerator, dtype: torch.dtype) -> None:
    config = run.config
    learned = {}
    if config.train:
        names = [config.placeholder, config.inverse_placeholder][: run.vectors.shape[0]]
        learned = {n: v for n, v in zip(names, run.vectors.detach().cpu())}
        embeddings.save_learned(run.folder / "learned", learned)
    else:
        run.folder.mkdir(parents=True, exist_ok=True)
    runs.write_manifest(
        run.folder,
        relation=config.relation,
        variant=config.variant,
        seed=config.seed,
        model={"id": config.model, "revision": config.revision},
        device=runs.device_name(accelerator.device),
        processes=accelerator.num_processes,
        compute_dtype=str(dtype).removeprefix("torch."),
        data={"folder": str(config.exemplars), "sha256": run.exemplars.checksums},
        samples=config.samples if config.train else 0,
        train_seconds=round(run.seconds, 2),
        seconds_per_step=round(run.seconds / max(config.steps, 1), 4) if config.train else 0.0,
        started=started,
        finished=runs.timestamp(),
        learned={k: embeddings.file_name(k) for k in learned},
    )
    runs.atomic_write_json(run.folder / "done.json", {"steps": run.step if config.train else 0,
                                                      "model_fingerprint": runs.model_fingerprint(config.model, config.revision)})
