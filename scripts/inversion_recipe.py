"""Check the world's inversion recipe on one relation's validation pairs (never its test prompts).

Each candidate is a set of config overrides on the world recipe; every candidate trains the same
variant with the same seed and is scored on ``benchmark.validation_pairs``. Prints a table and
writes it as JSON, so the choice of recipe and its evidence live in the repository.

    python scripts/inversion_recipe.py --relation hug --out docs/inversion_recipe.json \
        --candidate "" --candidate "steps=300" --candidate "learning_rate=0.005"

``--inverse-form`` also prompts a variant with the inverse text expansion in the form it was half
trained in, "B <inv> <r> A", on the same pairs and image seeds: whether the pair of tokens learned
the relation at all, or only ``<r>`` alone lost it. ``--swap-form`` prompts the learned ``<r>`` in
the world's role swap, "B ob <r> A" (scored as "A <r> B"): whether a token learned without any
inverse text takes part in the encoder's role swap. A run with ``<inv>`` also records the cosine
between ``<inv>`` and the swap word's row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from invrev import evaluate, generate, measure, runs, trainer
from invrev.config import parse_assignments
from invrev.experiments import run_config
from invrev.models import REPO_ROOT, WORLD_MODEL, load_components_cached
from invrev.world.scene import SWAP_WORD


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--relation", required=True)
    p.add_argument("--variant", default="inv_reversion")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidate", action="append", default=[], help='space-separated KEY=VALUE overrides ("" = the recipe)')
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--inverse-form", action="store_true", help='also score "B <inv> <r> A" prompts')
    p.add_argument("--swap-form", action="store_true", help=f'also score "B {SWAP_WORD} <r> A" prompts')
    p.add_argument("--model", default=WORLD_MODEL, help="a world model folder (default: the embedded one)")
    p.add_argument("--out", help="JSON file for the rows")
    args = p.parse_args(argv)
    components = load_components_cached(args.model, "local")
    word_norm = float(components.text_encoder.get_input_embeddings().weight.norm(dim=1).median())
    print(f"the vocabulary's median word-vector norm: {word_norm:.2f}", flush=True)
    rows = []
    for candidate in args.candidate or [""]:
        overrides = parse_assignments(candidate.split())
        config = run_config(REPO_ROOT / "data/world/benchmark" / args.relation, args.variant, model=args.model,
                            seed=args.seed, **overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            folder = trainer.train(config, Path(tmp) / "run", components=components, progress=False)
            seconds = time.perf_counter() - start
            s = evaluate.evaluate(args.model, args.relation, args.variant, folder, seed=args.seed, prompts=args.pairs,
                                  samples=args.samples, components=components, split="validation")["summary"]
            learned = generate.read_run_tokens(folder)
            norms = {f"{token} norm": round(float(v.norm()), 2) for token, v in learned.items()}
            if config.inverse:
                swap_row = embeddings_row(components, SWAP_WORD)
                norms[f"cos(<inv>, {SWAP_WORD})"] = round(float(torch.nn.functional.cosine_similarity(
                    learned[config.inverse_placeholder].float(), swap_row, dim=0)), 3)
            inverse = {**(other_form(components, args.relation, folder, "inverse", args.seed, args.pairs, args.samples)
                          if args.inverse_form and config.inverse else {}),
                       **(other_form(components, args.relation, folder, "swap_token", args.seed, args.pairs, args.samples)
                          if args.swap_form else {})}
        row = {"candidate": candidate or "(recipe)", "train_seconds": round(seconds, 1), "n": s["n"],
               **{k: round(s[k], 3) for k in ("entity_accuracy", "relation_accuracy", "fusion_rate")}, **inverse, **norms}
        rows.append(row)
        print(f"{row['candidate']:<40} relation {row['relation_accuracy']:.2f}  entity {row['entity_accuracy']:.2f}  "
              f"fusion {row['fusion_rate']:.2f}  n={row['n']}  train {row['train_seconds']} s  "
              + "  ".join(f"{k} {v}" for k, v in {**inverse, **norms}.items()), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"relation": args.relation, "variant": args.variant, "seed": args.seed,
                                              "model_fingerprint": runs.model_fingerprint(args.model),
                                              "median_word_norm": round(word_norm, 2),
                                              "split": "validation", "rows": rows}, indent=1) + "\n")
    return rows


def other_form(components, relation: str, folder: Path, kind: str, seed: int, pairs: int, samples: int) -> dict:
    """Relation and entity accuracy of the learned tokens prompted in another form (``measure.KINDS``:
    "inverse" is "B <inv> <r> A", "swap_token" is "B ob <r> A") on the validation pairs, scored as
    "A <r> B", with the image seeds ``evaluate`` gives "A <r> B" (the forms compared image for image)."""
    generate.load_run_tokens(components, folder)
    items = measure.items(relation, kind, pairs, split="validation")
    summary = measure.summarise(measure.draw(components, items, seed, samples)[1])
    name = {"inverse": "inverse_form", "swap_token": "swap_form"}[kind]
    return {f"{name}_relation_accuracy": round(summary["relation_accuracy"], 3),
            f"{name}_entity_accuracy": round(summary["entity_accuracy"], 3),
            f"{name}_reversed_rate": round(summary["reversed_rate"], 3)}


def embeddings_row(components, word: str) -> torch.Tensor:
    """The token-table row of a single-token ``word``."""
    tok = components.tokenizer
    return components.text_encoder.get_input_embeddings().weight[tok.convert_tokens_to_ids(f"{word}</w>")].detach().float()


if __name__ == "__main__":
    main()
