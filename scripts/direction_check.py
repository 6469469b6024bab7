"""How often runs draw their relation the wrong way round ("B <r> A" instead of "A <r> B").

Evaluations made before the direction check did not score it. This regenerates a run's held-out
images exactly as its evaluation did (the run's own settings and learned tokens, the same image
seeds), checks that every image scores as recorded (entity, relation, fusion; a run whose images
differ is reported and left alone), and scores each image with A and B swapped. ``--write`` adds
the result to the run's ``eval/metrics.json`` ("reversed" per image, ``reversed_rate`` in the
summary), as an evaluation made today records it; the results notebook then shows it.

    python scripts/direction_check.py --runs runs --seeds 0 --write
"""

from __future__ import annotations

import argparse
import json
import time

from invrev import claims, evaluate, models, record, runs
from invrev.experiments import eval_settings

VARIANTS = ("textual_inversion", "reversion", "inv_reversion", "no_inverse")
RECORDED = ("entity", "relation", "fusion")  # what records made before the direction check hold per image


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs", help="a runs root or a record")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--relations", nargs="+", help="default: all that the runs hold")
    p.add_argument("--write", action="store_true", help="add the reversed hits to each run's eval/metrics.json")
    args = p.parse_args(argv)
    chosen = [r for r in record.load_runs(args.runs) if r["variant"] in args.variants and r["seed"] in args.seeds
              and (args.relations is None or r["relation"] in args.relations)]
    if not chosen:
        raise SystemExit(f"no evaluated runs of {args.variants}, seeds {args.seeds} under {args.runs}")
    unknown = [_name(r) for r in chosen if not r["batch"].get("parameters")]
    if unknown:
        raise SystemExit(f"{', '.join(unknown)}: no batch.json parameters, so the evaluation settings are unknown")
    used = {r["batch"]["parameters"]["model"] for r in chosen}
    if len(used) != 1:
        raise SystemExit(f"the runs were evaluated on several models ({sorted(used)}): choose them with --relations/--seeds")
    models.quiet_loading()
    components = evaluate.components_for_inference(used.pop())
    checked, start = [], time.perf_counter()
    for i, run in enumerate(chosen, 1):
        params = run["batch"]["parameters"]
        fresh = evaluate.evaluate(params["model"], run_folder=run["folder"], components=components, **eval_settings(params))
        differ = sum({k: a[k] for k in RECORDED} != {k: b[k] for k in RECORDED}
                     for a, b in zip(fresh["images"], run["images"], strict=True))
        if not differ:
            checked.append({**run, "images": fresh["images"]})
            if args.write:
                _write(run, fresh)
        s = fresh["summary"]
        print(f"[{i}/{len(chosen)}] {_name(run)}: relation {s['relation_accuracy']:.2f}, reversed {s['reversed_rate']:.2f}, "
              + (f"{differ} of {s['n']} images differ from the record: left alone" if differ else "same images as the record")
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
    print("\nReversed rate (the relation drawn with A and B swapped) of the runs with the recorded images:\n")
    print(claims.rate_table(checked, "reversed", args.variants))
    return checked


def _name(run: dict) -> str:
    return f"{run['relation']}/{run['variant']}/seed{run['seed']}"


def _write(run: dict, fresh: dict) -> None:
    """The recorded metrics with the direction check added; nothing else changes."""
    path = run["folder"] / "eval" / "metrics.json"
    metrics = json.loads(path.read_text())
    for image, new in zip(metrics["images"], fresh["images"], strict=True):
        image["reversed"] = new["reversed"]
    metrics["summary"].update(reversed_rate=fresh["summary"]["reversed_rate"], reversed_ci95=fresh["summary"]["reversed_ci95"])
    runs.atomic_write_json(path, metrics)


if __name__ == "__main__":
    main()
