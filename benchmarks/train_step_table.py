"""The training-step benchmark's rows and what is made of them: the filled table, its markdown, the
SPEC §6 targets and the FILE.json / FILE.md pair. Used by ``train_step.py``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

RECIPE_SAMPLES = 24_000  # SPEC §6: 3000 steps x batch 2 x accumulation 4
GRID_RUNS = 60
TARGETS = {"speedup": 10.0, "peak_fraction": 0.45, "relation_s": 120.0, "grid_s": 2 * 3600.0}


@dataclass
class Row:
    name: str
    kind: str  # reference | single | multi | ablation
    runs: int = 1
    samples_per_step: int = 0
    seconds_per_step: float | None = None
    samples_per_s: float | None = None
    flops_per_sample: float | None = None
    peak_memory_gib: float | None = None
    note: str = ""
    error: str | None = None
    extra: dict = field(default_factory=dict)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def fill(rows: list[Row], peak: float) -> list[dict]:
    reference = next((r for r in rows if r.kind == "reference" and r.samples_per_s), None)
    table = []
    for r in rows:
        sps = r.samples_per_s
        achieved = r.flops_per_sample * sps if sps and r.flops_per_sample else None
        table.append({
            **asdict(r),
            "speedup_vs_reference": sps / reference.samples_per_s if sps and reference else None,
            "tflops": achieved / 1e12 if achieved else None,
            "peak_fraction": achieved / peak if achieved else None,
            "relation_seconds": RECIPE_SAMPLES / sps if sps else None,
            "grid_seconds": GRID_RUNS * RECIPE_SAMPLES / sps if sps else None,
        })
    return table


def markdown(table: list[dict]) -> str:
    head = ("configuration", "samples/s", "vs reference", "TFLOP/s", "of peak", "peak mem (GiB)",
            "24k samples", f"{GRID_RUNS} x 24k", "note")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    g = lambda x, fmt: "-" if x is None else format(x, fmt)  # noqa: E731
    for r in table:
        cells = (r["name"], g(r["samples_per_s"], ".3g"), g(r["speedup_vs_reference"], ".2f"), g(r["tflops"], ".3g"),
                 g(r["peak_fraction"], ".1%"), g(r["peak_memory_gib"], ".2f"), _duration(r["relation_seconds"]),
                 _duration(r["grid_seconds"]), r["error"] or r["note"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(table: list[dict]) -> dict:
    """SPEC §6 / issue 4 targets, judged on the best invrev row (meaningful at full scale on CUDA)."""
    ours = [r for r in table if r["kind"] in ("single", "multi") and r["samples_per_s"]]
    if not ours:
        return {}
    best = max(ours, key=lambda r: r["samples_per_s"])
    single = next((r for r in ours if r["kind"] == "single"), best)
    return {
        "best": best["name"],
        "speedup_vs_reference >= 10": (best["speedup_vs_reference"] or 0) >= TARGETS["speedup"],
        "fraction_of_peak >= 45%": (best["peak_fraction"] or 0) >= TARGETS["peak_fraction"],
        "one relation (1 run) <= 2 min": single["relation_seconds"] <= TARGETS["relation_s"],
        "60-run grid <= 2 h": best["grid_seconds"] <= TARGETS["grid_s"],
    }


def write_out(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Training-step benchmark ({result['scale']} scale, {result['device']})", "",
             f"Peak: {result['peak_tflops']:.3g} TFLOP/s ({result['peak_label']}). "
             f"{result['steps']} timed steps after {result['warmup']} warm-up steps per configuration.", "",
             result["markdown"], ""]
    if result["targets"]:
        lines += ["Targets: " + ", ".join(f"{k}: {v}" for k, v in result["targets"].items()), ""]
    path.with_suffix(".md").write_text("\n".join(lines))
