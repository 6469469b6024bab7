"""Loading a Stable Diffusion-shaped model: SD 1.5 from the hub or a folder, or the embedded world.

This is the loading code users run on SD 1.5: each component is read with diffusers' or
transformers' ``from_pretrained`` from a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``)
or a local folder in the diffusers layout. The embedded relation world and the tiny test pipelines
go through the very same calls. A model either has a ``vae/`` (latent diffusion, as SD 1.5) or
declares pixel space in ``invrev.json`` (the world model: images are folded 2×2 into channels).
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # diffusers and transformers load on first use: seconds a notebook that only reads records saves
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

from invrev.paths import REPO_ROOT, WORLD_MODEL  # noqa: F401  (re-exported: models is where loaders look)

# ReVersion's inference (SD 1.5's shipped scheduler, 50 steps, guidance 7.5): what a model without
# recommended settings of its own in ``invrev.json`` is sampled with.
# ``guidance_rescale`` (Lin et al. 2024, as diffusers' pipelines) is 0, off, unless a model asks.
SD15_SAMPLING = {"guidance": 7.5, "steps": 50, "scheduler": None, "guidance_rescale": 0.0}


class ModelError(RuntimeError):
    """The model could not be found or loaded; the message says what to do."""


def sampling_settings(model: str) -> dict:
    """The sampling settings a model recommends: ``invrev.json``'s "sampling" (guidance, steps,
    scheduler class name or None for the shipped one) over :data:`SD15_SAMPLING`."""
    source = resolve_model(model)
    meta = Path(source) / "invrev.json"
    own = json.loads(meta.read_text()).get("sampling", {}) if meta.is_file() else {}
    unknown = set(own) - set(SD15_SAMPLING)
    if unknown:
        raise ModelError(f"{meta}: unknown sampling setting(s) {sorted(unknown)}; known: {sorted(SD15_SAMPLING)}")
    return {**SD15_SAMPLING, **own}


def recipe_of(model: str) -> str:
    """The training recipe a model asks for: ``invrev.json``'s "recipe" ("world" for the world
    model and copies of it), else "sd15" (ReVersion's published run)."""
    source = resolve_model(model)
    meta = Path(source) / "invrev.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        return info.get("recipe", "world" if "world_model" in info else "sd15")
    return "sd15"


class VaeCodec:
    """Latent space of an AutoencoderKL, scaled by its ``scaling_factor`` as SD 1.5 expects."""

    def __init__(self, vae: AutoencoderKL):
        self.vae = vae
        self.scale = vae.config.scaling_factor
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)

    def encode_dist(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of the scaled posterior for images in [-1, 1]: cached once, sampled per step."""
        dist = self.vae.encode(images.to(self.vae.dtype)).latent_dist
        return dist.mean.float() * self.scale, dist.std.float() * self.scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents.to(self.vae.dtype) / self.scale).sample.float().clamp(-1, 1)


class PixelCodec:
    """Pixel space folded ``factor``×``factor`` into channels: cheap, exact and invertible."""

    def __init__(self, factor: int):
        self.factor = factor
        self.downsample = factor

    def encode_dist(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = F.pixel_unshuffle(images.float(), self.factor)
        return mean, torch.zeros_like(mean)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(latents.float(), self.factor).clamp(-1, 1)


@dataclass
class Components:
    """The frozen parts of a text-to-image diffusion model, plus where they came from."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    noise_scheduler: DDPMScheduler  # training: the forward process
    scheduler_config: dict  # inference: as shipped (PNDM for SD 1.5, DDIM for the world)
    codec: VaeCodec | PixelCodec
    model_id: str
    revision: str
    sampling: dict = field(default_factory=lambda: dict(SD15_SAMPLING))  # the model's recommended settings
    _copies: dict = field(default_factory=dict, repr=False)

    def compute_modules(self, device: torch.device, dtype: torch.dtype):
        """(text_encoder, unet) for training in ``dtype`` on ``device``.

        fp32 moves the originals; a lower precision gets a cached copy, so the fp32 weights (and the
        token table the vectors start from) are never rounded for later runs or generation.
        """
        if dtype == torch.float32:
            self.text_encoder.to(device)
            self.unet.to(device)
            return self.text_encoder, self.unet
        key = (str(device), dtype, self.text_encoder.get_input_embeddings().num_embeddings)
        if key not in self._copies:
            self._copies[key] = (copy.deepcopy(self.text_encoder).to(device, dtype),
                                 copy.deepcopy(self.unet).to(device, dtype))
        return self._copies[key]

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Components":
        modules = [self.text_encoder, self.unet] + ([self.codec.vae] if isinstance(self.codec, VaeCodec) else [])
        for module in modules:
            module.to(device) if dtype is None else module.to(device=device, dtype=dtype)
        return self

    def inference_scheduler(self, name: str | None = None):
        """The shipped scheduler, or another diffusers scheduler class by name (e.g. "DDIMScheduler")."""
        import diffusers
        from diffusers.schedulers import KarrasDiffusionSchedulers

        config = dict(self.scheduler_config)
        name = name or config["_class_name"]
        allowed = {s.name for s in KarrasDiffusionSchedulers} | {"DDIMScheduler", "DDPMScheduler"}
        if name not in allowed:
            raise ValueError(f"scheduler {name!r} is not a diffusers text-to-image scheduler; try one of {sorted(allowed)}")
        cls = getattr(diffusers, name)
        if config.get("clip_sample") and name != config["_class_name"] and "thresholding" in inspect.signature(cls.__init__).parameters:
            # A model sampled with its x0 clipped (pixel space) keeps that under solvers that
            # threshold instead: dynamic thresholding capped at the clip range is the same clip.
            config.update(thresholding=True, sample_max_value=config.get("clip_sample_range", 1.0))
        return cls.from_config(config)


def resolve_model(model: str) -> str:
    """A local folder (relative to the working directory or to the repository) or a hub id."""
    path = Path(model).expanduser()
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_dir():
            return str(candidate.resolve())
    if path.is_absolute() or model.startswith(".") or model.count("/") != 1:
        raise ModelError(
            f"model folder {model!r} not found (looked in {Path.cwd()} and {REPO_ROOT}); "
            f"give a folder in the diffusers layout or a hub id such as 'stable-diffusion-v1-5/stable-diffusion-v1-5'"
        )
    return model


def load_components(model: str = WORLD_MODEL, revision: str = "main") -> Components:
    """Load tokenizer, text encoder, UNet, schedulers and codec, frozen and in eval mode (on the CPU)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = resolve_model(model)
    local = Path(source).is_dir()
    kwargs = {} if local else {"revision": revision}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)
        # fp32 masters whatever the files hold; the trainer casts to bf16 on a GPU.
        text_encoder = CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=torch.float32, **kwargs)
        unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=torch.float32, **kwargs)
        scheduler_config = dict(DDPMScheduler.load_config(source, subfolder="scheduler", **kwargs))
        codec = _load_codec(source, local, kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(
            f"could not load model {model!r}: {err}\nWithout internet access, download the model on another "
            f"machine (e.g. `hf download {model}`) and pass the local folder."
        ) from err
    for module in (text_encoder, unet) + ((codec.vae,) if isinstance(codec, VaeCodec) else ()):
        module.requires_grad_(False)
        module.eval()
    noise_scheduler = DDPMScheduler.from_config(scheduler_config)
    sampling = sampling_settings(model) if local else dict(SD15_SAMPLING)
    return Components(tokenizer, text_encoder, unet, noise_scheduler, scheduler_config, codec, model, revision, sampling)


def quiet_loading() -> None:
    """No widget progress bars from diffusers or transformers (executed notebooks keep them as noise)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


@functools.lru_cache(maxsize=2)
def load_components_cached(model: str = WORLD_MODEL, revision: str = "main") -> Components:
    """:func:`load_components`, loaded once per process (notebooks and batches run many inversions)."""
    return load_components(model, revision)


def _load_codec(source: str, local: bool, kwargs: dict) -> VaeCodec | PixelCodec:
    meta = Path(source) / "invrev.json"
    if local and meta.is_file():
        latent = json.loads(meta.read_text()).get("latent", {})
        if latent.get("type") == "pixel":
            return PixelCodec(int(latent["factor"]))
    if local and not (Path(source) / "vae").is_dir():
        raise ModelError(f"{source} has no vae/ folder and no pixel-space invrev.json: it is not a text-to-image model")
    from diffusers import AutoencoderKL

    return VaeCodec(AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32, **kwargs))
