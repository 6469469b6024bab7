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
from typing import Any, BinaryIO, Callable

import torch

from invrev.models import REPO_ROOT, ModelError, resolve_model

PACKAGES = ("invrev", "torch", "diffusers", "transformers", "accelerate", "safetensors", "papermill")


def repo_path(path: str | Path) -> Path:
    """A path as given if it exists from here, else relative to the repository (as the notebooks run)."""
    path = Path(path)
    return path if path.exists() or path.is_absolute() else REPO_ROOT / path


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository when inside it (what notebooks, which run from there, are
    given and records show), else absolute."""
    path = Path(path).resolve()
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def run_dir(root: str | Path, relation: str, variant: str, seed: int) -> Path:
    """``<root>/<relation>/<variant>/seed<k>``: ASCII, one folder per run."""
    return Path(root) / relation / variant / f"seed{seed}"


class WriteError(OSError):
    """A record could not be written; the message names the file, and the earlier version is intact."""


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """The one safe writer of records: ``write(handle)`` fills a temporary file beside ``path``, which
    is flushed to disk, made readable by everyone (0644, like every record) and renamed over ``path``.

    A crash leaves the old file or the new one, never half of one; on any failure (a full disk, a
    read-only folder, an interrupt) the temporary file is removed, and an error is raised as a
    :class:`WriteError` naming ``path`` (torch reports a full disk as a bare ``RuntimeError``).
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name starts with "." so loaders skip what an interrupted write leaves.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, (OSError, RuntimeError)) and not isinstance(err, WriteError):
            reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
            raise WriteError(f"cannot write {path}: {reason}. Free disk space or choose a writable folder; "
                             f"an earlier {path.name} there is unchanged") from err
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda handle: torch.save(obj, handle))


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
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores, {threads} thread{'s' if threads > 1 else ''})"


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


def recorded_fingerprint(folder: str | Path) -> str | None:
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
