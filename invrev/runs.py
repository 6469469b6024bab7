"""Run folders: naming, atomic writes, the manifest, and what "complete" means."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from invrev.models import REPO_ROOT

PACKAGES = ("invrev", "torch", "diffusers", "transformers", "accelerate", "safetensors", "papermill")


def run_dir(root: str | Path, relation: str, variant: str, seed: int) -> Path:
    """``<root>/<relation>/<variant>/seed<k>``: ASCII, one folder per run."""
    return Path(root) / relation / variant / f"seed{seed}"


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write to a temporary file beside ``path`` and rename it over: a crash leaves old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; run records are for everyone to read
    os.replace(tmp, path)
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_state() -> dict[str, Any]:
    """Commit of the invrev checkout and whether it had uncommitted changes (None outside git)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def write_manifest(folder: str | Path, **fields: Any) -> Path:
    """The one manifest writer: provenance every run and model folder carries, plus ``fields``."""
    manifest = {"git": git_state(), "versions": versions(), "python": platform.python_version(), **fields}
    return atomic_write_json(Path(folder) / "manifest.json", manifest)


def is_complete(folder: str | Path, config_json: str | None = None) -> bool:
    """A run is complete when it wrote ``done.json``; with ``config_json``, also with that config."""
    folder = Path(folder)
    if not (folder / "done.json").is_file():
        return False
    if config_json is None:
        return True
    saved = folder / "config.json"
    return saved.is_file() and json.loads(saved.read_text()) == json.loads(config_json)
