"""The project's word lists and the real CLIP tokenizer built offline to check them.

Three lists ship as package data (``invrev/wordlists/*.txt``, one lower-case word per line, ``#`` comments):

- ``prepositions``: the positive set of the relation-steering loss (ReVersion, Eq. 3 of its paper) and
  the preposition term of the POS-weighted control loss (Inv-ReVersion, Eq. 6).
- ``verbs``: the verb term of the control loss (Inv-ReVersion, Eq. 5); the paper publishes no list.
- ``stopwords``: caption tokens that are never "caption negatives" (SPEC §3).
- ``reversion_prepositions``, ``reversion_stopwords``: ReVersion's two lists, used by its variant;
  ``docs/decisions.md`` says where and why the project's own lists differ.

Each word of the project's lists must be one token of the CLIP vocabulary (``word</w>``), because the losses compare the
learned relation vector with rows of the token-embedding table. ``tests/test_words.py`` checks that
against the real vocabulary, which :func:`clip_tokenizer_from_bpe` rebuilds from OpenAI's
``bpe_simple_vocab_16e6.txt.gz`` without network access.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path

from invrev.tokenizer import BOS, EOS, bytes_to_unicode

KINDS = ("prepositions", "verbs", "stopwords")
# ReVersion's own lists, for its variant (``TrainConfig.word_lists = "reversion"``).
REVERSION_KINDS = ("reversion_prepositions", "reversion_stopwords")

MODEL_MAX_LENGTH = 77
# Lines 1..48894 of the unzipped file: 49408 tokens = 2*256 byte tokens + merges + 2 specials.
N_MERGES = 49408 - 2 * 256 - 2


def clip_bpe_candidate() -> Path:
    """Where the CLIP BPE file is looked for: ``$INVREV_CLIP_BPE``, else ``<repo>/../shared/clip-bpe/``."""
    env = os.environ.get("INVREV_CLIP_BPE")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parent.parent
    return repo.parent / "shared" / "clip-bpe" / "bpe_simple_vocab_16e6.txt.gz"


def find_clip_bpe() -> Path | None:
    """The CLIP BPE file if it exists (see :func:`clip_bpe_candidate`), else None."""
    path = clip_bpe_candidate()
    return path if path.is_file() else None


def steering_lists(name: str) -> dict[str, tuple[str, ...]]:
    """The prepositions and stop words of ``TrainConfig.word_lists`` (``"invrev"`` or ``"reversion"``)."""
    prefix = {"invrev": "", "reversion": "reversion_"}[name]
    return {kind: load_words(prefix + kind) for kind in ("prepositions", "stopwords")}


def load_words(kind: str) -> tuple[str, ...]:
    """The words of one list, in file order, without comments or blank lines."""
    if kind not in KINDS + REVERSION_KINDS:
        raise ValueError(f"unknown word list {kind!r}; valid kinds: {', '.join(KINDS + REVERSION_KINDS)}")
    text = files("invrev").joinpath("wordlists", f"{kind}.txt").read_text(encoding="utf-8")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line)


def clip_vocab_and_merges(bpe_gz_path: str | os.PathLike) -> tuple[dict[str, int], list[str]]:
    """CLIP's token -> id table and merge rules, rebuilt as OpenAI's ``SimpleTokenizer`` does."""
    with gzip.open(bpe_gz_path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : N_MERGES + 1]
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    tokens += ["".join(m.split()) for m in merges] + [BOS, EOS]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def clip_tokenizer_from_bpe(bpe_gz_path: str | os.PathLike, out_dir: str | os.PathLike):
    """Write ``vocab.json``/``merges.txt`` (+ configs) for the CLIP tokenizer into ``out_dir`` and load it.

    Gives SD 1.5's tokenizer: 49,408 tokens, ``model_max_length`` 77, pad = unk = ``<|endoftext|>``.
    Works with transformers 4 (Python BPE) and 5 (``tokenizers`` backend) alike.
    """
    # Imported here: loading a word list should not pay for importing transformers.
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges(bpe_gz_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(specials), encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": MODEL_MAX_LENGTH, **specials}
    (out / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(out))


def single_token_words(tokenizer, words: Iterable[str]) -> list[str]:
    """The words that are NOT a single token of ``tokenizer`` (so an empty list means all are)."""
    return [w for w in words if len(tokenizer(w, add_special_tokens=False)["input_ids"]) != 1]
