"""The relation-world benchmark: exemplar folders in the ReVersion layout and held-out test prompts.

Entity pairs are split once, by a fixed rule, into pairs the model may see in pretraining and in
exemplars, and held-out pairs that only ever appear in test prompts (ReVersion's idea of testing
on subjects × objects absent from the exemplars).
"""

from __future__ import annotations

import numpy as np

from invrev.world import captions, render, scene

EXEMPLARS_PER_RELATION = 6  # ReVersion ships 4-10
TEST_PAIRS = 20


def pairs() -> list[tuple[scene.Entity, scene.Entity]]:
    """Ordered pairs with different colours (the world never draws "a red circle on a red square")."""
    return [(a, b) for a in scene.ENTITIES for b in scene.ENTITIES if a.colour != b.colour]


def is_held_out(a: scene.Entity, b: scene.Entity) -> bool:
    """About 1 pair in 8, never seen in training: with 24 entities colour-major, (5i + 3j) % 8 == 0
    holds only where i and j share a shape (i ≡ j mod 4), and the colours it pairs are close hues
    (yellow/orange, red/purple, ...). So the test pairs are all same-shape pairs, and no pair of
    different shapes is ever tested held out: report :func:`seen_pairs` beside them. A split
    covering both kinds and all hue pairs needs a pretraining from scratch (every current
    training pair is in the shipped weights)."""
    i, j = scene.ENTITIES.index(a), scene.ENTITIES.index(b)
    return (5 * i + 3 * j) % 8 == 0


def training_pairs() -> list[tuple[scene.Entity, scene.Entity]]:
    return [p for p in pairs() if not is_held_out(*p)]


def test_pairs(relation: str, n: int = TEST_PAIRS) -> list[tuple[scene.Entity, scene.Entity]]:
    """``n`` held-out pairs for a relation, a fixed draw per relation so every variant sees the same."""
    held = [p for p in pairs() if is_held_out(*p)]
    rng = np.random.default_rng(sorted(scene.RELATIONS).index(relation))
    order = rng.permutation(len(held))[:n]
    return [held[k] for k in order]


def exemplar_pairs(relation: str, seed: int = 0) -> list[tuple[scene.Entity, scene.Entity]]:
    """The pairs of a relation's shipped exemplars (as :func:`exemplars` draws them)."""
    train = training_pairs()
    rng = np.random.default_rng([seed, sorted(scene.RELATIONS).index(relation)])
    return [train[i] for i in rng.choice(len(train), EXEMPLARS_PER_RELATION, replace=False)]


def validation_pairs(relation: str, n: int = TEST_PAIRS) -> list[tuple[scene.Entity, scene.Entity]]:
    """``n`` pairs that are neither held out nor among the relation's exemplars: where checkpoints
    and sampling settings are chosen, so the test prompts are never looked at. Half share a shape
    and half do not (where there are enough), a fixed draw per relation."""
    exemplars = set(exemplar_pairs(relation))
    pool = [p for p in training_pairs() if p not in exemplars]
    rng = np.random.default_rng([1, sorted(scene.RELATIONS).index(relation)])
    same = [p for p in pool if p[0].shape == p[1].shape]
    other = [p for p in pool if p[0].shape != p[1].shape]
    k = min(len(same), n // 2)
    chosen = [same[i] for i in rng.permutation(len(same))[:k]] + [other[i] for i in rng.permutation(len(other))[:n - k]]
    return [chosen[i] for i in rng.permutation(len(chosen))]


def seen_pairs(relation: str, n: int = TEST_PAIRS) -> list[tuple[scene.Entity, scene.Entity]]:
    """``n`` pairs of different shapes that pretraining saw, neither exemplars nor validation
    pairs: the second view reports give beside the (same-shape) held-out pairs."""
    taken = set(exemplar_pairs(relation)) | set(validation_pairs(relation))
    pool = [p for p in training_pairs() if p[0].shape != p[1].shape and p not in taken]
    rng = np.random.default_rng([2, sorted(scene.RELATIONS).index(relation)])
    return [pool[i] for i in rng.permutation(len(pool))[:n]]


def exemplars(relation: str, seed: int = 0) -> tuple[list[tuple[scene.Entity, scene.Entity]], list, list[list[str]]]:
    """A relation's exemplars: their pairs (training pairs only), renders, and templates in
    ReVersion's two forms ("a red circle {} a blue square", "red circle {} blue square")."""
    train = training_pairs()
    rng = np.random.default_rng([seed, sorted(scene.RELATIONS).index(relation)])
    chosen = [train[i] for i in rng.choice(len(train), EXEMPLARS_PER_RELATION, replace=False)]
    images = [render.render(a, relation, b, rng) for a, b in chosen]
    templates = [[captions.template(a, b), captions.template(a, b).removeprefix("a ").replace(" {} a ", " {} ")]
                 for a, b in chosen]
    return chosen, images, templates


def test_prompt_pairs() -> dict[str, list[list[str]]]:
    """Every benchmark relation's held-out test pairs as entity texts (``test_prompts.json``)."""
    return {r: [[a.text, b.text] for a, b in test_pairs(r)] for r in sorted(scene.RELATIONS)}
