"""Placeholder tokens: adding them, injecting trained vectors, and saving in diffusers' format.

Training never writes the frozen token table. The learned vectors are their own parameters and a
forward hook on the token embedding swaps them in wherever a placeholder id appears. The reference
code trains the whole table and copies every other row back after each step because AdamW's weight
decay touches all of it; here the optimiser only ever holds the new vectors, so every other row stays
bit-identical by construction, the new vectors get exactly the same AdamW update, and K runs can
share one frozen model with K sets of vectors (multi-run training).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class TokenError(ValueError):
    """A placeholder or initial word cannot be used with this tokenizer."""


def add_placeholders(tokenizer, text_encoder, placeholders: list[str]) -> list[int]:
    """Add the placeholders to the tokenizer (if new) and grow the table to match; return their ids."""
    for token in placeholders:
        if token != token.lower():
            raise TokenError(f"placeholder {token!r} has capitals: transformers 5 lower-cases added tokens; use {token.lower()!r}")
    tokenizer.add_tokens([t for t in placeholders if t not in tokenizer.get_vocab()])
    table = text_encoder.get_input_embeddings()
    if len(tokenizer) > table.num_embeddings:
        # New rows are never read during training (the injector overrides them), so no random init.
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return [tokenizer.convert_tokens_to_ids(t) for t in placeholders]


def word_vector(tokenizer, text_encoder, word: str) -> torch.Tensor:
    """The frozen embedding of a word that is a single token (a copy, float32)."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise TokenError(f"initial word {word!r} is {len(ids)} tokens for this tokenizer; choose a single-token word")
    return text_encoder.get_input_embeddings().weight[ids[0]].detach().float().clone()


class TokenInjector:
    """Swap learned vectors into the token embedding's output at the placeholder positions.

    ``vectors`` given to :meth:`use` is [n, D] (one set for the batch) or [B, n, D] (one per sample,
    for multi-run batches), in the order of ``ids``.
    """

    def __init__(self, text_encoder, ids: list[int]):
        self.embedding = text_encoder.get_input_embeddings()
        self.ids = ids
        self._vectors = None

    @contextlib.contextmanager
    def use(self, vectors: torch.Tensor):
        self._vectors = vectors
        handle = self.embedding.register_forward_hook(self._hook)
        try:
            yield
        finally:
            handle.remove()
            self._vectors = None

    def _hook(self, module, args, output):
        input_ids = args[0]
        vectors = self._vectors.to(output.dtype)
        if vectors.ndim == 2:
            vectors = vectors.unsqueeze(0).expand(input_ids.shape[0], -1, -1)
        for k, token_id in enumerate(self.ids):
            output = torch.where((input_ids == token_id).unsqueeze(-1), vectors[:, k].unsqueeze(1), output)
        return output


def file_name(token: str) -> str:
    """ASCII file name for a token: "<r>" -> "r.safetensors"."""
    stem = re.sub(r"[^a-z0-9_-]+", "", token.lower()) or "token"
    return f"{stem}.safetensors"


def save_learned(folder: str | Path, vectors: dict[str, torch.Tensor]) -> list[Path]:
    """One safetensors file per token, ``{"<r>": float32[D]}``: what ``load_textual_inversion`` reads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for token, vector in vectors.items():
        path = folder / file_name(token)
        tmp = path.with_suffix(".tmp")
        save_file({token: vector.detach().float().cpu().contiguous()}, str(tmp))
        tmp.replace(path)
        paths.append(path)
    return paths


def load_learned(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    """Read learned tokens from safetensors files or ReVersion's ``learned_embeds.bin``.

    ``.bin`` files are read with ``weights_only=True``: never unpickle an untrusted file. Keys are
    lower-cased (ReVersion saves ``<R>``; transformers 5 would lower-case it anyway).
    """
    vectors = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no learned embedding file here (expected *.safetensors or learned_embeds.bin)")
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not state:
            raise TokenError(f"{path}: expected a mapping {{token: vector}}, got {type(state).__name__}")
        for token, vector in state.items():
            vectors[token.lower()] = torch.as_tensor(vector).float().reshape(-1)
    return vectors


def use_learned(tokenizer, text_encoder, vectors: dict[str, torch.Tensor]) -> list[int]:
    """Write learned vectors into the token table for generation (as ``load_textual_inversion`` does)."""
    ids = add_placeholders(tokenizer, text_encoder, list(vectors))
    table = text_encoder.get_input_embeddings().weight
    width = table.shape[1]
    with torch.no_grad():
        for token_id, (token, vector) in zip(ids, vectors.items()):
            if vector.numel() != width:
                raise TokenError(f"token {token!r} has {vector.numel()} values but this text encoder's width is {width}: it was learned on another model")
            table[token_id] = vector.to(table.dtype)
    return ids
