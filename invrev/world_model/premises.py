"""Does a world model give each mechanism of the paper what it acts on in SD 1.5? Measured before any batch.

- The role swap (the inverse text expansion's premise): per benchmark relation, the forward prompt
  (a named relation's words, an unnamed one's handle) and the same words in the swap construction,
  "B ob <words> A", drawn from the same noise and both scored as "A <words> B"; unnamed relations
  also in their evaluation words, which must fail.
- The words (the steering loss's and the POS weighting's premise): which steering positives are
  trained rows (occur in some pretraining caption), and the cosine structure of the token table:
  are prepositions nearer each other than entity words are?
"""

from __future__ import annotations

import itertools

import torch

from invrev import measure
from invrev.evaluate import components_for_inference
from invrev.words import load_words
from invrev.world import scene

SUMMARY = ("n", "entity_accuracy", "relation_accuracy", "reversed_rate", "relation_ci95")
# Steering positives that could describe a scene of the world but stay out of pretraining, and why
# (docs/decisions.md, "world language v2"). Every other untrained list word means nothing in a
# world of two still shapes (about, across, kissing, eating, ...).
KEPT_OUT = {
    **dict.fromkeys(("painted", "wrapped", "hugging", "shaking"), "an unnamed relation's evaluation word"),
    **dict.fromkeys(("hold", "hug", "ride", "carry", "wrap", "paint", "carve", "cover", "shake", "touch"),
                    "a base form: no place in an 'A <words> B' caption"),
    **dict.fromkeys(("woven", "climbing", "facing", "outside"), "describes no scene without also describing another"),
}


def swap_table(model: str, split: str = "validation", prompts: int = 20, samples: int = 4, seed: int = 0,
               progress: bool = True) -> list[dict]:
    """Per benchmark relation: ``forward``, ``swap`` and (unnamed relations) ``words`` cells of
    ``prompts`` × ``samples`` images on ``split``'s pairs (n = 80 by default)."""
    components = components_for_inference(model)
    rows = []
    for relation, info in sorted(scene.RELATIONS.items()):
        kinds = {"forward": "words" if info.named else "handle", "swap": "swap"}
        if not info.named:
            kinds["words"] = "words"
        row = {"relation": relation, "named": info.named, "said": info.words if info.named else info.handle,
               "held_out_of_swaps": relation in scene.SWAP_HELD_OUT}
        for name, kind in kinds.items():
            summary = measure.cell(components, relation, kind, prompts, seed, samples, split)
            row[name] = {k: summary[k] for k in SUMMARY}
        rows.append(row)
        if progress:
            print(f"  {relation:13s} forward {row['forward']['relation_accuracy']:.2f} swap "
                  f"{row['swap']['relation_accuracy']:.2f} (reversed {row['swap']['reversed_rate']:.2f})"
                  + (f" words {row['words']['relation_accuracy']:.2f}" if "words" in row else ""), flush=True)
    return rows


def caption_words(v2: bool = True) -> set[str]:
    """Every word a pretraining caption can hold: the world language v2's (``v2``) or the one before
    it (relation words, their inverse paraphrases, handles, "and")."""
    words = {"a", "and"} | {w for e in scene.ENTITIES for w in e.text.split()}
    for info in scene.ALL_RELATIONS.values():
        phrases = [info.words if info.named else "", info.inverse_words or "", info.handle or ""]
        if v2:
            phrases += [*info.synonyms, *info.converses]
        for phrase in phrases:
            words.update(phrase.split())
    return words | ({scene.SWAP_WORD} if v2 else set())


def trained_share(v2: bool = True) -> dict[str, dict]:
    """Per steering list: how many of its words occur in pretraining captions, and which do not."""
    seen = caption_words(v2)
    out = {}
    for kind in ("prepositions", "verbs"):
        listed = load_words(kind)
        out[kind] = {"listed": len(listed), "trained": sum(w in seen for w in listed),
                     "untrained": [w for w in listed if w not in seen]}
    # What has a meaning in the world is the world's, whichever captions a model saw: v2's words or KEPT_OUT.
    meaning = (caption_words(True) | set(KEPT_OUT)) & {w for kind in ("prepositions", "verbs") for w in load_words(kind)}
    trained = len(meaning & seen)
    out["with a world meaning"] = {"trained": trained, "of": len(meaning), "share": round(trained / len(meaning), 3)}
    return out


def cosine_structure(model: str, v2: bool = True) -> dict[str, float]:
    """Mean pairwise cosine of token-table rows within the trained prepositions, within the trained
    verbs (those the model's captions held: world language ``v2`` or before), within the entity
    words (colours and shapes), and between prepositions and entity words."""
    components = components_for_inference(model)
    tok, table = components.tokenizer, components.text_encoder.get_input_embeddings().weight.detach().float()
    seen = caption_words(v2)

    def rows(words):
        ids = [tok.convert_tokens_to_ids(f"{w}</w>") for w in words if w in seen]
        return torch.nn.functional.normalize(table[[i for i in ids if i != tok.unk_token_id]], dim=1)

    groups = {"prepositions": rows(load_words("prepositions")), "verbs": rows(load_words("verbs")),
              "entity words": rows(list(scene.COLOURS) + list(scene.SHAPES))}

    def within(x):
        pairs = list(itertools.combinations(range(len(x)), 2))
        return float(sum((x[i] @ x[j]).item() for i, j in pairs) / len(pairs)) if pairs else float("nan")

    out = {f"within {name}": round(within(x), 3) for name, x in groups.items()}
    out["prepositions to entity words"] = round(float((groups["prepositions"] @ groups["entity words"].T).mean()), 3)
    out["counts"] = {name: len(x) for name, x in groups.items()}
    return out


def format_swap_table(rows: list[dict]) -> str:
    """The role-swap premise as a markdown table: relation accuracy forward and swapped (with the
    swapped prompts' reversed rate: drawn in caption order), and the unnamed relations in words."""
    lines = ["| relation | said | forward: relation (entity) | \"B ob … A\": relation (entity) | swap drawn in caption order | in words | n |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cell = lambda c: f"{c['relation_accuracy']:.2f} ({c['entity_accuracy']:.2f})"  # noqa: E731
        held = " (never shown swapped)" if r["held_out_of_swaps"] else ""
        words = f"{r['words']['relation_accuracy']:.2f}" if "words" in r else "–"
        lines.append(f"| {r['relation']} | \"{r['said']}\"{held} | {cell(r['forward'])} | {cell(r['swap'])} | "
                     f"{r['swap']['reversed_rate']:.2f} | {words} | {r['forward']['n']} |")
    return "\n".join(lines)


def word_row(tokenizer, word: str) -> int:
    """The token id of ``word``, which must be one whole word of the model's vocabulary."""
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"word {word!r} is {len(ids)} tokens in this model's vocabulary, not one whole word: "
                         "only a whole word has a row of its own to redraw")
    return ids[0]


def redrawn(row: torch.Tensor, seed: int) -> torch.Tensor:
    """A fresh draw for an untrained ``row``: a standard normal vector from ``seed``, scaled to the
    row's norm (an untrained row is its initial draw, shrunk a little by weight decay), rounded to
    fp16 as the shipped weights hold it."""
    draw = torch.randn(row.shape, generator=torch.Generator().manual_seed(seed))
    return (draw / draw.norm() * row.float().norm()).half()


def redraw_row(text_encoder, tokenizer, word: str, seed: int) -> torch.Tensor:
    """Set ``word``'s row of the token table to :func:`redrawn`; returns the row it replaced."""
    table = text_encoder.get_input_embeddings().weight
    i = word_row(tokenizer, word)
    old = table.data[i].clone()
    table.data[i] = redrawn(old, seed).to(table.dtype)
    return old


def word_leak(components, word: str, relation: str, draws: list[int | None], prompts: int = 20, samples: int = 4,
              seed: int = 0, progress: bool = True) -> list[dict]:
    """An unnamed relation prompted in its evaluation words on validation pairs, with ``word``'s row
    as it is (``None``) and redrawn from each seed of ``draws``: entity and relation accuracy per row
    and the row's nearest trained words (cosine), the same images' noise for every row."""
    tok, encoder = components.tokenizer, components.text_encoder
    table, i = encoder.get_input_embeddings().weight, word_row(tok, word)
    original = table.data[i].clone()
    trained = sorted(caption_words(True))
    trained_rows = torch.nn.functional.normalize(table.detach()[[word_row(tok, w) for w in trained]].float(), dim=1)
    rows = []
    try:
        for draw in draws:
            if draw is not None:
                redraw_row(encoder, tok, word, draw)
            near = (trained_rows @ torch.nn.functional.normalize(table.detach()[i].float(), dim=0)).topk(3)
            summary = measure.cell(components, relation, "words", prompts, seed, samples, "validation")
            rows.append({"draw": draw, **{k: summary[k] for k in SUMMARY},
                         "nearest": [[trained[j], round(float(v), 3)] for v, j in zip(near.values, near.indices)]})
            if progress:
                print(f"  {word!r} {'as trained' if draw is None else f'redrawn, seed {draw}':18s} entity "
                      f"{summary['entity_accuracy']:.2f} relation {summary['relation_accuracy']:.2f} "
                      f"(n={summary['n']}); nearest {rows[-1]['nearest'][0]}", flush=True)
            table.data[i] = original
    finally:
        table.data[i] = original
    return rows


def choose_draw(rows: list[dict]) -> dict:
    """The row with the lowest relation accuracy in words; ties go to the higher entity accuracy
    (the words baseline should still draw the entities)."""
    return min(rows, key=lambda r: (r["relation_accuracy"], -r["entity_accuracy"]))
