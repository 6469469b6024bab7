"""The control loss's words as token ids, and the loss on them (SPEC §3; paper Eqs. 3–7).

Positives are drawn per example from a word list (prepositions; verbs too for the POS-weighted
loss), without replacement within an example as ReVersion's ``random.sample``. Negatives are the
micro-batch's caption tokens that are no listed word, special token or placeholder (ReVersion's
code), or words drawn from the rest of the vocabulary (``negatives="vocab"``, the paper's wording).
As in ReVersion, one pooled set of each per micro-batch: ``<r>`` is scored against them once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from invrev import embeddings, losses, words
from invrev.config import TrainConfig


class WordListError(RuntimeError):
    """The word lists do not fit this tokenizer or config; the message says what to change."""


@dataclass
class RunWords:
    """One run's word lists as token ids: its positive sets and what is never a caption negative."""

    preposition_ids: torch.Tensor
    verb_ids: torch.Tensor
    excluded: set[int]


@dataclass
class Picks:
    """A micro-batch's draws for the control loss, from the run's generator."""

    prep: torch.Tensor  # [B, P] indices into the run's preposition list, distinct within a row
    verb: torch.Tensor  # [B, P] indices into the verb list, distinct within a row
    vocab_neg: torch.Tensor  # [B, M] token ids of other words, for negatives="vocab"


class Vocabulary:
    """Token ids of the word lists, and the pool of "other" words the vocabulary negatives come from.

    Creating it adds the placeholders to the tokenizer and the text encoder's table."""

    def __init__(self, components, placeholders: list[str]):
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
            raise WordListError("no preposition, verb or other word of the word lists is a single token of this tokenizer")

    def for_config(self, config: TrainConfig) -> RunWords:
        """ReVersion excludes its stop words and prepositions from the negatives; Inv-ReVersion's
        POS-weighted loss also excludes the verbs, which are its positives too."""
        lists = self.lists[config.word_lists]
        excluded = set(lists["stopwords"]) | set(lists["prepositions"]) | self.special
        if config.steer == "pos_weighted":
            excluded |= set(self.verbs)
        found = {"prepositions": len(lists["prepositions"]), "verbs": len(self.verbs)}
        for kind, n in found.items():
            if config.steer != "none" and config.num_positives > n and (kind == "prepositions" or config.steer == "pos_weighted"):
                raise WordListError(f"num_positives={config.num_positives} is more than the {n} {kind} of the "
                                    f"{config.word_lists!r} word lists that are one token here; lower it (ReVersion: 4)")
        return RunWords(torch.tensor(lists["prepositions"]), torch.tensor(self.verbs), excluded)

    def pick(self, config: TrainConfig, run_words: RunWords, generator: torch.Generator) -> Picks:
        """One micro-batch's positives and vocabulary negatives (always drawn, so a run's random
        stream does not depend on which loss it uses)."""
        b, k = config.batch_size, config.num_positives
        return Picks(choose(len(run_words.preposition_ids), b, k, generator), choose(len(run_words.verb_ids), b, k, generator),
                     self.vocab_pool[torch.randint(len(self.vocab_pool), (b, config.num_vocab_negatives), generator=generator)])

    @staticmethod
    def _ids(tokenizer, word_list) -> list[int]:
        ids = [tokenizer(w, add_special_tokens=False).input_ids for w in word_list]
        return [i[0] for i in ids if len(i) == 1 and i[0] != tokenizer.unk_token_id]


def choose(n: int, rows: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, k] indices into a list of n, without replacement within a row (as ReVersion's random.sample)."""
    return torch.rand(rows, n, generator=generator).argsort(dim=1)[:, :k]


def control_loss(config: TrainConfig, r: torch.Tensor, run_words: RunWords, caption_ids: torch.Tensor,
                 picks: Picks, table: torch.Tensor) -> torch.Tensor:
    """ReVersion's steer loss (Eq. 3) or the POS-weighted control loss (Eqs. 4–7) of ``<r>`` = ``r``
    for one micro-batch, on rows of the token-embedding ``table``; 0 for ``steer="none"``."""
    if config.steer == "none":
        return torch.zeros((), device=r.device)
    negatives = table[negative_ids(caption_ids, picks.vocab_neg, config, run_words).to(table.device)]
    prepositions = table[run_words.preposition_ids[picks.prep].reshape(-1).to(table.device)]
    if config.steer == "prepositions":
        return losses.steer_loss(r, prepositions, negatives, config.temperature)
    verbs = table[run_words.verb_ids[picks.verb].reshape(-1).to(table.device)]
    return losses.pos_weighted_control_loss(r, verbs, prepositions, negatives, config.lambda_verb, config.temperature)


def negative_ids(caption_ids: torch.Tensor, vocab_neg: torch.Tensor, config: TrainConfig, run_words: RunWords) -> torch.Tensor:
    """SPEC §3: the micro-batch's caption tokens that are not excluded (ReVersion's code), or its
    vocabulary draws. Captions with no such token at all fall back to the draws, so the loss stays
    defined (ReVersion's would be 0 there)."""
    if config.negatives == "caption":
        content = [i for ids in caption_ids.tolist() for i in ids if i not in run_words.excluded]
        if content:
            return torch.tensor(content)
    return vocab_neg.reshape(-1)
