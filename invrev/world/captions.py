"""The caption grammar: "a red circle on a blue square", always "A <relation words> B".

Always the article "a" (never "an") and lower case, so every entity is the same two tokens.
"""

from __future__ import annotations

import numpy as np

from invrev.world.scene import ALL_RELATIONS, Entity


def template(a: Entity, b: Entity) -> str:
    """ReVersion's exemplar template, "a red circle {} a blue square" (exactly one "{}")."""
    return f"a {a.text} {{}} a {b.text}"


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
