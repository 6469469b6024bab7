"""The relation world's vocabulary: six colours, four shapes, 24 entities, 15 relations.

A scene is two entities A and B in one relation; its caption reads "A <relation words> B".
The 10 benchmark relations are ReVersion's; 5 plain spatial ones only enrich pretraining.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Hues far apart in RGB (closest pair, yellow-orange, is 76 apart) so a pixel's colour is unambiguous.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 90, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 210),
    "orange": (245, 140, 30),
}
BACKGROUND = (16, 16, 16)
WHITE = (255, 255, 255)  # auxiliary marks only (rope, wheels, eyes, engraving), never an entity colour
SHAPES = ("circle", "square", "triangle", "cross")


@dataclass(frozen=True)
class Entity:
    colour: str
    shape: str

    @property
    def text(self) -> str:
        return f"{self.colour} {self.shape}"


ENTITIES = [Entity(c, s) for c in COLOURS for s in SHAPES]


@dataclass(frozen=True)
class Relation:
    """One relation of the world.

    ``words`` sit between the entities in a caption; ``named`` says whether pretraining captions
    use them. An unnamed relation is never captioned in its words: pretraining says "A and B", or,
    part of the time, "A <handle> B" with its ``handle``, a word that is in no steering list and in
    no evaluation prompt (as SD's captions name a relation in words other than the obvious ones, so
    the relation is in the model but its words do not call it up). ``inverse_words`` paraphrase
    the scene with the entities swapped ("B under A" for "A on B"), None where English has none.
    ``lambda_verb`` is how much the POS-weighted loss leans on verbs rather than prepositions.
    """

    name: str
    words: str
    named: bool
    kind: str  # "spatial" or "behavioural"
    lambda_verb: float
    inverse_words: str | None = None
    symmetric: bool = False  # swapping A and B describes the same scene (only next_to)
    handle: str | None = None  # unnamed relations: the one word pretraining captions sometimes use


# lambda_verb: a spatial relation is carried by its preposition ("on", "inside"), so the loss leans
# on prepositions (0.2-0.3, the participle-plus-preposition ones "hanging from", "wrapped in" at
# the upper end); a behavioural one is an action carried by its verb ("hugging", "riding"), so
# it leans on verbs (0.7-0.8, "painted"/"carved" at the lower end: their "on"/"by" still matters).
RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation("painted_on", "painted on", False, "behavioural", 0.7, handle="daubed"),
    Relation("carved_by", "carved by", True, "behavioural", 0.7),
    Relation("shake_hands", "shaking hands with", False, "behavioural", 0.8, handle="greeting"),
    Relation("hug", "hugging", False, "behavioural", 0.8, handle="cuddling"),
    Relation("back2back", "back to back with", False, "spatial", 0.3, handle="backed"),
    Relation("inside", "inside", True, "spatial", 0.2),
    Relation("on", "on", True, "spatial", 0.2, inverse_words="under"),
    Relation("hanging_from", "hanging from", True, "spatial", 0.3),
    Relation("wrapped_in", "wrapped in", False, "spatial", 0.3, handle="swaddled"),
    Relation("ride_on", "riding", True, "behavioural", 0.75),
)}

EXTRA_RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation("above", "above", True, "spatial", 0.2, inverse_words="below"),
    Relation("below", "below", True, "spatial", 0.2, inverse_words="above"),
    Relation("left_of", "left of", True, "spatial", 0.2, inverse_words="right of"),
    Relation("right_of", "right of", True, "spatial", 0.2, inverse_words="left of"),
    Relation("next_to", "next to", True, "spatial", 0.2, inverse_words="next to", symmetric=True),
)}

ALL_RELATIONS: dict[str, Relation] = {**RELATIONS, **EXTRA_RELATIONS}


def sample_pair(rng: np.random.Generator) -> tuple[Entity, Entity]:
    """A random (A, B) with different colours: the world never draws "a red circle on a red square"."""
    i = rng.integers(len(ENTITIES))
    others = [e for e in ENTITIES if e.colour != ENTITIES[i].colour]
    return ENTITIES[i], others[rng.integers(len(others))]


def config_overrides(relation: str) -> dict:
    """What a benchmark relation sets in a TrainConfig: its words (for ``sd``) and its λ_verb; {} otherwise."""
    info = RELATIONS.get(relation)
    return {"relation_words": info.words, "lambda_verb": info.lambda_verb} if info else {}
