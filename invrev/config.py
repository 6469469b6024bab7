"""Training configuration: frozen, strict, with the published recipe as defaults.

Every default names its source. "ReVersion" means the command in ReVersion's README (its argparse
defaults switch its own steer loss and importance sampling off; those are *not* our defaults).
"Paper" means Zhang et al. 2024 (Inv-ReVersion). "Ours" marks a decision the paper leaves open;
the reason stands beside it and in ``docs/decisions.md``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from invrev.paths import WORLD_MODEL

SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"

VARIANTS: dict[str, dict[str, Any]] = {
    # Paper Table 1: SD with the relation written in words; nothing is trained.
    "sd": {"train": False, "steer": "none", "importance_sampling": False, "inverse": False, "hf_suppress": "off",
           "word_lists": "invrev"},
    # Gal et al.: denoising loss only, uniform timesteps.
    "textual_inversion": {"train": True, "steer": "none", "importance_sampling": False, "inverse": False,
                          "hf_suppress": "off", "word_lists": "invrev"},
    # Huang et al.: preposition steer loss + relation-focal importance sampling, with its own word lists.
    "reversion": {"train": True, "steer": "prepositions", "importance_sampling": True, "inverse": False,
                  "hf_suppress": "off", "word_lists": "reversion"},
    # Paper §3: all three components on top of importance sampling.
    "inv_reversion": {"train": True, "steer": "pos_weighted", "importance_sampling": True, "inverse": True,
                      "hf_suppress": "image", "word_lists": "invrev"},
    # Paper Table 2 ablations: inv_reversion minus one component each.
    "no_inverse": {"train": True, "steer": "pos_weighted", "importance_sampling": True, "inverse": False,
                   "hf_suppress": "image", "word_lists": "invrev"},
    "no_pos_weight": {"train": True, "steer": "prepositions", "importance_sampling": True, "inverse": True,
                      "hf_suppress": "image", "word_lists": "invrev"},
    "no_hf": {"train": True, "steer": "pos_weighted", "importance_sampling": True, "inverse": True,
              "hf_suppress": "off", "word_lists": "invrev"},
}

# The four of Table 1 and the four of Table 2, in the paper's column order.
TABLE1 = ("sd", "textual_inversion", "reversion", "inv_reversion")
TABLE2 = ("no_inverse", "no_pos_weight", "no_hf", "inv_reversion")

_CHOICES = {
    "variant": tuple(VARIANTS),
    "steer": ("none", "prepositions", "pos_weighted"),
    "negatives": ("caption", "vocab"),
    "hf_suppress": ("image", "latent", "off"),
    "mixed_precision": ("auto", "no", "bf16"),
    "word_lists": ("invrev", "reversion"),
}

# What ReVersion's train.py and diffusers' textual-inversion example call our keys (None: no key here).
ALIASES = {
    "max_train_steps": "steps", "train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler": None, "adam_weight_decay": "weight_decay", "placeholder_token": "placeholder",
    "initializer_token": "init_word", "steer_loss_weight": "lambda_control", "denoise_loss_weight": "lambda_denoise",
    "scaled_cosine_alpha": "importance_alpha", "train_data_dir": "exemplars", "checkpointing_steps": "checkpoint_every",
    "pretrained_model_name_or_path": "model", "num_train_epochs": "steps",
}

# The tokenizer's own tokens: a placeholder named like one trains the padding row.
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key and the fix."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One relation inversion run. Build with :meth:`from_params` or :func:`make_config`."""

    exemplars: str  # folder in the ReVersion layout: <root>/<relation>/{0.jpg,..., text.json}
    variant: str = "inv_reversion"
    model: str = SD15  # Paper §4: SD 1.5
    revision: str = "main"
    seed: int = 2023  # ReVersion README
    train: bool = True
    steps: int = 3000  # ReVersion README: max_train_steps
    batch_size: int = 2  # ReVersion README: train_batch_size
    grad_accum: int = 4  # ReVersion README: gradient_accumulation_steps (effective batch 8)
    learning_rate: float = 2.5e-4  # ReVersion README: constant, no warm-up (the only schedule, so no key)
    scale_lr: bool = True  # ReVersion README: lr x batch x accumulation = 2e-3
    adam_beta1: float = 0.9  # ReVersion (diffusers textual-inversion defaults)
    adam_beta2: float = 0.999
    weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    resolution: int = 512  # ReVersion README
    mixed_precision: str = "auto"  # Ours: bf16 on a GPU, fp32 on the CPU; ReVersion trains in fp32. No fp16 (see below)
    placeholder: str = "<r>"  # lower-case: transformers 5 lower-cases added tokens
    inverse_placeholder: str = "<inv>"
    init_word: str = "and"  # ReVersion README: initializer_token
    inverse_init_word: str = "reverse"  # Ours: the paper publishes none; "reverse" says what <inv> does
    relation_words: str = ""  # the relation in words, for the `sd` variant; "" = folder name, "_" -> " "
    steer: str = "pos_weighted"
    num_positives: int = 4  # ReVersion: 4 prepositions sampled per example
    temperature: float = 0.07  # ReVersion: gamma
    lambda_denoise: float = 1.0  # Paper Eq. 10 (no value given; 1 as in ReVersion)
    lambda_control: float = 0.01  # ReVersion steer weight (the paper gives none)
    lambda_verb: float = 0.5  # Ours: the paper gives none; equal weight unless a relation says otherwise
    negatives: str = "caption"  # ReVersion's code; "vocab" is the paper's wording (SPEC §3)
    word_lists: str = "invrev"  # "reversion": ReVersion's prepositions and stop words (its variant); see words.py
    num_vocab_negatives: int = 64  # Ours, for negatives="vocab"
    importance_sampling: bool = True
    importance_alpha: float = 0.5  # ReVersion README
    inverse: bool = True
    p_inverse: float = 0.5  # Ours: the paper says the expansion costs nothing, so it replaces, not doubles
    hf_suppress: str = "image"  # Paper §3.4 and Fig. 4: the filter acts on the exemplar images
    hf_sigma: float = 2.0  # Ours, in pixels of the training resolution; see notebook 01
    hf_sigma_latent: float = 1.0  # Ours, for hf_suppress="latent": in latent cells (8 px of SD 1.5); see decisions
    hf_kernel_size: int = 0  # 0 = 2*ceil(3*sigma)+1
    checkpoint_every: int = 500  # Ours
    log_every: int = 1

    def __post_init__(self) -> None:
        if self.mixed_precision == "fp16":
            raise ConfigError("mixed_precision='fp16' is not supported: fp16 gradients need loss scaling, which this "
                              "trainer does not do; use 'bf16' (a GPU that has it) or 'no'")
        for key, allowed in _CHOICES.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key}={getattr(self, key)!r} is not one of {list(allowed)}")
        self._check_variant()
        self._check_placeholders()
        self._check_numbers()
        if not self.exemplars:
            raise ConfigError("exemplars is empty: give the folder of one relation (with text.json)")

    def _check_variant(self) -> None:
        preset = VARIANTS[self.variant]
        differ = {k: v for k, v in preset.items() if getattr(self, k) != v
                  and not (k == "hf_suppress" and v != "off" and self.hf_suppress != "off")}
        if differ:
            wanted = ", ".join(f"{k}={v!r}" for k, v in differ.items())
            got = ", ".join(f"{k}={getattr(self, k)!r}" for k in differ)
            raise ConfigError(f"variant={self.variant!r} means {wanted}, but this config has {got}, so its label "
                              f"would be wrong: choose the variant with those settings (config.VARIANTS), or leave "
                              f"the keys out and let the variant set them (from_params, make_config and "
                              f".replace(variant=...) do)")

    def _check_placeholders(self) -> None:
        for key in ("placeholder", "inverse_placeholder"):
            token = getattr(self, key)
            if not token or token != token.strip() or any(ch.isspace() for ch in token):
                raise ConfigError(f"{key}={token!r} must be one word without spaces, e.g. '<r>'")
            if token != token.lower():
                raise ConfigError(f"{key} {token!r} has capitals: transformers 5 lower-cases added tokens, "
                                  f"use {token.lower()!r}")
            if token in SPECIAL_TOKENS:
                raise ConfigError(f"{key}={token!r} is the tokenizer's own special token (it pads every prompt): "
                                  f"training it would change every prompt; use a new token such as '<r>'")
        if token_file_name(self.placeholder) == token_file_name(self.inverse_placeholder):
            raise ConfigError(f"placeholder={self.placeholder!r} and inverse_placeholder={self.inverse_placeholder!r} "
                              f"would share the file learned/{token_file_name(self.placeholder)} (one would overwrite "
                              f"the other); give them different names, e.g. '<r>' and '<inv>'")
        for key in ("init_word", "inverse_init_word"):
            if not getattr(self, key).strip():
                raise ConfigError(f"{key} is empty: give a word of the vocabulary, e.g. 'and'")

    def _check_numbers(self) -> None:
        at_least = {"batch_size": 1, "grad_accum": 1, "resolution": 1, "num_positives": 1, "checkpoint_every": 1,
                    "num_vocab_negatives": 1, "log_every": 1, "steps": 1 if self.train else 0, "hf_kernel_size": 0}
        for key, low in at_least.items():
            if getattr(self, key) < low:
                why = " (a run that trains needs at least one step)" if key == "steps" else ""
                raise ConfigError(f"{key}={getattr(self, key)} must be at least {low}{why}")
        if self.hf_kernel_size and self.hf_kernel_size % 2 == 0:
            raise ConfigError(f"hf_kernel_size={self.hf_kernel_size} must be odd (or 0 for 2*ceil(3*sigma)+1)")
        ranges = {  # key: (low, high, low included, high included)
            "learning_rate": (0.0, math.inf, False, False), "adam_epsilon": (0.0, math.inf, False, False),
            "temperature": (0.0, math.inf, False, False), "hf_sigma": (0.0, math.inf, False, False),
            "hf_sigma_latent": (0.0, math.inf, False, False), "weight_decay": (0.0, math.inf, True, False),
            "lambda_denoise": (0.0, math.inf, True, False), "lambda_control": (0.0, math.inf, True, False),
            "adam_beta1": (0.0, 1.0, True, False), "adam_beta2": (0.0, 1.0, True, False),
            "importance_alpha": (0.0, 1.0, True, False), "p_inverse": (0.0, 1.0, True, True),
            "lambda_verb": (0.0, 1.0, True, True),
        }
        for key, (low, high, low_in, high_in) in ranges.items():
            value = getattr(self, key)
            inside = (value >= low if low_in else value > low) and (value <= high if high_in else value < high)
            if not (math.isfinite(value) and inside):
                interval = f"{'[' if low_in else '('}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{']' if high_in else ')'}"
                raise ConfigError(f"{key}={value!r} must be a finite number in {interval}{_WHY.get(key, '')}")
        if self.effective_lr > 3.4e38:  # float32's largest: the optimiser could not even take a step
            raise ConfigError(f"learning_rate={self.learning_rate!r} scales to {self.effective_lr:g}, beyond float32; "
                              f"ReVersion's is 2.5e-4")

    @property
    def relation(self) -> str:
        return Path(self.exemplars).name

    @property
    def words(self) -> str:
        """The relation in words, used by the `sd` variant in place of `<r>`."""
        return self.relation_words or self.relation.replace("_", " ")

    @property
    def effective_lr(self) -> float:
        scale = self.batch_size * self.grad_accum if self.scale_lr else 1
        return self.learning_rate * scale

    @property
    def samples(self) -> int:
        return self.steps * self.batch_size * self.grad_accum

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "TrainConfig":
        """Build from a flat mapping (a papermill parameters cell, a JSON file, CLI options).

        The variant's preset is applied first and explicit keys override it. Unknown keys and wrong
        types raise :class:`ConfigError` naming the key: papermill only *warns* on unknown
        parameters, so a typo would otherwise silently train the default.
        """
        params = dict(params)
        _check_keys(cls, params)
        variant = params.get("variant", cls.variant)
        if variant not in VARIANTS:
            raise ConfigError(f"variant={variant!r} is not one of {list(VARIANTS)}")
        merged = {**VARIANTS[variant], **params, "variant": variant}
        return cls(**merged)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with ``changes``; a new ``variant`` brings its settings (explicit changes win)."""
        _check_keys(type(self), changes)
        if "variant" in changes:
            if changes["variant"] not in VARIANTS:
                raise ConfigError(f"variant={changes['variant']!r} is not one of {list(VARIANTS)}")
            changes = {**VARIANTS[changes["variant"]], **changes}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def make_config(exemplars: str | Path, variant: str = "inv_reversion", recipe: str = "sd15", **overrides: Any) -> TrainConfig:
    """Config for ``variant`` on a recipe (``sd15``: the published run; ``world``: the embedded model)."""
    if recipe not in RECIPES:
        raise ConfigError(f"recipe={recipe!r} is not one of {list(RECIPES)}")
    return TrainConfig.from_params({**RECIPES[recipe], "exemplars": str(exemplars), "variant": variant, **overrides})


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["steps=100", "variant=no_hf"]`` -> ``{"steps": 100, "variant": "no_hf"}`` (JSON values, else strings)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set steps=100")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def load_config(path: str | Path) -> TrainConfig:
    """Read a ``config.json`` written by a run (strict, like :meth:`TrainConfig.from_params`)."""
    path = Path(path)
    try:
        params = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err}); fix the file or delete it to start over") from err
    return TrainConfig.from_params(params)


def token_file_name(token: str) -> str:
    """ASCII file name for a token: "<r>" -> "r.safetensors"."""
    stem = re.sub(r"[^a-z0-9_-]+", "", token.lower()) or "token"
    return f"{stem}.safetensors"


_WHY = {
    "learning_rate": " (as given, before scale_lr multiplies it by batch_size x grad_accum; ReVersion's is 2.5e-4)",
    "temperature": " (the steer loss divides by it)",
    "importance_alpha": " (at 1 the density of t = 0 is zero)",
}


def _check_keys(cls: type, params: Mapping[str, Any]) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in params.items():
        if key in ALIASES and ALIASES[key] is None:
            raise ConfigError(f"unknown config key {key!r}: the learning rate is constant, as in ReVersion's README run")
        if key in ALIASES:
            raise ConfigError(f"unknown config key {key!r}: that is ReVersion's / diffusers' name; here it is "
                              f"{ALIASES[key]!r}" + (" (optimizer steps, not epochs)" if key == "num_train_epochs" else ""))
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(fields)}"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        if not _type_ok(value, hints[key]):
            raise ConfigError(
                f"config key {key!r} must be {_type_name(hints[key])}, got {type(value).__name__} {value!r}"
            )


def _type_ok(value: Any, hint: Any) -> bool:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", str(hint))


# The embedded relation world (data/world): 32 px pixel-space model, so the schedule is shorter and
# the batch is taken at once. Each value is ours; docs/decisions.md gives the measurements behind it.
RECIPES: dict[str, dict[str, Any]] = {
    "sd15": {},
    "world": {
        "model": WORLD_MODEL,
        "revision": "local",
        "resolution": 32,
        "steps": 150,  # the control loss plateaus by step 100; the denoising loss shows no trend over 300
        "batch_size": 8,
        "grad_accum": 1,
        "learning_rate": 2.5e-3,  # x8 = 2e-2: a 32 px world converges in 10x fewer steps at 10x the step size
        "hf_sigma": 0.8,  # about the 2 px of 512 px images scaled to 32 px shapes of ~10 px
        "hf_sigma_latent": 0.8,  # a pixel-space model: its latent is the image, so the same σ
        "checkpoint_every": 100,
    },
}
