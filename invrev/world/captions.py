"""The caption grammar: "a red circle on a blue square", "A <relation words> B".

Always the article "a" (never "an") and lower case, so every entity is the same two tokens.
World language v2 (docs/decisions.md) adds what SD's captions give CLIP: a scene said in other
words and with the roles swapped ("a blue square supporting a red circle"), a generic role swap
("a blue square ob on a red circle" means "a red circle on a blue square", ``SWAP_WORD``), and the
exemplar templates' article-less form ("red circle on blue square").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from invrev.world.scene import ALL_RELATIONS, SWAP_HELD_OUT, SWAP_WORD, Entity


def template(a: Entity, b: Entity) -> str:
    """ReVersion's exemplar template, "a red circle {} a blue square" (exactly one "{}")."""
    return f"a {a.text} {{}} a {b.text}"


def phrase(a: Entity, words: str, b: Entity, swap: bool = False, articles: bool = True) -> str:
    """"a red circle <words> a blue square"; with ``swap`` the same scene as "a blue square ob <words>
    a red circle"; without ``articles`` the exemplars' second form, "red circle <words> blue square"."""
    first, second = (b, a) if swap else (a, b)
    middle = f"{SWAP_WORD} {words}" if swap else words
    return f"a {first.text} {middle} a {second.text}" if articles else f"{first.text} {middle} {second.text}"


def relation_text(a: Entity, relation: str, b: Entity) -> str:
    """The relation written in words between the entities (what the ``sd`` baseline prompts with)."""
    return template(a, b).format(ALL_RELATIONS[relation].words)


def caption(a: Entity, relation: str, b: Entity, rng: np.random.Generator | None = None,
            vague: bool = False, paraphrase: bool = False, handle: bool = False) -> str:
    """A scene's caption.

    ``vague`` drops the relation: "a red circle and a blue square"; given ``rng`` the two entities
    come in random order, so a vague caption does not even hint which one is the subject.
    ``paraphrase`` swaps the entities and uses the inverse words: "a blue square under a red circle".
    ``handle`` uses an unnamed relation's pretraining handle: "a red circle daubed a blue square".
    """
    if handle:
        word = ALL_RELATIONS[relation].handle
        if word is None:
            raise ValueError(f"relation {relation!r} has no handle (only unnamed relations do)")
        return template(a, b).format(word)
    if vague:
        first, second = (b, a) if rng is not None and rng.random() < 0.5 else (a, b)
        return f"a {first.text} and a {second.text}"
    if paraphrase:
        inverse = ALL_RELATIONS[relation].inverse_words
        if inverse is None:
            raise ValueError(f"relation {relation!r} has no inverse paraphrase")
        return template(b, a).format(inverse)
    return relation_text(a, relation, b)


@dataclass(frozen=True)
class CaptionMix:
    """How pretraining captions a scene (shares are probabilities; the rest is the plain words).

    Named relations: a synonym (``synonym``), a converse with the roles swapped (``converse``).
    Unnamed ones: the handle (``handle``), a synonym or converse (``synonym``), else vaguely "A and B".
    Any caption in the scene's order, but not "A and B", an unnamed relation's evaluation words or
    a relation of ``SWAP_HELD_OUT``, is said with the swap word with probability ``swap``; any
    caption drops its articles with probability ``bare``. The world's first three model stages
    had no synonyms, no converses but the five ``inverse_words`` (said half the time), no swap
    word and always articles.
    """

    handle: float = 0.5
    synonym: float = 0.0
    converse: float = 0.0
    swap: float = 0.0
    bare: float = 0.0


def sample_caption(a: Entity, relation: str, b: Entity, rng: np.random.Generator, mix: CaptionMix) -> str:
    """A pretraining caption of the scene "a <relation> b" drawn by ``mix``."""
    info = ALL_RELATIONS[relation]
    reversed_ = False
    if info.named:
        converses = ((info.inverse_words,) if info.inverse_words else ()) + info.converses
        if converses and rng.random() < mix.converse:
            words, reversed_ = converses[rng.integers(len(converses))], True
        elif info.synonyms and rng.random() < mix.synonym:
            words = info.synonyms[rng.integers(len(info.synonyms))]
        else:
            words = info.words
    else:
        u = rng.random()
        others = [(w, False) for w in info.synonyms] + [(w, True) for w in info.converses]
        if u < mix.handle:
            words = info.handle
        elif others and u < mix.handle + mix.synonym:  # a synonym or, with the roles swapped, a converse
            words, reversed_ = others[rng.integers(len(others))]
        else:
            first, second = (b, a) if rng.random() < 0.5 else (a, b)
            return phrase(first, "and", second, articles=rng.random() >= mix.bare)
    swap = not reversed_ and relation not in SWAP_HELD_OUT and rng.random() < mix.swap
    first, second = (b, a) if reversed_ else (a, b)
    return phrase(first, words, second, swap=swap, articles=rng.random() >= mix.bare)
