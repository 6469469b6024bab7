"""The batch's old path against its new one, side by side on the same subset, in one invocation.

Old path: every run's notebook loads the model, trains its run and evaluates it (``invrev batch``).
New path: ``invrev batch --joint K``: one process per group of runs loads the model once, trains the
group's runs together and evaluates each; the notebooks then only show the record. Both paths use
the same workers, parameters and model, in fresh folders; each run is still a papermill notebook.
Prints the wall time of each, their ratio, and both paths' metrics per run; writes them as JSON.

    python scripts/bench_batch.py --relation hanging_from --workers 2 --joint 4 --out docs/bench_batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from invrev import batch, models, runs
from invrev.config import VARIANTS


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiments", default="experiments/full.yaml")
    p.add_argument("--relation", default="hanging_from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--joint", type=int, default=4, help="runs per group on the new path (7 variants over 2 workers: 4)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a run-notebook parameter for both paths")
    p.add_argument("--out", help="JSON file for the result")
    args = p.parse_args(argv)
    params = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    subset = dict(relations=[args.relation], variants=list(VARIANTS), seeds=[args.seed], **params)
    result = {"subset": f"{args.relation} x {len(VARIANTS)} variants x seed {args.seed}", "workers": args.workers,
              "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(), "params": params,
              "model_fingerprint": runs.model_fingerprint(models.WORLD_MODEL), "finished": None, "paths": {}}
    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        for name, joint in (("old", 0), ("new", args.joint)):
            root = Path(tmp) / name
            print(f"--- {name} path: invrev batch --workers {args.workers}" + (f" --joint {joint}" if joint else ""), flush=True)
            start = time.perf_counter()
            done = batch.run_batch(args.experiments, root, workers=args.workers, joint=joint, **subset)
            seconds = time.perf_counter() - start
            if done.failed:
                raise SystemExit(f"{name} path: {len(done.failed)} run(s) failed: {sorted(done.failed)}")
            metrics = {}
            for variant in VARIANTS:
                s = json.loads((runs.run_dir(root, args.relation, variant, args.seed) / "eval" / "metrics.json").read_text())["summary"]
                metrics[variant] = {k: round(s[k], 4) for k in ("entity_accuracy", "relation_accuracy", "fusion_rate")} | {"n": s["n"]}
            result["paths"][name] = {"joint": joint, "seconds": round(seconds, 1), "metrics": metrics}
    old, new = result["paths"]["old"], result["paths"]["new"]
    result["ratio"] = round(old["seconds"] / new["seconds"], 2)
    result["finished"] = runs.timestamp()
    print(f"\n{result['subset']}, {args.workers} workers on {result['cpus']} CPUs")
    print(f"old path {old['seconds']:.0f} s | new path (--joint {args.joint}) {new['seconds']:.0f} s | ratio {result['ratio']:.2f}x")
    print(f"{'variant':<18}{'old entity / relation / fusion':>34}{'new entity / relation / fusion':>34}")
    for variant in VARIANTS:
        a, b = old["metrics"][variant], new["metrics"][variant]
        row = lambda m: f"{m['entity_accuracy']:.3f} / {m['relation_accuracy']:.3f} / {m['fusion_rate']:.3f}"  # noqa: E731
        print(f"{variant:<18}{row(a):>34}{row(b):>34}")
    if args.out:
        runs.atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
