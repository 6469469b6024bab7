"""Checking the scorer against the renderer: fresh renders must pass their true caption and fail a
mismatched or swapped one, and renders broken on purpose (an entity removed, recoloured, or the
colours swapped) must fail entity accuracy. ``invrev world check-scorer`` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from invrev.world.render import layout, paint, render
from invrev.world.scene import ALL_RELATIONS, COLOURS, Entity, sample_pair
from invrev.world.scorer import score

PASS = 0.99  # check_scorer's bar for agreement with the renderer
BROKEN = 0.01  # and for entity accuracy on renders broken on purpose
# Mismatched captions that are true of the scene: "next to" is implied by "left of", and a
# next_to scene (either order) satisfies "left of" half the time.
_ENTAILED = {("left_of", "next_to"), ("right_of", "next_to"), ("next_to", "left_of"), ("next_to", "right_of")}
# Relations whose renders differ from another's by one thin mark: their renders must not pass as it.
LOOKALIKES = {"shake_hands": ("left_of", "next_to")}


@dataclass(frozen=True)
class ScorerRow:
    """check_scorer's result for one relation: pass rates of the true, a mismatched and the
    swapped caption (None for the symmetric next_to), and the entity pass rates of renders with
    one entity removed, one recoloured, and the two colours swapped (None where undefined)."""

    relation: str
    n: int
    agreement: float
    mismatched: float
    swapped: float | None
    removed: float | None = None
    recoloured: float | None = None
    colours_swapped: float | None = None
    lookalike: float | None = None  # renders of LOOKALIKES[relation] that pass as this relation

    @property
    def passed(self) -> bool:
        """At least ``PASS`` agreement on true renders, at most ``BROKEN`` passes on broken ones and lookalikes."""
        broken = [r for r in (self.removed, self.recoloured, self.colours_swapped, self.lookalike) if r is not None]
        return self.agreement >= PASS and all(r <= BROKEN for r in broken)


def broken_renders(a: Entity, relation: str, b: Entity, rng: np.random.Generator) -> dict[str, np.ndarray | None]:
    """One scene drawn four ways: as is, with A or B (alternately) removed, with one of them in a
    third colour, and with A's and B's colours swapped. carved_by draws no A colour, so there B's
    colour is always the one removed (its grooves left on the background) or recoloured, and its
    colour swap is the object in A's colour. Elsewhere a colour swap is tried only on pairs of
    different shapes (between two circles it is the swapped caption, which ``swapped`` checks)."""
    layers = layout(a, relation, b, rng)
    ca, cb = COLOURS[a.colour], COLOURS[b.colour]
    victim = ca if rng.random() < 0.5 else cb
    third = COLOURS[[c for c in COLOURS if c not in (a.colour, b.colour)][rng.integers(len(COLOURS) - 2)]]
    carved = relation == "carved_by"
    victim = cb if carved else victim
    swap = {ca: cb, cb: ca}
    return {
        "true": paint(layers),
        "removed": paint([(m, c) for m, c in layers if c != victim]),
        "recoloured": paint([(m, third if c == victim else c) for m, c in layers]),
        "colours_swapped": paint([(m, swap.get(c, c)) for m, c in layers]) if carved or a.shape != b.shape else None,
    }


def check_scorer(seed: int, per_relation: int) -> list[ScorerRow]:
    """Score fresh renders against their true captions (should pass), a caption with another
    relation and with A and B swapped (should fail), and renders with an entity removed,
    recoloured or the colours swapped (entity accuracy should fail)."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, info in ALL_RELATIONS.items():
        others = [r for r in ALL_RELATIONS if r != name and (name, r) not in _ENTAILED]
        true = wrong = swapped = 0
        broken = {"removed": [], "recoloured": [], "colours_swapped": []}
        for _ in range(per_relation):
            a, b = sample_pair(rng)
            images = broken_renders(a, name, b, rng)
            image = images["true"]
            true += score(image, a, name, b).agrees
            wrong += score(image, a, others[rng.integers(len(others))], b).agrees
            if not info.symmetric:
                swapped += score(image, b, name, a).agrees
            for key, hits in broken.items():
                if images[key] is not None:
                    hits.append(score(images[key], a, name, b).entity)
        n = per_relation
        rates = {key: (sum(hits) / len(hits) if hits else None) for key, hits in broken.items()}
        rows.append(ScorerRow(name, n, true / n, wrong / n, None if info.symmetric else swapped / n, **rates,
                              lookalike=_lookalike_rate(name, per_relation, rng)))
    return rows


def _lookalike_rate(relation: str, n: int, rng: np.random.Generator) -> float | None:
    """How often renders of the relations in ``LOOKALIKES[relation]`` pass as ``relation``."""
    others = LOOKALIKES.get(relation)
    if not others:
        return None
    hits = 0
    for k in range(n):
        a, b = sample_pair(rng)
        hits += score(render(a, others[k % len(others)], b, rng), a, relation, b).agrees
    return hits / n


def format_table(rows: list[ScorerRow]) -> str:
    """The check as a text table: agreement on true renders, then pass rates that must be low."""
    def rate(x):
        return "-" if x is None else f"{x:.3f}"

    lines = [f"{'relation':<14}{'n':>6}{'agreement':>11}{'mismatched':>12}{'swapped':>9}"
             f"{'removed':>9}{'recoloured':>12}{'col.swap':>10}{'lookalike':>11}  passed"]
    for r in rows:
        lines.append(f"{r.relation:<14}{r.n:>6}{r.agreement:>11.3f}{r.mismatched:>12.3f}{rate(r.swapped):>9}"
                     f"{rate(r.removed):>9}{rate(r.recoloured):>12}{rate(r.colours_swapped):>10}{rate(r.lookalike):>11}  "
                     f"{'yes' if r.passed else 'NO'}")
    return "\n".join(lines)
