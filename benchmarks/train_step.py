"""Speed of one training step at SD 1.5 scale: a ReVersion-style step against invrev's (issue 4).

Builds SD 1.5-shaped components with random weights (random weights time exactly like real ones;
nothing is downloaded), writes a few synthetic exemplars, and measures in one process, side by side:

- a reference-style step, written below as ReVersion's ``train.py`` does it: fp32, the VAE encoding
  the exemplars every micro-batch, batch 2 x accumulation 4, AdamW over the whole token table and the
  other rows copied back after every micro-batch;
- invrev's default single-run step, ``invrev.trainer.train_many([config])`` (bf16 on CUDA, cached
  latents, frozen UNet with input gradients only, batch 8 x accumulation 1);
- invrev's multi-run step, K runs through the UNet as one batch (``--k``; ``--k auto`` doubles K
  until memory runs out or throughput stops improving);
- with ``--ablate``, the single-run step with each optimisation flipped in turn.

Timing. The reference step is timed directly over ``--steps`` steps after ``--warmup`` steps, with
``torch.cuda.synchronize()`` on both sides. A train_many configuration is timed as the wall time of
a call with ``--steps`` steps minus that of a call with zero steps (same setup: opening runs, caching
latents, writing manifests), both after a warm-up call: the difference is exactly the steady-state
steps, including the trainer's per-step logging. FLOPs are counted with ``FlopCounterMode`` around
one reference step, and as the count of a one-step call minus a zero-step call for train_many.

    python benchmarks/train_step.py --scale tiny                     # CPU, well under a minute
    python benchmarks/train_step.py --k auto --ablate --out benchmarks/results/h200

This file holds the measurements and the command line; beside it, ``train_step_setup.py`` builds the
models, data and device helpers, ``train_step_reference.py`` the reference-style step,
``train_step_toggles.py`` the ``--ablate`` toggles and ``train_step_table.py`` the rows, table,
targets and output files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from invrev import trainer
from invrev.config import TrainConfig
from train_step_reference import ReferenceStep
from train_step_setup import SCALES, build_components, measure_peak, peak_memory_gib, reset_peak_memory, sync, write_data
from train_step_table import Row, fill, markdown, targets, write_out
from train_step_toggles import TOGGLES

# ---------------------------------------------------------------------------------------------
# Measurements


class Bench:
    """Everything one benchmark process shares: device, components, exemplars, step counts."""

    def __init__(self, scale: str, workdir: Path, steps: int, warmup: int):
        self.scale, self.workdir, self.steps, self.warmup = scale, workdir, steps, warmup
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.components = build_components(scale, workdir, self.device)
        self.resolution = SCALES[scale]["resolution"]
        self.exemplars = write_data(workdir / "data" / "inside", self.resolution)
        self.speed = trainer.Speed()
        self._calls = 0

    def config(self, **changes) -> TrainConfig:
        params = dict(exemplars=str(self.exemplars), model=self.components.model_id, revision="random",
                      resolution=self.resolution, batch_size=8, grad_accum=1, hf_sigma=SCALES[self.scale]["hf_sigma"])
        return TrainConfig.from_params({**params, **changes})

    def fresh(self) -> None:
        """Drop the trainer's cached low-precision copies, so a toggle applied to the fp32 UNet reaches them."""
        self.components._copies.clear()

    def call(self, configs: list[TrainConfig], steps: int) -> tuple[float, list[Path]]:
        """Wall time of one ``train_many`` call with ``steps`` steps (fresh run folders each call)."""
        self._calls += 1
        folders = [self.workdir / "runs" / f"call{self._calls}" / f"run{i}" for i in range(len(configs))]
        sync(self.device)
        tick = time.perf_counter()
        trainer.train_many([c.replace(steps=steps) for c in configs], folders, components=self.components,
                           progress=False, speed=self.speed)
        sync(self.device)
        return time.perf_counter() - tick, folders


def time_reference(bench: Bench) -> Row:
    bench.fresh()
    ref = ReferenceStep(bench.components, bench.exemplars, bench.resolution)
    row = Row("reference-style: fp32, VAE every step, 2x4, full-table AdamW", "reference", 1, ref.batch * ref.accum,
              note="ReVersion's train.py step")
    try:
        for _ in range(bench.warmup):
            ref.step()
        reset_peak_memory(bench.device)
        sync(bench.device)
        tick = time.perf_counter()
        for _ in range(bench.steps):
            ref.step()
        sync(bench.device)
        row.seconds_per_step = (time.perf_counter() - tick) / bench.steps
        row.peak_memory_gib = peak_memory_gib(bench.device)
        with FlopCounterMode(display=False) as counter:
            ref.step()
        row.flops_per_sample = counter.get_total_flops() / row.samples_per_step
    finally:
        ref.close()
    row.samples_per_s = row.samples_per_step / row.seconds_per_step
    return row


def time_runs(bench: Bench, name: str, kind: str, k: int, count_flops: bool = True, **changes) -> Row:
    """One train_many configuration at K runs: steady-state seconds per step, FLOPs, peak memory."""
    bench.fresh()
    configs = [bench.config(seed=2023 + i, **changes) for i in range(k)]
    row = Row(name, kind, k, k * configs[0].batch_size * configs[0].grad_accum)
    bench.call(configs, bench.warmup)  # compilation, cuDNN autotuning, allocator warm-up
    reset_peak_memory(bench.device)
    # A run needs at least one step, so the setup cost is timed with one and subtracted with it.
    one, _ = bench.call(configs, 1)
    full, folders = bench.call(configs, 1 + bench.steps)
    row.peak_memory_gib = peak_memory_gib(bench.device)
    row.seconds_per_step = (full - one) / bench.steps
    row.samples_per_s = row.samples_per_step / row.seconds_per_step
    # The trainer's own clock (log.csv, each run holds 1/K of every step) as a cross-check.
    last = (folders[0] / "log.csv").read_text().strip().splitlines()[-1]
    row.extra["trainer_log_seconds_per_step"] = float(last.split(",")[-1]) * k / (1 + bench.steps)
    if count_flops:
        with FlopCounterMode(display=False) as two:
            bench.call(configs, 2)
        with FlopCounterMode(display=False) as one:
            bench.call(configs, 1)
        row.flops_per_sample = (two.get_total_flops() - one.get_total_flops()) / row.samples_per_step
    return row


def ablate(bench: Bench, baseline: Row, names: list[str]):
    """Yield one row per toggle in ``names``: the single-run step with that optimisation flipped."""
    cuda = bench.device.type == "cuda"
    for toggle in (t for t in TOGGLES if t.name in names):
        on = toggle.default_on and (cuda or toggle.name != "bf16")  # bf16 is off by default on the CPU
        name = f"invrev 1 run, {toggle.label} {'off' if on else 'on'}"
        if toggle.cuda_only and not cuda:
            yield Row(name, "ablation", note=f"{toggle.label}: needs CUDA")
            continue
        try:
            with toggle.flip(bench) as changes:
                row = time_runs(bench, name, "ablation", 1, count_flops=not toggle.same_flops, **changes)
        except Exception as err:  # one failing optimisation must not lose the rest of a GPU session
            row = Row(name, "ablation", error=f"{type(err).__name__}: {err}"[:300])
        if row.error:
            reset_peak_memory(bench.device)  # outside the except block: its traceback holds activations
            yield row
            continue
        if toggle.same_flops:
            row.flops_per_sample = baseline.flops_per_sample
        gain = baseline.samples_per_s / row.samples_per_s if on else row.samples_per_s / baseline.samples_per_s
        row.extra["speedup_from_optimisation"] = gain
        row.note = f"{toggle.label}: x{gain:.2f}"
        yield row


def multi_run(bench: Bench, k: str, single: Row):
    """Yield the multi-run rows: one K, or K = 2, 4, 8, ... until out of memory or no gain above 5 %."""
    ks = [int(k)] if k != "auto" else [2 ** i for i in range(1, 11)]
    best = None
    for runs in ks:
        name = f"invrev {runs} runs ({runs}x8x1)"
        try:
            row = time_runs(bench, name, "multi", runs)
        except Exception as err:  # out of memory ends the sweep (cuBLAS/cuDNN report it as other errors too)
            row = Row(name, "multi", runs, error=f"{type(err).__name__}: {err}"[:300])
        if row.error:
            reset_peak_memory(bench.device)  # outside the except block: its traceback holds activations
            row.extra["ends_sweep"] = best is not None  # expected in a sweep once a smaller K has worked
            yield row
            break
        row.note = f"x{row.samples_per_s / single.samples_per_s:.2f} over 1 run" if single.samples_per_s else ""
        yield row
        if best is not None and row.samples_per_s < 1.05 * best.samples_per_s:
            break
        best = row if best is None or row.samples_per_s > best.samples_per_s else best


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=tuple(SCALES), default="sd15")
    p.add_argument("--k", default=None, help="runs in the multi-run row, or 'auto' (default 16 on CUDA, 4 otherwise)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per configuration (default 10; 3 at tiny scale)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; 1 at tiny scale)")
    p.add_argument("--ablate", nargs="?", const="all", default="",
                   help=f"flip optimisations one at a time: 'all' or a comma list of {','.join(t.name for t in TOGGLES)}")
    p.add_argument("--out", type=Path, default=None, help="also write FILE.json and FILE.md")
    args = p.parse_args(argv)
    tiny = args.scale == "tiny"
    args.k = args.k or ("16" if torch.cuda.is_available() else "4")
    if args.k != "auto" and (not args.k.isdigit() or int(args.k) < 1):
        p.error(f"--k must be a positive integer or 'auto', not {args.k!r}")
    args.steps = args.steps or (3 if tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if tiny else 3)
    names = [t.name for t in TOGGLES] if args.ablate == "all" else [n for n in args.ablate.split(",") if n]
    unknown = set(names) - {t.name for t in TOGGLES}
    if unknown:
        p.error(f"unknown --ablate names {sorted(unknown)}; choose from {[t.name for t in TOGGLES]}")
    args.ablate = names
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="invrev-bench-") as tmp:
        bench = Bench(args.scale, Path(tmp), args.steps, args.warmup)
        device = torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else "CPU"
        peak, peak_label = measure_peak(bench.device)
        result = {"scale": args.scale, "device": device, "torch": torch.__version__, "steps": args.steps,
                  "warmup": args.warmup, "peak_tflops": peak / 1e12, "peak_label": peak_label}
        rows: list[Row] = []

        def record(row: Row) -> None:
            rows.append(row)
            speed = f"{row.samples_per_s:.4g} samples/s" if row.samples_per_s else "-"
            print(f"measured {row.name}: {speed}; {row.error or row.note}", file=sys.stderr, flush=True)
            table = fill(rows, peak)
            result.update(rows=table, markdown=markdown(table), targets=targets(table) if args.scale == "sd15" else {})
            if args.out:
                write_out(args.out, result)

        main_rows = (("reference-style", "reference", lambda: time_reference(bench)),
                     ("invrev 1 run (8x1)", "single", lambda: time_runs(bench, "invrev 1 run (8x1)", "single", 1)))
        for name, kind, measure in main_rows:
            try:
                record(measure())
            except Exception as err:  # keep what was measured; the exit status reports the failure
                record(Row(name, kind, error=f"{type(err).__name__}: {err}"[:300]))
        single = rows[-1]
        if single.samples_per_s:
            for row in multi_run(bench, args.k, single):
                record(row)
            for row in ablate(bench, single, args.ablate):
                record(row)
    print(f"{args.scale} scale on {device}; peak {peak / 1e12:.3g} TFLOP/s ({peak_label}); "
          f"{args.steps} timed steps after {args.warmup} warm-up steps per configuration")
    print(result["markdown"])
    if result["targets"]:
        print("targets:", ", ".join(f"{k}: {v}" for k, v in result["targets"].items()))
    return result


if __name__ == "__main__":
    outcome = main()
    failed = [r for r in outcome["rows"] if r["error"] and r["kind"] != "ablation" and not r["extra"].get("ends_sweep")]
    sys.exit(1 if failed else 0)
