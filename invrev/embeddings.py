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
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from invrev.config import SPECIAL_TOKENS, token_file_name as file_name


class TokenError(ValueError):
    """A placeholder or initial word cannot be used with this tokenizer."""


def add_placeholders(tokenizer, text_encoder, placeholders: list[str]) -> list[int]:
    """Add the placeholders to the tokenizer (if new) and grow the table to match; return their ids.

    A placeholder must be a new token: the name of a special token would train (or overwrite) the
    row that pads every prompt, and an existing word would be shadowed in every later prompt.
    """
    for token in placeholders:
        check_placeholder(tokenizer, token)
    tokenizer.add_tokens([t for t in placeholders if t not in tokenizer.get_vocab()])
    table = text_encoder.get_input_embeddings()
    if len(tokenizer) > table.num_embeddings:
        # New rows are never read during training (the injector overrides them), so no random init.
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    return [tokenizer.convert_tokens_to_ids(t) for t in placeholders]


def check_placeholder(tokenizer, token: str) -> None:
    """Raise :class:`TokenError` (naming the token and the fix) unless ``token`` can be a new token."""
    if token != token.lower():
        raise TokenError(f"placeholder {token!r} has capitals: transformers 5 lower-cases added tokens; use {token.lower()!r}")
    if not token or any(ch.isspace() for ch in token):
        raise TokenError(f"placeholder {token!r} must be one word without spaces, e.g. '<r>'")
    if token in SPECIAL_TOKENS or token in tokenizer.all_special_tokens:
        raise TokenError(f"token {token!r} is the tokenizer's own special token (it pads every prompt): "
                         f"use a new token such as '<r>'")
    added = set(tokenizer.get_added_vocab()) - set(tokenizer.all_special_tokens)
    if token in added:  # ours, added earlier in this process
        return
    ids = tokenizer(token, add_special_tokens=False).input_ids
    if token in tokenizer.get_vocab() or len(ids) == 1:
        raise TokenError(f"token {token!r} is already a word of this tokenizer: as a "
                         f"placeholder it would replace that word in every prompt; use a new token such as "
                         f"'<{token.strip('<>') or 'r'}>'")


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


def save_learned(folder: str | Path, vectors: dict[str, torch.Tensor]) -> list[Path]:
    """One safetensors file per token, ``{"<r>": float32[D]}``: what ``load_textual_inversion`` reads."""
    from invrev.runs import atomic_write  # here: runs imports the model stack

    paths = []
    for token, vector in vectors.items():
        data = save({token: vector.detach().float().cpu().contiguous()})
        paths.append(atomic_write(Path(folder) / file_name(token), lambda handle, b=data: handle.write(b)))
    return paths


def load_learned(paths: list[str | Path]) -> dict[str, torch.Tensor]:
    """Read learned tokens from safetensors files or ReVersion's ``learned_embeds.bin``.

    ``.bin`` files are read with ``weights_only=True``: never unpickle an untrusted file. Keys are
    lower-cased (ReVersion saves ``<R>``; transformers 5 would lower-case it anyway). Each file must
    map tokens to one finite vector ([D] or [1, D]); anything else is refused naming the file.
    """
    vectors = {}
    for path in map(Path, paths):
        for token, vector in _read_token_file(path).items():
            token = token.lower()
            if token in SPECIAL_TOKENS:
                raise TokenError(f"{path}: key {token!r} is the tokenizer's own special token; loading it would "
                                 f"change every prompt. Rename the key to the placeholder it was learned for, e.g. '<r>'")
            if not isinstance(vector, torch.Tensor) or not vector.is_floating_point():
                raise TokenError(f"{path}: key {token!r} holds {type(vector).__name__}, not a float vector")
            if vector.ndim > 1 and vector.shape[0] != 1 or vector.ndim > 2:
                raise TokenError(f"{path}: token {token!r} has shape {list(vector.shape)}: one vector [D] per token "
                                 f"is expected (a multi-vector token is not supported); save one file per token")
            if not torch.isfinite(vector).all():
                raise TokenError(f"{path}: token {token!r} holds NaN or infinite values (a diverged run?); "
                                 f"retrain it with a lower learning_rate, or use an earlier file")
            if token in vectors:
                raise TokenError(f"{path}: token {token!r} is also in an earlier file; give each token once")
            vectors[token] = vector.float().reshape(-1)
    return vectors


def _read_token_file(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no learned embedding file here (expected *.safetensors or learned_embeds.bin)")
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" not in str(err):
            raise TokenError(f"{path}: not a learned embedding file (it cannot be read as safetensors or as a "
                             f"torch file: {str(err).splitlines()[0]})") from None
        raise TokenError(f"{path}: not a safe tensor file: it holds Python objects that would run code when "
                         f"loaded, and invrev does not unpickle files. If you made it and trust it, convert it where "
                         f"it was made: safetensors.torch.save_file({{token: vector}}, 'token.safetensors'); "
                         f"otherwise delete it") from None
    except Exception as err:  # whatever the reader trips on, the file is not one we can use
        raise TokenError(f"{path}: not a learned embedding file (it cannot be read as "
                         f"{'safetensors' if path.suffix == '.safetensors' else 'a torch file'}: "
                         f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); expected "
                         f"{{token: float32[D]}} as written by invrev, diffusers or ReVersion") from None
    if not isinstance(state, dict) or not state:
        raise TokenError(f"{path}: expected a mapping {{token: vector}}, got {type(state).__name__}")
    if {"string_to_param", "emb_params"} & set(state):
        raise TokenError(f"{path}: an AUTOMATIC1111 embedding ('string_to_param' / 'emb_params'), not "
                         f"{{token: vector}}: load it with diffusers' load_textual_inversion(path, token='<r>'), "
                         f"or save its vector as {{'<r>': vector}} with safetensors")
    return state


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
