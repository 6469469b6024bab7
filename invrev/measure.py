"""One way to measure: draw prompts about the world at given image seeds and score every image.

Every measurement of a model goes through here: a run's evaluation (``evaluate``), pretraining's
validation, the shipped model's report and its sampling sweep (``invrev.worldmodel``), the recipe
checks and the rating tool's images. A prompt is an :class:`Item`: a scene "A <relation> B" of
the world, said one way (its ``kind``); its images are drawn at the seeds of
:func:`invrev.layout.image_seed`, so prompt ``i``'s sample ``k`` is the same image whichever
measurement draws it, and every kind of prompt about one pair is drawn from the same noise.
Scores come as typed records: per image (:class:`ImageScore`), per cell with Wilson intervals
(:func:`summarise`, :func:`cells`), with the reversed rate (the image passes as "B <relation> A").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Sequence

import numpy as np

from invrev import generate, layout, text
from invrev.world import benchmark, captions, scene, scorer
from invrev.world.scene import Entity

METRICS = ("entity", "relation", "fusion", "reversed")
# How a prompt says the scene "A <relation> B" (A first in the scene, whatever the prompt's order):
KINDS = {
    "words": "A <words> B: the relation in words (the sd baseline)",
    "token": "A <r> B: a learned token",
    "handle": "A <handle> B: an unnamed relation's pretraining handle",
    "swap": "B ob <words or handle> A: the world's generic role swap (scene.SWAP_WORD)",
    "swap_token": "B ob <r> A: a learned token in the swap construction",
    "inverse": "B <inv> <r> A: Inv-ReVersion's inverse form (Eq. 2)",
    "and": "A and B: no relation at all (which entity is drawn?)",
}
SPLITS = {"held_out": benchmark.test_pairs, "seen": benchmark.seen_pairs, "validation": benchmark.validation_pairs}


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (sound at 0 and 1, unlike the normal approximation)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Item:
    """One prompt: the scene "``a`` ``relation`` ``b``" said as ``kind``; ``index`` is its place
    among its split's pairs (its image seeds), ``split`` which pairs (``SPLITS``)."""

    relation: str
    kind: str
    a: Entity
    b: Entity
    prompt: str
    index: int
    split: str = "held_out"


@dataclass(frozen=True)
class ImageScore:
    """One image against its item's scene."""

    prompt: str
    seed: int
    entity: bool
    relation: bool
    fusion: bool
    reversed: bool
    entity_a: bool = False  # A drawn as named, whatever B
    entity_b: bool = False

    def record(self) -> dict:
        """What ``metrics.json`` keeps of each image."""
        return {k: v for k, v in asdict(self).items() if k not in ("entity_a", "entity_b")}


def prompt_for(kind: str, relation: str, a: Entity, b: Entity, placeholder: str = "<r>",
               inverse_placeholder: str = "<inv>") -> str:
    """The prompt of ``kind`` (``KINDS``) for the scene "a <relation> b"."""
    info = scene.ALL_RELATIONS[relation]
    if kind == "words":
        return captions.relation_text(a, relation, b)
    if kind == "token":
        return text.fill(captions.template(a, b), placeholder)
    if kind == "handle":
        return captions.caption(a, relation, b, handle=True)
    if kind == "swap":
        return captions.phrase(a, info.words if info.named else info.handle, b, swap=True)
    if kind == "swap_token":
        return captions.phrase(a, placeholder, b, swap=True)
    if kind == "inverse":
        return text.inverse_caption(captions.template(a, b), placeholder, inverse_placeholder)
    if kind == "and":
        return captions.caption(a, relation, b, vague=True)
    raise ValueError(f"prompt kind {kind!r}: choose from {sorted(KINDS)}")


def items(relation: str, kind: str, n: int, split: str = "held_out", **placeholders) -> list[Item]:
    """``n`` pairs of ``split`` for ``relation`` (a benchmark relation), each said as ``kind``."""
    if relation not in scene.RELATIONS:
        raise ValueError(f"relation {relation!r} is not in the world benchmark; choose from {sorted(scene.RELATIONS)}")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose from {sorted(SPLITS)}")
    return [Item(relation, kind, a, b, prompt_for(kind, relation, a, b, **placeholders), i, split)
            for i, (a, b) in enumerate(SPLITS[split](relation, n))]


def image_seeds(items_: Sequence[Item], seed: int, samples: int) -> list[int]:
    """The seeds of ``samples`` images of each item, item by item (seen pairs in their own range)."""
    return [layout.image_seed(seed, it.index, k, seen=it.split == "seen") for it in items_ for k in range(samples)]


def score(image: np.ndarray, relation: str, a: Entity, b: Entity, prompt: str = "", seed: int = -1) -> ImageScore:
    """``image`` scored as "a <relation> b"; ``reversed``: it passes as "b <relation> a" (never for a
    symmetric relation, where both are the same scene)."""
    s = scorer.score(image, a, relation, b)
    backwards = not scene.ALL_RELATIONS[relation].symmetric and bool(scorer.score(image, b, relation, a).relation)
    return ImageScore(prompt, seed, bool(s.entity), bool(s.relation), bool(s.fusion), backwards,
                      bool(s.entity_a), bool(s.entity_b))


def draw(components, items_: Sequence[Item], seed: int, samples: int, *, steps: int | None = None,
         guidance: float | None = None, scheduler: str | None = None, guidance_rescale: float | None = None,
         batch_size: int = 32, progress: bool = False) -> tuple[list[np.ndarray], list[ImageScore]]:
    """``samples`` images of each item, in one pass at the model's sampling settings (those left
    None), and their scores: the images item by item and one :class:`ImageScore` each."""
    texts = [it.prompt for it in items_ for _ in range(samples)]
    seeds = image_seeds(items_, seed, samples)
    images = generate.generate(components, texts, seeds, steps, guidance, scheduler, batch_size=batch_size,
                               progress=progress, guidance_rescale=guidance_rescale)
    scores = [score(image, it.relation, it.a, it.b, t, s)
              for image, it, t, s in zip(images, (it for it in items_ for _ in range(samples)), texts, seeds)]
    return images, scores


def summarise(records: Iterable[ImageScore | dict]) -> dict:
    """Rates and Wilson 95% intervals of a cell of images: ``entity_accuracy``, ``relation_accuracy``,
    ``fusion_rate``, ``reversed_rate`` (the last only if every record has it: older records lack it)."""
    records = [r.record() if isinstance(r, ImageScore) else r for r in records]
    n = len(records)
    summary = {"n": n}
    checked = records and all("reversed" in r for r in records)
    for key in METRICS if checked else METRICS[:-1]:
        hits = sum(r[key] for r in records)
        summary[f"{key}_accuracy" if key in ("entity", "relation") else f"{key}_rate"] = hits / n if n else 0.0
        summary[f"{key}_ci95"] = wilson(hits, n)
    return summary


def cell(components, relation: str, kind: str, prompts: int, seed: int, samples: int, split: str = "held_out") -> dict:
    """One relation's ``prompts`` pairs of ``split``, said as ``kind``, drawn ``samples`` times and summarised."""
    return summarise(draw(components, items(relation, kind, prompts, split=split), seed, samples)[1])


def cells(items_: Sequence[Item], scores: Sequence[ImageScore], samples: int) -> dict[tuple[str, str], dict]:
    """:func:`summarise` per (relation, kind) of images drawn by :func:`draw` from ``items_``."""
    grouped: dict[tuple[str, str], list[ImageScore]] = {}
    for i, s in enumerate(scores):
        it = items_[i // samples]
        grouped.setdefault((it.relation, it.kind), []).append(s)
    return {key: summarise(group) for key, group in grouped.items()}
