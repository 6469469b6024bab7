"""The training loop: one readable loop over K runs that share one frozen model.

A single inversion is K = 1. Each run keeps its own exemplars, vectors, AdamW state and random
stream; every step the samples of all active runs go through the text encoder and UNet as one batch,
and each run's loss depends only on its own vectors, so its gradients (and result) are those it
would get alone. Under ``accelerate launch`` on several GPUs each process draws its own samples
(seed + 1000·rank) and the vectors' gradients are averaged before each step (data parallel).
"""

from __future__ import annotations

import csv
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from invrev import embeddings, losses, runs, sampling, text, words
from invrev.config import TrainConfig
from invrev.data import ExemplarSet, load_exemplars, to_tensor
from invrev.filters import gaussian_lowpass
from invrev.models import Components, load_components_cached

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
    words: "_Words"
    vectors: torch.nn.Parameter  # [1 or 2, D]: <r>, and <inv> when the inverse expansion is on
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    probs: torch.Tensor | None
    step: int = 0
    seconds: float = 0.0
    failed: str | None = None
    finished_before: bool = False  # resumed after done.json: its record is left as it was
    row: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.failed is None and self.step < self.config.steps


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
) -> list[Path]:
    """Train K runs jointly; returns their folders. Raises :class:`TrainingError` if any failed.

    ``resume=True`` continues each run from its last checkpoint and reaches the result it would
    have reached uninterrupted (bit-identical on the CPU). Without it, a folder that already holds a
    run is refused rather than overwritten.
    """
    if len(configs) != len(folders) or not configs:
        raise TrainingError("give one folder per config, and at least one config")
    _check_compatible(configs)
    folders = [Path(f) for f in folders]
    # Everything the user can get wrong is checked before the model loads (minutes for SD 1.5).
    for config, folder in zip(configs, folders):
        _check_folder(config, folder, resume)
    exemplar_sets = [load_exemplars(c.exemplars, c.resolution) for c in configs]
    first = configs[0]
    # Autocast is ours, not accelerate's: its mixed-precision state is process-global, so a second
    # call with another precision would fail. Accelerate gives the device and the processes.
    accelerator = accelerator or Accelerator()
    components = components or load_components_cached(first.model, first.revision)
    vocab = _Vocabulary(components, [first.placeholder, first.inverse_placeholder])
    dtype = _precision(first.mixed_precision, accelerator.device)
    text_encoder, unet = components.compute_modules(accelerator.device, dtype)
    table = components.text_encoder.get_input_embeddings().weight.detach().to(accelerator.device, torch.float32)
    modules = _Modules(components, text_encoder, unet, dtype, table)
    started = runs.timestamp()
    all_runs = [_open_run(c, f, e, components, vocab, accelerator, resume) for c, f, e in zip(configs, folders, exemplar_sets)]
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
                _after_step(run, accelerator)
        bar.update(len(active))
        bar.set_postfix(loss=f"{sum(r.row.get('loss', 0) for r in active) / len(active):.4f}")
    bar.close()
    for run in all_runs:
        if run.failed is None and not run.finished_before and accelerator.is_main_process:
            _finish(run, started, accelerator, dtype)
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
class _Words:
    """One run's word lists as token ids: its positive sets and what is never a caption negative."""

    preposition_ids: torch.Tensor
    verb_ids: torch.Tensor
    excluded: set[int]


class _Vocabulary:
    """Token ids of the word lists, and the pool of "other" words the vocabulary negatives come from."""

    def __init__(self, components: Components, placeholders: list[str]):
        tok = components.tokenizer
        self.placeholders = embeddings.add_placeholders(tok, components.text_encoder, placeholders)
        self.verbs = self._ids(tok, words.load_words("verbs"))
        self.lists = {name: {kind: self._ids(tok, ws) for kind, ws in words.steering_lists(name).items()}
                      for name in ("invrev", "reversion")}
        self.special = set(tok.all_special_ids) | set(self.placeholders)
        listed = set(self.verbs).union(*(ids for lists in self.lists.values() for ids in lists.values()))
        # SPEC §3 "word vectors of other POS": whole words (alphabetic, 2+ letters) in none of the lists.
        self.vocab_pool = torch.tensor(sorted(
            i for t, i in tok.get_vocab().items()
            if t.endswith("</w>") and len(t) > 5 and t[:-4].isalpha() and i not in listed | self.special))
        if not self.verbs or not all(lists["prepositions"] for lists in self.lists.values()) or not len(self.vocab_pool):
            raise TrainingError("no preposition, verb or other word of the word lists is a single token of this tokenizer")

    def for_config(self, config: TrainConfig) -> _Words:
        """ReVersion excludes its stop words and prepositions from the negatives; Inv-ReVersion's
        POS-weighted loss also excludes the verbs, which are its positives too."""
        lists = self.lists[config.word_lists]
        excluded = set(lists["stopwords"]) | set(lists["prepositions"]) | self.special
        if config.steer == "pos_weighted":
            excluded |= set(self.verbs)
        found = {"prepositions": len(lists["prepositions"]), "verbs": len(self.verbs)}
        for kind, n in found.items():
            if config.steer != "none" and config.num_positives > n and (kind == "prepositions" or config.steer == "pos_weighted"):
                raise TrainingError(f"num_positives={config.num_positives} is more than the {n} {kind} of the "
                                    f"{config.word_lists!r} word lists that are one token here; lower it (ReVersion: 4)")
        return _Words(torch.tensor(lists["prepositions"]), torch.tensor(self.verbs), excluded)

    @staticmethod
    def _ids(tokenizer, word_list) -> list[int]:
        ids = [tokenizer(w, add_special_tokens=False).input_ids for w in word_list]
        return [i[0] for i in ids if len(i) == 1 and i[0] != tokenizer.unk_token_id]


def _check_folder(config: TrainConfig, folder: Path, resume: bool) -> None:
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


def _open_run(config: TrainConfig, folder: Path, exemplars: ExemplarSet, components: Components,
              vocab: _Vocabulary, accelerator: Accelerator, resume: bool) -> Run:
    checkpoint = folder / "checkpoint.pt"
    words_ = vocab.for_config(config)
    mean, std = _cache_latents(config, exemplars, components, accelerator)
    init_words = [config.init_word, config.inverse_init_word][: 2 if config.inverse else 1]
    init = torch.stack([embeddings.word_vector(components.tokenizer, components.text_encoder, w) for w in init_words])
    vectors = torch.nn.Parameter(init.to(accelerator.device))
    optimizer = torch.optim.AdamW(
        [vectors], lr=config.effective_lr, betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay, eps=config.adam_epsilon,
        fused=accelerator.device.type == "cuda",
    )
    generator = torch.Generator().manual_seed(config.seed + 1000 * accelerator.process_index)
    T = components.noise_scheduler.config.num_train_timesteps
    probs = sampling.relation_focal_probs(T, config.importance_alpha) if config.importance_sampling else None
    run = Run(config, folder, exemplars, mean, std, words_, vectors, optimizer, generator, probs,
              finished_before=resume and (folder / "done.json").is_file())
    if resume and checkpoint.is_file():
        _load_checkpoint(run, checkpoint)
    elif accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_text(folder / "config.json", config.to_json() + "\n")
        with open(folder / "log.csv", "w", newline="") as handle:
            csv.writer(handle).writerow(LOG_FIELDS)
    return run


@torch.no_grad()
def _cache_latents(config: TrainConfig, exemplars: ExemplarSet, components: Components, accelerator: Accelerator):
    """Encode the exemplars once (SPEC §6: re-encoding every step is most of the reference's FLOPs).

    The posterior's mean and std are kept and a fresh latent is sampled each step, so the training
    distribution is the reference's. With ``hf_suppress="image"`` the filter runs here, on x_0.
    """
    images = to_tensor(exemplars.images, config.resolution).to(accelerator.device)
    if getattr(components.codec, "vae", None) is not None:
        components.codec.vae.to(accelerator.device)
    if config.hf_suppress == "image":
        images = gaussian_lowpass(images, config.hf_sigma, config.hf_kernel_size or None)
    return components.codec.encode_dist(images)


def _draw(run: Run, components: Components, vocab: _Vocabulary):
    """One micro-batch of a run, every random number from the run's own generator in a fixed order.

    Everything is drawn on the CPU so a run's stream is the same on any device and after a resume.
    """
    c, g = run.config, run.generator
    n = run.latent_mean.shape[0]
    idx = torch.randint(n, (c.batch_size,), generator=g)
    captions = text.sample_captions(run.exemplars.templates, idx.tolist(), g, c.placeholder,
                                    c.inverse_placeholder, c.p_inverse if c.inverse else 0.0)
    T = components.noise_scheduler.config.num_train_timesteps
    timesteps = sampling.sample_timesteps(c.batch_size, T, g, run.probs)
    shape = (c.batch_size, *run.latent_mean.shape[1:])
    noise = torch.randn(shape, generator=g)
    posterior = torch.randn(shape, generator=g)
    prep = _choose(len(run.words.preposition_ids), c.batch_size, c.num_positives, g)
    verb = _choose(len(run.words.verb_ids), c.batch_size, c.num_positives, g)
    vocab_neg = vocab.vocab_pool[torch.randint(len(vocab.vocab_pool), (c.batch_size, c.num_vocab_negatives), generator=g)]
    device = run.latent_mean.device
    idx_d = idx.to(device)
    latents = run.latent_mean[idx_d] + run.latent_std[idx_d] * _to(posterior, device)
    return _Draw(captions, latents, _to(noise, device), _to(timesteps, device), prep, verb, vocab_neg)


def _choose(n: int, rows: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, k] indices into a list of n, without replacement within a row (as ReVersion's random.sample)."""
    return torch.rand(rows, n, generator=generator).argsort(dim=1)[:, :k]


@dataclass
class _Draw:
    captions: list[str]
    latents: torch.Tensor
    noise: torch.Tensor
    timesteps: torch.Tensor
    prep: torch.Tensor  # [B, P] indices into the run's preposition list, distinct within a row
    verb: torch.Tensor  # [B, P] indices into the verb list, distinct within a row
    vocab_neg: torch.Tensor  # [B, M] token ids of other words, for negatives="vocab"


def _to(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU -> device without stalling the GPU (pinned memory, asynchronous copy)."""
    if device.type != "cuda":
        return x
    return x.pin_memory().to(device, non_blocking=True)


def _train_step(active: list[Run], modules: _Modules, vocab: _Vocabulary, accelerator: Accelerator) -> None:
    components = modules.components
    accum = active[0].config.grad_accum
    device = accelerator.device
    parts = {id(r): [] for r in active}
    for _ in range(accum):
        draws = [_draw(r, components, vocab) for r in active]
        captions = [cap for d in draws for cap in d.captions]
        latents = torch.cat([d.latents for d in draws])
        noise = torch.cat([d.noise for d in draws])
        timesteps = torch.cat([d.timesteps for d in draws])
        tok = components.tokenizer
        ids_cpu = tok(captions, padding="max_length", truncation=True, max_length=tok.model_max_length,
                      return_tensors="pt").input_ids
        input_ids = _to(ids_cpu, device)
        per_sample = torch.cat([_sample_vectors(r) for r in active])
        noisy = components.noise_scheduler.add_noise(latents, noise, timesteps)
        with torch.autocast(device.type, dtype=modules.dtype, enabled=modules.dtype != torch.float32):
            with embeddings.TokenInjector(modules.text_encoder, vocab.placeholders).use(per_sample):
                states = modules.text_encoder(input_ids)[0]
            unet_in = _suppress_latent(noisy, active)
            pred = modules.unet(unet_in.to(modules.dtype), timesteps, states).sample
        target = losses.diffusion_target(components.noise_scheduler, latents, noise, timesteps)
        per = losses.denoising_loss(pred, target, per_sample=True)
        total, start = 0.0, 0
        for run, draw in zip(active, draws):
            b = run.config.batch_size
            denoise = per[start:start + b].mean()
            control = _control_loss(run, ids_cpu[start:start + b], draw, modules.table, vocab)
            loss = run.config.lambda_denoise * denoise + run.config.lambda_control * control
            parts[id(run)].append(torch.stack([loss, denoise, control]).detach())
            total = total + loss / accum
            start += b
        accelerator.backward(total)
    # One host sync per step for every run's numbers (a sync per value stalls the GPU).
    values = torch.stack([torch.stack(parts[id(r)]).mean(0) for r in active]).tolist()
    for run, (loss, denoise, control) in zip(active, values):
        if not all(map(math.isfinite, (loss, denoise, control))):
            kept = ("The last checkpoint is kept; --resume (resume=True) continues from it with the same config."
                    if (run.folder / "checkpoint.pt").is_file() else
                    "No checkpoint was written yet: delete the folder before retrying with a new config.")
            run.failed = (f"loss became {loss} at step {run.step + 1} (denoise {denoise:.4g}, control {control:.4g}); "
                          f"lower learning_rate or use mixed_precision='no'. {kept}")
            run.optimizer.zero_grad(set_to_none=True)
            continue
        if accelerator.num_processes > 1:
            run.vectors.grad = accelerator.reduce(run.vectors.grad, reduction="mean")
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.step += 1
        run.row = {"step": run.step, "loss": loss, "denoise": denoise, "control": control,
                   "lr": run.optimizer.param_groups[0]["lr"]}


def _sample_vectors(run: Run) -> torch.Tensor:
    """[B, 2, D]: <r> and <inv> per sample (a run without <inv> never writes it, so <r> fills the slot)."""
    vecs = run.vectors if run.vectors.shape[0] == 2 else torch.cat([run.vectors, run.vectors.detach()])
    return vecs.unsqueeze(0).expand(run.config.batch_size, -1, -1)


def _suppress_latent(noisy: torch.Tensor, active: list[Run]) -> torch.Tensor:
    """Eq. 8 placed on x_t (``hf_suppress="latent"``): filter each run's rows that ask for it.

    σ is ``hf_sigma_latent``, in latent cells: the image σ scaled down (2 px -> 0.25 cells at SD 1.5)
    is a 3-tap near-identity, because what it removes is finer than a cell (docs/decisions.md)."""
    if all(r.config.hf_suppress != "latent" for r in active):
        return noisy
    parts, start = [], 0
    for run in active:
        chunk = noisy[start:start + run.config.batch_size]
        if run.config.hf_suppress == "latent":
            chunk = gaussian_lowpass(chunk, run.config.hf_sigma_latent, run.config.hf_kernel_size or None)
        parts.append(chunk)
        start += run.config.batch_size
    return torch.cat(parts)


def _control_loss(run: Run, caption_ids: torch.Tensor, draw: _Draw, table: torch.Tensor, vocab: _Vocabulary) -> torch.Tensor:
    """ReVersion's steer loss or the POS-weighted control loss, one per micro-batch.

    As ReVersion's code (and Eq. 3's one set per iteration): the positives of all the micro-batch's
    examples (each example's drawn without replacement) and the negatives of all its captions are
    pooled into one set each, and ``<r>`` is scored against them once.
    """
    c = run.config
    r = run.vectors[0]
    if c.steer == "none":
        return torch.zeros((), device=r.device)
    negatives = table[_negative_ids(caption_ids, draw.vocab_neg, c, run.words).to(table.device)]
    prepositions = table[run.words.preposition_ids[draw.prep].reshape(-1).to(table.device)]
    if c.steer == "prepositions":
        return losses.steer_loss(r, prepositions, negatives, c.temperature)
    verbs = table[run.words.verb_ids[draw.verb].reshape(-1).to(table.device)]
    return losses.pos_weighted_control_loss(r, verbs, prepositions, negatives, c.lambda_verb, c.temperature)


def _negative_ids(caption_ids: torch.Tensor, vocab_neg: torch.Tensor, config: TrainConfig, words_: _Words) -> torch.Tensor:
    """SPEC §3: the micro-batch's caption tokens that are not excluded (ReVersion's code), or its
    vocabulary draws. Captions with no such token at all fall back to the draws, so the loss stays
    defined (ReVersion's would be 0 there)."""
    if config.negatives == "caption":
        content = [i for ids in caption_ids.tolist() for i in ids if i not in words_.excluded]
        if content:
            return torch.tensor(content)
    return vocab_neg.reshape(-1)


def _after_step(run: Run, accelerator: Accelerator) -> None:
    if not accelerator.is_main_process:
        return
    row = {**run.row, "seconds": round(run.seconds, 3)}
    if run.step % run.config.log_every == 0 or run.step == run.config.steps:
        with open(run.folder / "log.csv", "a", newline="") as handle:
            csv.DictWriter(handle, LOG_FIELDS).writerow({k: row[k] for k in LOG_FIELDS})
    if run.step % run.config.checkpoint_every == 0 or run.step == run.config.steps:
        _save_checkpoint(run)


def _save_checkpoint(run: Run) -> None:
    runs.atomic_torch_save(run.folder / "checkpoint.pt", {
        "step": run.step,
        "seconds": run.seconds,
        "vectors": run.vectors.detach().cpu(),
        "optimizer": run.optimizer.state_dict(),
        "generator": run.generator.get_state(),
        "model_fingerprint": runs.model_fingerprint(run.config.model, run.config.revision),
    })


def _load_checkpoint(run: Run, path: Path) -> None:
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
    _truncate_log(run.folder / "log.csv", run.step)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint: the resumed run writes them again."""
    if not path.is_file():
        return
    with open(path, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _finish(run: Run, started: str, accelerator: Accelerator, dtype: torch.dtype) -> None:
    c = run.config
    learned = {}
    if c.train:
        names = [c.placeholder, c.inverse_placeholder][: run.vectors.shape[0]]
        learned = {n: v for n, v in zip(names, run.vectors.detach().cpu())}
        embeddings.save_learned(run.folder / "learned", learned)
    else:
        run.folder.mkdir(parents=True, exist_ok=True)
    runs.write_manifest(
        run.folder,
        relation=c.relation,
        variant=c.variant,
        seed=c.seed,
        model={"id": c.model, "revision": c.revision},
        device=runs.device_name(accelerator.device),
        processes=accelerator.num_processes,
        compute_dtype=str(dtype).removeprefix("torch."),
        data={"folder": str(c.exemplars), "sha256": run.exemplars.checksums},
        samples=c.samples if c.train else 0,
        train_seconds=round(run.seconds, 2),
        seconds_per_step=round(run.seconds / max(c.steps, 1), 4) if c.train else 0.0,
        started=started,
        finished=runs.timestamp(),
        learned={k: embeddings.file_name(k) for k in learned},
    )
    runs.atomic_write_json(run.folder / "done.json", {"steps": run.step if c.train else 0,
                                                      "model_fingerprint": runs.model_fingerprint(c.model, c.revision)})
