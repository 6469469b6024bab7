"""Where the repository keeps what the package uses by default: one home for each path, in a module
that imports nothing heavy (the command line reads its defaults from here without loading torch)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WORLD_MODEL = "data/world/model"  # the embedded world model, relative to the repository
WORLD_BENCHMARK = "data/world/benchmark"  # its exemplars in the ReVersion layout, and test_prompts.json
RUN_NOTEBOOK = "notebooks/10_run.ipynb"  # what papermill executes for each run
