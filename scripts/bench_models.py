"""Two world models' training speed, side by side in one process: seconds per training step.

A model is a folder, or ``git:<commit>`` for the shipped model as that commit held it (extracted
from the repository into a temporary folder). Trains the same run (one relation, one variant, the
world recipe) on each model in turn, the two interleaved ``--repeats`` times so that whatever else
loads the machine loads both alike, and reads the trainer's own per-step clock from each run's
``log.csv`` (the first step, which warms up, left out). Prints each model's mean, their ratio and
every reading; writes them as JSON with ``--out``.

    python scripts/bench_models.py --a git:522aa17 --out docs/world_v2/train_speed.json   # world v1's model against the shipped one
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tarfile
import tempfile
from pathlib import Path

import torch

from invrev import runs
from invrev.config import make_config
from invrev.models import REPO_ROOT, WORLD_MODEL, load_components, quiet_loading
from invrev.trainer import train_many


def seconds_per_step(log: Path) -> float:
    """Mean seconds per step from a run's ``log.csv`` (cumulative ``seconds``), the first step left out."""
    seconds = [float(row.split(",")[-1]) for row in log.read_text().strip().splitlines()[1:]]
    if len(seconds) < 3:
        raise SystemExit(f"{log}: {len(seconds)} logged step(s); give --steps 3 or more")
    return (seconds[-1] - seconds[0]) / (len(seconds) - 1)


def model_folder(model: str, tmp: Path) -> str:
    """A model folder for ``model``: itself, or for ``git:<commit>`` the shipped model at that commit."""
    if model.startswith("git:"):
        commit = model[4:]
        archive = tmp / f"{commit}.tar"
        done = subprocess.run(["git", "archive", "-o", str(archive), commit, WORLD_MODEL], cwd=REPO_ROOT,
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{model}: git archive failed: {done.stderr.strip()} (give a commit that holds {WORLD_MODEL})")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp / commit, filter="data")
        return str(tmp / commit / WORLD_MODEL)
    for folder in (Path(model), REPO_ROOT / model):  # as given, else in the repository
        if (folder / "unet").is_dir():
            return str(folder)
    raise SystemExit(f"{model}: not a world model folder (no unet/ inside); give a folder or git:<commit>")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="a world model folder, or git:<commit>")
    p.add_argument("--b", default=WORLD_MODEL, help="another (default: the shipped model)")
    p.add_argument("--relation", default="on")
    p.add_argument("--variant", default="reversion")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="JSON file for the result")
    args = p.parse_args(argv)
    names = {"a": args.a, "b": args.b}
    readings: dict[str, list[float]] = {"a": [], "b": []}
    exemplars = REPO_ROOT / "data" / "world" / "benchmark" / args.relation
    torch.set_num_threads(args.threads)
    quiet_loading()
    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp:
        folders = {k: model_folder(v, Path(tmp)) for k, v in names.items()}
        components = {k: load_components(v) for k, v in folders.items()}
        for repeat in range(args.repeats):
            for key, model in folders.items():
                config = make_config(exemplars, args.variant, recipe="world", model=model, steps=args.steps)
                run = Path(tmp) / f"run_{key}_{repeat}"
                train_many([config], [run], components=components[key], progress=False)
                readings[key].append(round(seconds_per_step(run / "log.csv"), 4))
                print(f"repeat {repeat + 1}/{args.repeats} {key}: {readings[key][-1]:.3f} s/step", flush=True)
    means = {k: statistics.mean(v) for k, v in readings.items()}
    result = {"models": {k: {"model": names[k], "seconds_per_step": round(means[k], 4), "readings": readings[k]} for k in names},
              "run": f"{args.relation} x {args.variant}, {args.steps} steps x batch {config.batch_size}",
              "threads": args.threads, "cpus": os.cpu_count(), "ratio_b_over_a": round(means["b"] / means["a"], 3),
              "finished": runs.timestamp()}
    print(f"a {means['a']:.3f} s/step | b {means['b']:.3f} s/step | b / a {result['ratio_b_over_a']:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
