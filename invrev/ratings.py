"""People's ratings: the paper's user study, replayable, with average user rank on its 1–4 scale.

The paper's user study shows a rater one prompt's images from four methods and asks for a ranking
by entity accuracy and one by relation accuracy (4 = best); a method's number is its rank averaged
over raters and sets (Table 1: Inv-ReVersion 3.0–3.9 ... SD 1.5–2.1). ``invrev.tables`` ranks the
same way with the scorer as the rater, so the two stand side by side in the results notebook. The rating widget of
``notebooks/30_explorer.ipynb`` drives a :class:`RatingSession`: blind (the rater sees the
relation, its exemplars and numbered images; which method drew which image is told only when they
finish), one save per set. Everything a person does can be replayed without a widget.
"""

from __future__ import annotations

import csv
import random
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from invrev import generate, measure, runs
from invrev.config import TABLE1, VARIANTS
from invrev.data import image_files
from invrev.models import REPO_ROOT
from invrev.tables import PAPER_NAMES, rank
from invrev.world import scene

CRITERIA = ("entity", "relation")
INSTRUCTIONS = {  # what the paper asked its raters, for each criterion
    "relation": "Relation: how faithfully does the image show the relation of the exemplar images between "
                "the two entities of the prompt, in the direction it states (A related to B, not B to A)?",
    "entity": "Entities: how faithfully does the image show both entities as the prompt names them "
              "(their colour and shape), whatever the relation?",
}
FIELDS = ("rater", "relation", "prompt", "seed", "variant", "criterion", "rank")


class RatingError(ValueError):
    """A rating row or rating file is malformed; the message says which and how to fix it."""


# People's ratings ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class RatingSet:
    """One prompt's images from several variants, shown in ``variants`` order (random per set)."""

    relation: str
    index: int  # which held-out pair (the order of measure.items)
    prompt: str  # "a red circle <r> a blue square"; the sd variant is prompted in words
    seed: int  # the runs' seed; the image is the one evaluate draws as sample 0 of this prompt
    variants: tuple[str, ...]


def sample_rating_set(relation: str, rng: random.Random, variants: Sequence[str] = TABLE1,
                      seeds: Sequence[int] = (0,), prompts: int = 20) -> RatingSet:
    """A random held-out prompt and seed, with the variants in a random order (raters must not
    learn which column is which method)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise RatingError(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    index = rng.randrange(prompts)
    seed = rng.choice(list(seeds))
    order = list(variants)
    rng.shuffle(order)
    prompt = measure.items(relation, "token", index + 1)[index].prompt
    return RatingSet(relation, index, prompt, seed, tuple(order))


def draw(components, runs_root: str | Path, relation: str, variant: str, seed: int, a, b,
         image_seeds: Sequence[int], steps: int | None = None, guidance: float | None = None) -> list:
    """Images of "a <A> <r> a <B>" with the learned tokens of run ``runs_root/relation/variant/seed<k>``
    (the relation in words for ``sd``), one per image seed; ``a``/``b`` are world entities. Steps
    and guidance left None are the model's recommended settings."""
    if variant != "sd":
        generate.load_run_tokens(components, runs.run_dir(runs_root, relation, variant, seed))
    prompt = measure.prompt_for("words" if variant == "sd" else "token", relation, a, b)
    return generate.generate(components, [prompt] * len(image_seeds), list(image_seeds), steps, guidance)


def draw_set(components, runs_root: str | Path, rating_set: RatingSet, steps: int | None = None,
             guidance: float | None = None) -> list:
    """One image per variant of the set, in its shown order: the image evaluate scored for it
    (sample 0 of its held-out prompt, through ``invrev.measure``)."""
    images = []
    for variant in rating_set.variants:
        if variant != "sd":
            generate.load_run_tokens(components, runs.run_dir(runs_root, rating_set.relation, variant, rating_set.seed))
        kind = "words" if variant == "sd" else "token"
        item = measure.items(rating_set.relation, kind, rating_set.index + 1)[rating_set.index]
        images.append(measure.draw(components, [item], rating_set.seed, 1, steps=steps, guidance=guidance)[0][0])
    return images


def rows_for(rater: str, rating_set: RatingSet, criterion: str, ranks: Mapping[str, int], ties: bool = False) -> list[dict]:
    """The CSV rows of one person's ranking of one set: ranks 1..n, n = best, each once.

    With ``ties``, images the person cannot tell apart may share a rank: the ranks then only order
    the images, and tied ones get the mean of the places they span (1, 3, 3, 4 is stored as 1, 2.5,
    2.5, 4), so every set still averages (n + 1) / 2 and sets stay comparable.
    """
    rater = _rater_name(rater)
    if criterion not in CRITERIA:
        raise RatingError(f"criterion {criterion!r} is not one of {CRITERIA}")
    if set(ranks) != set(rating_set.variants):
        raise RatingError(f"rank every shown variant exactly once: got {sorted(ranks)}, shown {sorted(rating_set.variants)}")
    n = len(rating_set.variants)
    if ties and not all(isinstance(r, int) and 1 <= r <= n for r in ranks.values()):
        raise RatingError(f"ranks must be whole numbers 1..{n} ({n} = best); got {sorted(ranks.values())}")
    if not ties and sorted(ranks.values()) != list(range(1, n + 1)):
        raise RatingError(f"ranks must be 1..{n}, each once ({n} = best); got {sorted(ranks.values())}. "
                          f"If some images are equally good, allow ties (ties=True; the widget's 'ties' box)")
    places = rank(ranks) if ties else ranks
    return [{"rater": rater, "relation": rating_set.relation, "prompt": rating_set.prompt, "seed": rating_set.seed,
             "variant": v, "criterion": criterion, "rank": _number(places[v])} for v in rating_set.variants]


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def append_ratings(path: str | Path, rows: Iterable[Mapping]) -> Path:
    """Append rows to ``path`` (header written when the file is new); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        if new:
            writer.writeheader()
        writer.writerows({k: row[k] for k in FIELDS} for row in rows)
    return path


class RatingSession:
    """One person's blind rating of sets drawn at random from ``relations``.

    What the rater sees comes from :meth:`shown` (the relation in words, the prompt with the
    entities named, the exemplar images, the instructions) and the messages of :meth:`save`; none of
    it names a method. Ranks are given by image position (image 1 is the leftmost). A set is saved
    once: a second save of a set this rater already has in ``path`` is refused. :meth:`finish`
    ends the session and only then tells which method drew which image, with the rater's averages.
    """

    def __init__(self, rater: str, path: str | Path, relations: Sequence[str], variants: Sequence[str] = TABLE1,
                 seeds: Sequence[int] = (0,), rng: random.Random | None = None, benchmark: str | Path | None = None):
        self.rater, self.path = _rater_name(rater), Path(path)
        self.relations, self.variants, self.seeds = list(relations), tuple(variants), tuple(seeds)
        self.rng = rng or random.Random()
        self.benchmark = Path(benchmark or REPO_ROOT / "data" / "world" / "benchmark")
        self.current: RatingSet | None = None
        self.saved: list[RatingSet] = []
        self.finished = False

    def next_set(self) -> RatingSet:
        """A set this rater has not saved yet (its images are drawn by :func:`draw_set`)."""
        if self.finished:
            raise RatingError("this session is finished; start a new one to rate more")
        done = self._done()
        for _ in range(200):
            candidate = sample_rating_set(self.rng.choice(self.relations), self.rng, self.variants, self.seeds)
            if _key(self.rater, candidate) not in done:
                self.current = candidate
                return candidate
        raise RatingError("you have rated every set of these relations: thank you")

    def shown(self, rating_set: RatingSet | None = None) -> dict:
        """What the rater sees of a set: relation, prompt in words, exemplar paths and instructions."""
        rating_set = rating_set or self._current()
        words = scene.RELATIONS[rating_set.relation].words
        n = len(rating_set.variants)
        return {"relation": words, "prompt": rating_set.prompt.replace("<r>", words),
                "exemplars": image_files(self.benchmark / rating_set.relation),
                "instructions": [f"The exemplar images show one relation, '{words}'. Below them, {n} images drawn for "
                                 f"the prompt, numbered 1 to {n} from the left, in a random order. Rank them twice, "
                                 f"{n} = best, 1 = worst:", INSTRUCTIONS["relation"], INSTRUCTIONS["entity"]]}

    def save(self, ranks: Mapping[str, Sequence[int]], ties: bool = False) -> str:
        """Store the current set's ranks, ``ranks[criterion][i]`` for image ``i + 1``; both criteria at once."""
        rating_set = self._current()
        n = len(rating_set.variants)
        if set(ranks) != set(CRITERIA) or any(len(ranks[c]) != n for c in CRITERIA):
            raise RatingError(f"give a rank to each of the {n} images for both {' and '.join(CRITERIA)}")
        if _key(self.rater, rating_set) in self._done():
            self.current = None
            raise RatingError("this set is already saved; draw a new set")
        for c in CRITERIA:  # checked here, by image: rows_for's messages would name the methods
            given = list(ranks[c])
            if not all(isinstance(r, int) and 1 <= r <= n for r in given) or (not ties and sorted(given) != list(range(1, n + 1))):
                raise RatingError(f"{c}: give each image a different rank 1..{n} ({n} = best), or tick ties "
                                  f"for images you cannot tell apart; got {given}")
        rows = [row for c in CRITERIA
                for row in rows_for(self.rater, rating_set, c, dict(zip(rating_set.variants, ranks[c])), ties)]
        append_ratings(self.path, rows)
        self.saved.append(rating_set)
        self.current = None
        return f"saved: set {len(self.saved)} of this session ({len(rows)} ranks) in {self.path}"

    def finish(self) -> str:
        """End the session; only now say which method drew which image, and this rater's averages."""
        self.finished, self.current = True, None
        if not self.saved:
            return "finished: nothing was saved"
        lines = [f"finished: {len(self.saved)} set(s) saved. The images were, from the left:"]
        lines += [f"  {s.prompt} (seed {s.seed}): " + ", ".join(PAPER_NAMES.get(v, v) for v in s.variants) for s in self.saved]
        mine = [r for r in read_ratings(self.path) if r["rater"] == self.rater]
        for criterion, by_relation in average_user_rank(mine).items():
            pooled = defaultdict(list)
            for ranks in by_relation.values():
                for v, x in ranks.items():
                    pooled[v].append(x)
            lines.append(f"your average {criterion} rank (4 = best): "
                         + ", ".join(f"{PAPER_NAMES.get(v, v)} {statistics.fmean(x):.2f}" for v, x in pooled.items()))
        return "\n".join(lines)

    def _current(self) -> RatingSet:
        if self.current is None:
            raise RatingError("draw a new set first")
        return self.current

    def _done(self) -> set[tuple]:
        if not self.path.is_file():
            return set()
        return {(r["rater"], r["relation"], r["prompt"], r["seed"]) for r in read_ratings(self.path)}


def _rater_name(rater: str) -> str:
    if not rater.strip() or "," in rater:
        raise RatingError(f"rater {rater.strip()!r}: give a name or initials without commas")
    return rater.strip()


def _key(rater: str, rating_set: RatingSet) -> tuple:
    return rater, rating_set.relation, rating_set.prompt, rating_set.seed


def read_ratings(*paths: str | Path) -> list[dict]:
    """Rows of one or more ``ratings.csv`` files, typed (seed int, rank float); bad rows raise."""
    rows = []
    for path in map(Path, paths):
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != FIELDS:
                raise RatingError(f"{path}: header must be {','.join(FIELDS)}, got {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                try:
                    rows.append({**row, "seed": int(row["seed"]), "rank": float(row["rank"])})
                except (TypeError, ValueError) as err:
                    raise RatingError(f"{path}:{line}: {err}; seed must be an integer and rank a number") from err
    return rows


def study_size(rows: Iterable[Mapping]) -> tuple[int, int]:
    """(raters, sets): how many people ranked, and how many (rater, prompt image set)s they ranked."""
    sets = {(r["rater"], r["relation"], r["prompt"], r["seed"]) for r in rows}
    return len({s[0] for s in sets}), len(sets)


def average_user_rank(rows: Iterable[Mapping]) -> dict[str, dict[str, dict[str, float]]]:
    """``aur[criterion][relation][variant]``: the rank averaged over raters and sets."""
    ranks: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        ranks[row["criterion"]][row["relation"]][row["variant"]].append(float(row["rank"]))
    return {c: {r: {v: statistics.fmean(x) for v, x in vs.items()} for r, vs in rels.items()} for c, rels in ranks.items()}
