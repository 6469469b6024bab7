"""Run folders: naming, atomic writes, the manifest, and what "complete" means."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from invrev.models import REPO_ROOT, ModelError, resolve_model

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


def timestamp() -> str:
    """Local time as the records write it: ``2026-11-28T12:42:52+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def git_state() -> dict[str, Any]:
    """Commit of the invrev checkout and whether it had uncommitted changes (None outside git;
    ``INVREV_GIT_COMMIT``, when set, names the commit of a copy whose .git is absent or stale)."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    if os.environ.get("INVREV_GIT_COMMIT"):  # a copy whose .git is absent or stale (a lent GPU machine's)
        return {"commit": os.environ["INVREV_GIT_COMMIT"], "dirty": None}
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


def model_fingerprint(model: str, revision: str | None = "main") -> str:
    """What a run was trained or evaluated on: a local folder's content hash, or a hub id at its revision.

    A batch compares it, so that replacing the model behind the same path (``invrev world ship``)
    makes earlier runs stale instead of silently "complete".
    """
    try:
        path = Path(resolve_model(model))
    except ModelError:
        return f"{model}@{revision}"
    if not path.is_dir():
        return f"{model}@{revision}"
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return _folder_hash(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files), str(path))


@functools.lru_cache(maxsize=8)
def _folder_hash(stats: tuple, root: str) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stats:
        digest.update(f"{Path(name).relative_to(root)}\0{sha256_file(name)}\n".encode())
    return "sha256:" + digest.hexdigest()[:16]


def trained_on(folder: str | Path) -> str | None:
    """The model fingerprint a run folder's training recorded (``done.json``, else its checkpoint)."""
    folder = Path(folder)
    if (folder / "done.json").is_file():
        found = json.loads((folder / "done.json").read_text()).get("model_fingerprint")
        if found:
            return found
    if (folder / "checkpoint.pt").is_file():
        return torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=True).get("model_fingerprint")
    return None


def is_complete(folder: str | Path, config_json: str | None = None) -> bool:
    """A run is complete when it wrote ``done.json``; with ``config_json``, also with that config,
    trained on the model that its config names as it is now (:func:`model_fingerprint`)."""
    folder = Path(folder)
    if not (folder / "done.json").is_file():
        return False
    if config_json is None:
        return True
    saved, config = folder / "config.json", json.loads(config_json)
    if not saved.is_file() or json.loads(saved.read_text()) != config:
        return False
    done = json.loads((folder / "done.json").read_text())
    return done.get("model_fingerprint") == model_fingerprint(config["model"], config.get("revision", "main"))
