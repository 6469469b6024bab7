"""The short tables the README and the landing page show, computed from a record of runs.

A table in a Markdown file sits between two markers that name it and the record it is computed from:

    <!-- invrev:table table1 results/latest -->
    | ... the table ... |
    <!-- /invrev:table -->

``invrev tables --update README.md`` rewrites every such block from its record; a test fails when a
block is not what its record gives, so the README cannot drift from the numbers.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

from invrev.claims import WORLD_RECORDS, across_worlds, worlds_table
from invrev.claims import pooled as _pooled
from invrev.config import TABLE1, TABLE2
from invrev.runs import repo_path
from invrev.tables import PAPER_NAMES, mean_rank
from invrev.world.scene import RELATIONS

NAMES = {"sd": "SD (words)"}
BLOCK = re.compile(r"(<!-- invrev:table (?P<name>[\w-]+) (?P<record>\S+) -->\n)(?P<body>.*?)(<!-- /invrev:table -->)", re.S)


def table1(runs: Sequence[Mapping]) -> str:
    """Table 1 in brief: relation accuracy pooled over all relations, the automatic rank, the unnamed
    and named relations apart, and entity accuracy; the best of each row in bold."""
    named = [r for r in RELATIONS if RELATIONS[r].named]
    ranks = mean_rank(runs, TABLE1)
    rows = [("all 10 relations", {v: _pooled(runs, v, "relation") for v in TABLE1}, _cell_spread, max),
            ("automatic rank (4 = best)", {v: ranks.get(v) for v in TABLE1}, lambda x: f"{x:.2f}", max),
            ("5 unnamed relations", {v: _pooled(runs, v, "relation", [r for r in RELATIONS if r not in named]) for v in TABLE1},
             _cell_rate, max),
            ("5 named relations", {v: _pooled(runs, v, "relation", named) for v in TABLE1}, _cell_rate, max),
            ("entity accuracy, all", {v: _pooled(runs, v, "entity") for v in TABLE1}, _cell_rate, max)]
    return _table(["measure", *(NAMES.get(v, PAPER_NAMES[v]) for v in TABLE1)], TABLE1, rows)


def table2(runs: Sequence[Mapping]) -> str:
    """Table 2 in brief: relation accuracy and fusion rate (lower is better) of the full method and
    each ablation."""
    variants = [TABLE2[-1], *TABLE2[:-1]]
    rows = [("relation accuracy, all", {v: _pooled(runs, v, "relation") for v in variants}, _cell_interval, max),
            ("fusion rate (lower is better)", {v: _pooled(runs, v, "fusion") for v in variants}, _cell_interval, min)]
    return _table(["ablation (Table 2)", *(PAPER_NAMES[v] for v in variants)], variants, rows)


UNNAMED_VARIANTS = ("textual_inversion", "reversion", "inv_reversion", "no_inverse")
LIFT = 0.40  # what counts as a learned token reaching a relation its words cannot


def unnamed(runs: Sequence[Mapping], manifest: str | Path = "data/world/manifest.json") -> str:
    """The unnamed relations in words (``sd``) against each learned token, and by the handle (the
    shipped model's report, ``manifest``'s ``words_report``): relation accuracy, the best token in
    bold, and how many relations each lifts by at least ``LIFT`` above its words."""
    report = {r["relation"]: r for r in json.loads(repo_path(manifest).read_text())["words_report"]}
    relations = [r for r in dict.fromkeys(run["relation"] for run in runs) if r in RELATIONS and not RELATIONS[r].named]
    header = ["relation", "in words", *(PAPER_NAMES[v] for v in UNNAMED_VARIANTS), "the handle (upper bound)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lifted = dict.fromkeys([*UNNAMED_VARIANTS, "handle"], 0)
    for relation in relations:
        words = _pooled(runs, "sd", "relation", [relation])
        rates = {v: _pooled(runs, v, "relation", [relation]) for v in UNNAMED_VARIANTS}
        rates = {v: a["rate"] if a else None for v, a in rates.items()}
        rates["handle"] = report.get(relation, {}).get("handle", {}).get("relation_accuracy")
        bold = _single_best({v: x for v, x in rates.items() if v != "handle"})
        cells = []
        for v, x in rates.items():
            if x is None:
                cells.append("–")
                continue
            if words and x - words["rate"] >= LIFT:
                lifted[v] += 1
            cells.append(f"**{x:.2f}**" if v == bold else f"{x:.2f}")
        lines.append(f"| {relation} | {words['rate']:.2f} | " + " | ".join(cells) + " |" if words else
                     f"| {relation} | – | " + " | ".join(cells) + " |")
    lines.append(f"| lifted ≥ {LIFT:.2f} above words | | " + " | ".join(f"{n} of {len(relations)}" for n in lifted.values()) + " |")
    return "\n".join(lines)


def worlds(records: Mapping[str, Sequence[Mapping]]) -> str:
    """Each claim's verdict (no evidence) in each of several records, one column per record: a record
    named in ``claims.WORLD_RECORDS`` goes by its label there (``claims.worlds_table``)."""
    labels = {path: label for label, path in WORLD_RECORDS.items()}
    found = {labels.get(path, path): runs for path, runs in records.items()}
    return worlds_table(across_worlds(found), list(found), evidence=False)


TABLES: dict[str, Callable[[Sequence[Mapping]], str]] = {"table1": table1, "table2": table2, "unnamed": unnamed}
# Tables of several records, named in the marker joined by "+" (``results/world_v1+results/latest``).
MANY: dict[str, Callable[[Mapping[str, Sequence[Mapping]]], str]] = {"worlds": worlds}


def blocks(text: str) -> list[dict]:
    """The table blocks of a Markdown text: name, record and the body as written."""
    return [{"name": m["name"], "record": m["record"], "body": m["body"]} for m in BLOCK.finditer(text)]


def render(text: str, root: str | Path, load: Callable[[Path], Sequence[Mapping]]) -> str:
    """``text`` with every table block recomputed from its record (a path under ``root``), each
    record loaded once by ``load``."""
    loaded: dict[str, Sequence[Mapping]] = {}

    def runs_of(path: str) -> Sequence[Mapping]:
        if path not in loaded:
            loaded[path] = load(Path(root) / path)
            if not loaded[path]:
                raise FileNotFoundError(f"the record {path!r} named by an invrev:table marker holds no evaluated "
                                        "runs (run `invrev batch` then `invrev collect`)")
        return loaded[path]

    def fill(m: re.Match) -> str:
        paths = m["record"].split("+")
        if m["name"] in MANY:
            table = MANY[m["name"]]({path: runs_of(path) for path in paths})
        elif m["name"] in TABLES and len(paths) == 1:
            table = TABLES[m["name"]](runs_of(paths[0]))
        elif m["name"] in TABLES:
            raise ValueError(f"table {m['name']!r} reads one record, not {m['record']!r}; only "
                             f"{', '.join(MANY)} read several, joined by '+'")
        else:
            raise ValueError(f"unknown table {m['name']!r} in an invrev:table marker; known: {', '.join([*TABLES, *MANY])}")
        return m.group(1) + table + "\n" + m.group(5)

    return BLOCK.sub(fill, text)


def _cell_rate(acc) -> str:
    return f"{acc['rate']:.2f}"


def _cell_interval(acc) -> str:
    return f"{acc['rate']:.2f} [{acc['ci95'][0]:.2f}, {acc['ci95'][1]:.2f}]"


def _cell_spread(acc) -> str:
    spread = f" ±{acc['seed_sd']:.2f}" if not math.isnan(acc["seed_sd"]) else ""
    return _cell_interval(acc) + spread


def _value(x) -> float | None:
    return None if x is None else x if isinstance(x, float) else x["rate"]


def _single_best(values: Mapping[str, float | None], best=max) -> str | None:
    """The key whose value, at the two decimals shown, is the ``best`` and no other key's; None on a tie."""
    shown = {k: round(x, 2) for k, x in values.items() if x is not None}
    top = best(shown.values(), default=None)
    winners = [k for k, x in shown.items() if x == top]
    return winners[0] if len(winners) == 1 else None


def _table(header: Sequence[str], variants: Sequence[str], rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for label, values, fmt, best in rows:
        bold = _single_best({v: _value(values[v]) for v in variants}, best)
        cells = ["–" if values[v] is None else re.sub(r"^([\d.]+)", r"**\1**", fmt(values[v])) if v == bold
                 else fmt(values[v]) for v in variants]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
