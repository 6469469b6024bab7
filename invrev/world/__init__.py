"""The relation world: a synthetic benchmark for relation inversion.

Two entities (colour x shape) in one of 15 relations, rendered as 32x32 images (``render``),
captioned "A <relation words> B" (``captions``) and checked by an exact scorer (``scorer``).
The ``render`` function is reached as ``render.render``: re-exporting it here would shadow
the module that ``from invrev.world import render`` must find.
"""

from invrev.world.captions import caption, relation_text, template
from invrev.world.scene import (ALL_RELATIONS, BACKGROUND, COLOURS, ENTITIES, EXTRA_RELATIONS, RELATIONS,
                                SHAPES, WHITE, Entity, Relation, sample_pair)
from invrev.world.scorer import Score, score
from invrev.world.scorer_check import ScorerRow, check_scorer, format_table

__all__ = [
    "ALL_RELATIONS", "BACKGROUND", "COLOURS", "ENTITIES", "EXTRA_RELATIONS", "RELATIONS", "SHAPES", "WHITE",
    "Entity", "Relation", "Score", "ScorerRow", "caption", "check_scorer", "format_table", "relation_text",
    "sample_pair", "score", "template",
]
