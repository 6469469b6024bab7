"""The paper's tables from a record of runs: accuracy pooled over seeds and prompts with Wilson
intervals and per-seed spread, and the average rank on the paper's 1–4 scale with the world's
scorer as the rater (one set per relation × seed × held-out prompt, as the paper's user study ranks
one prompt's images from four methods). People's ranks (``invrev.ratings``) join the same cells.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

from invrev.layout import prompt_index
from invrev.measure import wilson

PAPER_NAMES = {"sd": "SD", "textual_inversion": "Textual Inversion", "reversion": "ReVersion",
               "inv_reversion": "Inv-ReVersion", "no_inverse": "w/o inverse text",
               "no_pos_weight": "w/o POS weighting", "no_hf": "w/o HF suppressor"}


def rank(scores: Mapping[str, float]) -> dict[str, float]:
    """Ranks 1..n with n = best (the paper's scale); tied scores share the mean of their ranks."""
    ordered = sorted(scores.values())
    return {k: statistics.fmean(i + 1 for i, s in enumerate(ordered) if s == v) for k, v in scores.items()}


# The scorer as rater ------------------------------------------------------------------------------

def automatic_rank(runs: Iterable[Mapping], variants: Sequence[str], criterion: str) -> dict[str, dict[str, float]]:
    """``rank[relation][variant]``: the variants ranked by the scorer per relation × seed × prompt.

    A set's score for a variant is the fraction of that prompt's images passing ``criterion``; sets
    where a variant has no run are left out, so every variant is ranked on the same sets.
    """
    scores: dict = defaultdict(lambda: defaultdict(dict))  # (relation, seed, prompt) -> variant -> hits
    for run in runs:
        if run["variant"] not in variants:
            continue
        by_prompt = defaultdict(list)
        for image in run["images"]:
            by_prompt[prompt_index(image["seed"])].append(image[criterion])
        for index, hits in by_prompt.items():
            scores[run["relation"]][(run["seed"], index)][run["variant"]] = statistics.fmean(hits)
    out = {}
    for relation, sets in scores.items():
        ranked = [rank(s) for s in sets.values() if len(s) == len(variants)]
        if ranked:
            out[relation] = {v: statistics.fmean(r[v] for r in ranked) for v in variants}
    return out


def mean_rank(runs: Iterable[Mapping], variants: Sequence[str], criterion: str = "relation") -> dict[str, float]:
    """Each variant's :func:`automatic_rank` averaged over relations (the paper's 1-4 scale when
    four variants are ranked); empty without a set that all ``variants`` drew."""
    ranks = automatic_rank(runs, variants, criterion)
    return {v: statistics.fmean(ranks[r][v] for r in ranks) for v in variants} if ranks else {}


def accuracy(runs: Iterable[Mapping], variant: str, criterion: str, relation: str | None = None) -> dict | None:
    """Images pooled over seeds and prompts (of one relation, or all): the rate, its Wilson 95%
    interval, and the spread (sample standard deviation) of the per-seed rates; None without runs."""
    chosen = [r for r in runs if r["variant"] == variant and relation in (None, r["relation"])]
    if not chosen:
        return None
    hits = [int(image[criterion]) for r in chosen for image in r["images"]]
    per_seed = defaultdict(list)
    for r in chosen:
        per_seed[r["seed"]].extend(int(image[criterion]) for image in r["images"])
    rates = [statistics.fmean(x) for x in per_seed.values() if x]
    lo, hi = wilson(sum(hits), len(hits))
    return {"rate": sum(hits) / len(hits) if hits else math.nan, "ci95": (lo, hi), "n": len(hits),
            "seeds": len(rates), "seed_sd": statistics.stdev(rates) if len(rates) > 1 else math.nan}


def markdown_table(runs: Sequence[Mapping], variants: Sequence[str], criterion: str,
                   user: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> str:
    """The paper's table for one criterion: a row per relation and one pooled over all, a column per
    variant; a cell reads "accuracy [95% interval] ±seed spread · automatic rank (· user rank)"."""
    auto = automatic_rank(runs, variants, criterion)
    people = (user or {}).get(criterion, {})
    relations = list(dict.fromkeys(r["relation"] for r in runs))
    lines = ["| relation | " + " | ".join(PAPER_NAMES.get(v, v) for v in variants) + " |",
             "| --- |" + " --- |" * len(variants)]
    for relation in [*relations, None]:
        cells = []
        for v in variants:
            acc = accuracy(runs, v, criterion, relation)
            if acc is None:
                cells.append("–")
                continue
            ranks = [auto[r][v] for r in ([relation] if relation else auto) if r in auto]
            users = [people[r][v] for r in ([relation] if relation else people) if v in people.get(r, {})]
            cell = f"{acc['rate']:.2f} [{acc['ci95'][0]:.2f}, {acc['ci95'][1]:.2f}]"
            cell += f" ±{acc['seed_sd']:.2f}" if not math.isnan(acc["seed_sd"]) else ""
            cell += f" · rank {statistics.fmean(ranks):.2f}" if ranks else ""
            cell += f" · user {statistics.fmean(users):.2f}" if users else ""
            cells.append(cell)
        lines.append(f"| {relation or '**all**'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
