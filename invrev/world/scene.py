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

    ``synonyms`` are other words for the same scene in the same order ("A atop B"), ``converses``
    words that describe it with the roles swapped ("B supporting A" for "A on B"), as SD's captions
    say one scene many ways: they make the steering lists' prepositions and verbs trained rows with
    a meaning (world language v2, docs/decisions.md). An unnamed relation's synonyms are never its
    evaluation words.
    """

    name: str
    words: str
    named: bool
    kind: str  # "spatial" or "behavioural"
    lambda_verb: float
    inverse_words: str | None = None
    symmetric: bool = False  # swapping A and B describes the same scene (only next_to)
    handle: str | None = None  # unnamed relations: the one word pretraining captions sometimes use
    synonyms: tuple[str, ...] = ()
    converses: tuple[str, ...] = ()


# lambda_verb: a spatial relation is carried by its preposition ("on", "inside"), so the loss leans
# on prepositions (0.2-0.3, the participle-plus-preposition ones "hanging from", "wrapped in" at
# the upper end); a behavioural one is an action carried by its verb ("hugging", "riding"), so
# it leans on verbs (0.7-0.8, "painted"/"carved" at the lower end: their "on"/"by" still matters).
RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation("painted_on", "painted on", False, "behavioural", 0.7, handle="daubed",
             converses=("decorated with", "drawn with", "printed with", "stitched with", "embroidered with")),
    Relation("carved_by", "carved by", True, "behavioural", 0.7,
             synonyms=("engraved by", "sculpted by", "shaped by", "formed by", "made of", "built of")),
    Relation("shake_hands", "shaking hands with", False, "behavioural", 0.8, handle="greeting",
             synonyms=("reaching", "touching")),
    Relation("hug", "hugging", False, "behavioural", 0.8, handle="cuddling",
             synonyms=("embracing",), converses=("hugged by",)),
    Relation("back2back", "back to back with", False, "spatial", 0.3, handle="backed",
             synonyms=("against", "leaning against")),
    Relation("inside", "inside", True, "spatial", 0.2,
             synonyms=("in", "within", "placed into", "hiding in", "trapped in", "locked in", "sealed in",
                       "buried in", "packed in", "stuffed in", "surrounded by"),
             converses=("filled with",)),
    Relation("on", "on", True, "spatial", 0.2, inverse_words="under",
             synonyms=("atop", "upon", "onto", "resting on", "sitting on", "standing on", "lying on", "perched on",
                       "placed on", "stacked on", "balancing on", "mounted on", "supported by", "carried by"),
             converses=("supporting", "carrying", "lifting")),
    Relation("hanging_from", "hanging from", True, "spatial", 0.3,
             synonyms=("hung from", "tied to", "attached to", "held by"), converses=("holding",)),
    Relation("wrapped_in", "wrapped in", False, "spatial", 0.3, handle="swaddled",
             synonyms=("covered in", "draped in", "framed by", "wearing"), converses=("around", "round")),
    Relation("ride_on", "riding", True, "behavioural", 0.75,
             synonyms=("aboard", "driving"), converses=("ridden by",)),
)}

EXTRA_RELATIONS: dict[str, Relation] = {r.name: r for r in (
    Relation("above", "above", True, "spatial", 0.2, inverse_words="below",
             synonyms=("over", "floating above", "flying over", "jumping over")),
    Relation("below", "below", True, "spatial", 0.2, inverse_words="above", synonyms=("beneath", "underneath")),
    Relation("left_of", "left of", True, "spatial", 0.2, inverse_words="right of"),
    Relation("right_of", "right of", True, "spatial", 0.2, inverse_words="left of"),
    Relation("next_to", "next to", True, "spatial", 0.2, inverse_words="next to", symmetric=True,
             synonyms=("beside", "near", "alongside", "opposite")),
)}

ALL_RELATIONS: dict[str, Relation] = {**RELATIONS, **EXTRA_RELATIONS}

# The generic role swap (Eq. 2's premise): "B ob <words> A" means "A <words> B", one word placed
# where Inv-ReVersion places V_inv, as CLIP has passives and other role-swapping constructions.
# In no steering list and no evaluation prompt.
SWAP_WORD = "ob"
# Never captioned with the swap word, in any of their words, so that "B ob riding A" and
# "B ob backed A" test whether the construction generalises to a relation it was not shown with.
SWAP_HELD_OUT = ("ride_on", "back2back")


def sample_pair(rng: np.random.Generator) -> tuple[Entity, Entity]:
    """A random (A, B) with different colours: the world never draws "a red circle on a red square"."""
    i = rng.integers(len(ENTITIES))
    others = [e for e in ENTITIES if e.colour != ENTITIES[i].colour]
    return ENTITIES[i], others[rng.integers(len(others))]


def config_overrides(relation: str) -> dict:
    """What a benchmark relation sets in a TrainConfig: its words (for ``sd``) and its λ_verb; {} otherwise."""
    info = RELATIONS.get(relation)
    return {"relation_words": info.words, "lambda_verb": info.lambda_verb} if info else {}
