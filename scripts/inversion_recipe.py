"""Check the world's inversion recipe on one relation's validation pairs (never its test prompts).

Each candidate is a set of config overrides on the world recipe; every candidate trains the same
variant with the same seed and is scored on ``benchmark.validation_pairs``. Prints a table and
writes it as JSON, so the choice of recipe and its evidence live in the repository.

    python scripts/inversion_recipe.py --relation hug --out docs/inversion_recipe.json \
        --candidate "" --candidate "steps=300" --candidate "learning_rate=0.005"

``--inverse-form`` also prompts a variant with the inverse text expansion in the form it was half
trained in, "B <inv> <r> A", on the same pairs and image seeds: whether the pair of tokens learned
the relation at all, or only ``<r>`` alone lost it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from invrev import evaluate, generate, runs, text, trainer
from invrev.config import parse_assignments
from invrev.experiments import run_config
from invrev.models import REPO_ROOT, load_components_cached

MODEL = "data/world/model"


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--relation", required=True)
    p.add_argument("--variant", default="inv_reversion")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidate", action="append", default=[], help='space-separated KEY=VALUE overrides ("" = the recipe)')
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--inverse-form", action="store_true", help='also score "B <inv> <r> A" prompts')
    p.add_argument("--out", help="JSON file for the rows")
    args = p.parse_args(argv)
    components = load_components_cached(MODEL, "local")
    word_norm = float(components.text_encoder.get_input_embeddings().weight.norm(dim=1).median())
    print(f"the vocabulary's median word-vector norm: {word_norm:.2f}", flush=True)
    rows = []
    for candidate in args.candidate or [""]:
        overrides = parse_assignments(candidate.split())
        config = run_config(REPO_ROOT / "data/world/benchmark" / args.relation, args.variant, model=MODEL,
                            seed=args.seed, **overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            folder = trainer.train(config, Path(tmp) / "run", components=components, progress=False)
            seconds = time.perf_counter() - start
            s = evaluate.evaluate(MODEL, args.relation, args.variant, folder, seed=args.seed, prompts=args.pairs,
                                  samples=args.samples, components=components, split="validation")["summary"]
            norms = {f"{token} norm": round(float(v.norm()), 2) for token, v in generate.read_run_tokens(folder).items()}
            inverse = (inverse_form(components, args.relation, folder, args.seed, args.pairs, args.samples)
                       if args.inverse_form and config.inverse else {})
        row = {"candidate": candidate or "(recipe)", "train_seconds": round(seconds, 1), "n": s["n"],
               **{k: round(s[k], 3) for k in ("entity_accuracy", "relation_accuracy", "fusion_rate")}, **inverse, **norms}
        rows.append(row)
        print(f"{row['candidate']:<40} relation {row['relation_accuracy']:.2f}  entity {row['entity_accuracy']:.2f}  "
              f"fusion {row['fusion_rate']:.2f}  n={row['n']}  train {row['train_seconds']} s  "
              + "  ".join(f"{k} {v}" for k, v in {**inverse, **norms}.items()), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"relation": args.relation, "variant": args.variant, "seed": args.seed,
                                              "model_fingerprint": runs.model_fingerprint(MODEL),
                                              "median_word_norm": round(word_norm, 2),
                                              "split": "validation", "rows": rows}, indent=1) + "\n")
    return rows


def inverse_form(components, relation: str, folder: Path, seed: int, pairs: int, samples: int) -> dict:
    """Relation and entity accuracy of "B <inv> <r> A" prompts on the validation pairs, with the
    image seeds ``evaluate`` gives "A <r> B" (so the two forms are compared image for image)."""
    generate.load_run_tokens(components, folder)
    items = evaluate.test_prompts(relation, "inv_reversion", pairs, split="validation")
    texts = [text.inverse_caption(it["prompt"].replace("<r>", "{}")) for it in items]
    _, scores = evaluate.draw(components, relation, items, texts, seed, samples)
    return {"inverse_form_relation_accuracy": round(sum(s.relation for s in scores) / len(scores), 3),
            "inverse_form_entity_accuracy": round(sum(s.entity for s in scores) / len(scores), 3)}


if __name__ == "__main__":
    main()
