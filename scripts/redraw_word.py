"""Redraw the row of an unnamed relation's evaluation word, on validation pairs (never test prompts).

An evaluation word of an unnamed relation ("painted" of "painted on") occurs in no pretraining
caption, so its row of the token table is its random initial draw. A draw can land near trained
words by chance and let the words reach the relation they must not reach. This scores the word's
row as it is and redrawn from each seed (``premises.word_leak``), keeps the row with the lowest
relation accuracy (``premises.choose_draw``), and, with ``--out``, writes a copy of the model with
that row and the evidence in its ``invrev.json`` (``edits``). Everything else is byte for byte.

    python scripts/redraw_word.py --word painted --relation painted_on --draws 8 \
        --json docs/world_v2/redraw_painted.json --out world_v2c/model
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from invrev.models import WORLD_MODEL, load_components_cached
from invrev.world import scene
from invrev.world_model import premises


def write_model(model: Path, out: Path, tokenizer, word: str, draw: int, evidence: dict) -> Path:
    """A copy of ``model`` with ``word``'s row (by ``tokenizer``, the model's) redrawn from ``draw``,
    ``evidence`` in ``invrev.json``."""
    if out.exists():
        raise FileExistsError(f"{out} exists: choose a new --out (nothing is overwritten)")
    shutil.copytree(model, out)
    weights = out / "text_encoder" / "model.safetensors"
    state = load_file(weights)
    with safe_open(weights, "pt") as f:
        metadata = f.metadata()
    table = next(k for k in state if k.endswith("token_embedding.weight"))
    i = premises.word_row(tokenizer, word)
    state[table][i] = premises.redrawn(state[table][i], draw).to(state[table].dtype)
    save_file(state, weights, metadata=metadata)
    info = json.loads((out / "invrev.json").read_text())
    info.setdefault("edits", []).append(evidence)
    (out / "invrev.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--word", required=True)
    p.add_argument("--relation", required=True, choices=sorted(r for r, i in scene.RELATIONS.items() if not i.named))
    p.add_argument("--draws", type=int, default=8, help="seeds 1..N are tried beside the row as it is")
    p.add_argument("--first", type=int, default=1, help="the first seed")
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--model", default=str(WORLD_MODEL))
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--out", help="write the model with the chosen row here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.word not in scene.RELATIONS[args.relation].words.split():
        raise SystemExit(f"--word {args.word!r} is not one of {args.relation}'s evaluation words "
                         f"({scene.RELATIONS[args.relation].words!r})")
    components = load_components_cached(args.model, "local")
    draws = [None] + list(range(args.first, args.first + args.draws))
    rows = premises.word_leak(components, args.word, args.relation, draws, args.pairs, args.samples)
    best = premises.choose_draw(rows)
    result = {"word": args.word, "relation": args.relation, "split": "validation", "rows": rows, "chosen": best["draw"]}
    chosen = "the row as it is" if best["draw"] is None else f"seed {best['draw']}"
    print(f"chosen: {chosen} "
          f"(relation {best['relation_accuracy']:.2f}, entity {best['entity_accuracy']:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.out and best["draw"] is not None:
        evidence = {"what": f"the row of {args.word!r} (an evaluation word of {args.relation}, in no caption) redrawn",
                    "seed": best["draw"], "chosen_on": "validation pairs", **{k: v for k, v in result.items() if k != "chosen"}}
        print("written:", write_model(Path(args.model), Path(args.out), components.tokenizer, args.word, best["draw"], evidence))
    return result


if __name__ == "__main__":
    main()
