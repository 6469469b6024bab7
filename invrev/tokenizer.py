"""A CLIPTokenizer for a closed vocabulary, learned by byte-pair merges so each word is one token.

The relation world and the tiny test pipeline cannot download CLIP's tokenizer files, and CLIP's
49,408-row table would dwarf a small model. Learning BPE merges over the world's own words gives a
real ``CLIPTokenizer`` (same pre-tokeniser, same ``</w>`` convention, same special tokens) whose
vocabulary is a few thousand entries and in which every listed word is a single token.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Iterable

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (the same as GPT-2's)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """Greedy BPE over the distinct words (ties broken alphabetically, so the result is stable)."""
    table = bytes_to_unicode()
    pieces = {}
    for word in sorted(set(words)):
        chars = [table[b] for b in word.encode("utf-8")]
        pieces[word] = chars[:-1] + [chars[-1] + "</w>"]
    return _greedy_merges(pieces)


def _greedy_merges(pieces: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Merge the most frequent adjacent pair (ties alphabetically) until every word is one symbol."""
    merges = []
    while True:
        counts = collections.Counter()
        for symbols in pieces.values():
            counts.update(zip(symbols, symbols[1:]))
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for word, symbols in pieces.items():
            pieces[word] = _merge(symbols, best)


def _merge(symbols: list[str], pair: tuple[str, str]) -> list[str]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE as the tokenizer applies it: repeatedly merge the present pair of lowest rank."""
    while len(symbols) > 1:
        pair = min(zip(symbols, symbols[1:]), key=lambda p: ranks.get(p, len(ranks)))
        if pair not in ranks:
            break
        symbols = _merge(symbols, pair)
    return symbols


def extend_tokenizer(tokenizer: CLIPTokenizer, words: Iterable[str], out_dir: str | Path) -> tuple[CLIPTokenizer, list[str]]:
    """``tokenizer`` with ``words`` added as single tokens, every existing token keeping its id.

    New merges go after the old ones (so no old word tokenises differently: its own merges all
    rank first) and new tokens after the special ones (ids ``len(tokenizer)`` onwards), which is
    what warm-starting a trained text encoder needs: ``resize_token_embeddings`` appends the rows.
    Returns the tokenizer (saved to ``out_dir``) and the words that were new.
    """
    vocab = dict(tokenizer.get_vocab())
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in tokenizer._merges]
    table = bytes_to_unicode()
    ranks = {m: i for i, m in enumerate(merges)}
    new = [w for w in sorted({w.lower() for w in words}) if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    pieces = {}
    for word in new:
        chars = [table[b] for b in word.encode("utf-8")]
        pieces[word] = _apply_merges(chars[:-1] + [chars[-1] + "</w>"], ranks)
    added = _greedy_merges(pieces)
    for pair in added:
        vocab.setdefault("".join(pair), len(vocab))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extended = CLIPTokenizer(vocab=vocab, merges=merges + added, model_max_length=tokenizer.model_max_length,
                             bos_token=BOS, eos_token=EOS, unk_token=EOS, pad_token=EOS)
    split = [w for w in new if len(extended(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise RuntimeError(f"BPE merges left these words in several tokens: {split[:10]}")
    extended.save_pretrained(out)
    return extended, new


def build_tokenizer(words: Iterable[str], out_dir: str | Path, model_max_length: int = 77) -> CLIPTokenizer:
    """Learn a CLIPTokenizer for ``words`` and save it (``save_pretrained``) into ``out_dir``."""
    words = sorted({w.lower() for w in words})
    merges = learn_merges(words)
    chars = list(bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(vocab_list))}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=merges,
        model_max_length=model_max_length,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=EOS,
    )
    split = [w for w in words if len(tokenizer(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise RuntimeError(f"BPE merges left these words in several tokens: {split[:10]}")
    tokenizer.save_pretrained(out)
    return tokenizer
