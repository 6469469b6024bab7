"""Exemplar folders in the ReVersion benchmark layout, validated before anything trains (SPEC §2).

::

    <root>/<relation>/  0.jpg 1.jpg ... text.json
    text.json = {"0.jpg": ["cat {} stone", "a cat {} a rock", ...], ...}

:func:`load_exemplars` checks the whole folder and raises one :class:`DataError` listing every
problem with its fix, so a user mends a folder in one pass instead of one crash per run. Images are
squashed (never cropped, never flipped: a flip turns "left of" into "right of") to the model's
resolution.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

TEXT_FILE = "text.json"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
PLACEHOLDER = "{}"
TEMPLATE_FIX = 'write it as "<entity A> {} <entity B>": one {} where the relation goes, text beside it'


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}: {self.fix}"


class DataError(ValueError):
    """An exemplar folder is unusable; ``problems`` holds every reason, the message one per line."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{n} problem{'s' if n != 1 else ''} with the exemplar data:"]
        super().__init__("\n".join(lines + [f"  {p}" for p in self.problems]))

    def __reduce__(self):
        return type(self), (self.problems,)


@dataclass(frozen=True)
class ExemplarSet:
    """A validated relation folder: RGB images in natural order, their templates and file checksums.

    ``checksums`` maps each image file and text.json to the sha256 of its bytes (for run manifests).
    """

    root: Path
    relation: str
    images: tuple[Image.Image, ...]
    names: tuple[str, ...]
    templates: tuple[tuple[str, ...], ...]
    checksums: dict[str, str]

    def __len__(self) -> int:
        return len(self.images)


def natural_key(name: str) -> tuple:
    """Sort key putting "2.jpg" before "10.jpg"."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)), name


def is_image_name(name: str) -> bool:
    # Dotfiles are skipped: "._0.jpg" is macOS zip debris and ".*.tmp" our own unfinished writes.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def image_files(folder: Path) -> list[Path]:
    """The images of an exemplar folder, in natural name order (2.png before 10.png)."""
    return sorted((p for p in folder.iterdir() if p.is_file() and is_image_name(p.name)), key=lambda p: natural_key(p.name))


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}
    return names.get(type(value), "null")


def template_problem(template: object) -> str | None:
    """Why a caption template is unusable, or None if it is fine."""
    if not isinstance(template, str):
        return f"{json.dumps(template)} is a JSON {_json_type(template)}, not a string"
    count = template.count(PLACEHOLDER)
    if count != 1:
        return f'"{template}" has {count} "{{}}" (needs exactly 1)'
    left, right = template.split(PLACEHOLDER)
    if not (left.strip() or right.strip()):
        return f'"{template}" has no text beside "{{}}"'
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, upright.

    EXIF orientation is applied (a rotated phone photo comes out upright). Transparency (RGBA, LA,
    PA, P or L with a transparent colour) is composited over **white**, not black, so a cut-out reads
    as an object on a plain light background instead of inside a black silhouette. 16-bit (I;16*, I) is scaled by 255/65535 rather
    than clipped at 255; float (F) is read as [0, 1]. CMYK and the rest use Pillow's conversion.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if image.mode == "F" else 255.0 / 65535.0
        gray = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def squash(image: Image.Image, resolution: int) -> Image.Image:
    """Resize to resolution x resolution with BICUBIC: aspect squashed, nothing cropped or flipped."""
    if image.size == (resolution, resolution):
        return image
    return image.resize((resolution, resolution), Image.Resampling.BICUBIC)


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")


def _read_templates(path: Path, problems: list[Problem]) -> tuple[dict[str, object], str] | None:
    """text.json as name -> raw value and the sha256 of its bytes, or None (problems recorded)."""
    where = str(path)
    if not path.is_file():
        problems.append(Problem(where, "missing", 'create it: {"0.jpg": ["<entity A> {} <entity B>", ...], ...}'))
        return None
    duplicates: list[str] = []

    def pairs_hook(pairs):
        keys = [k for k, _ in pairs]
        duplicates.extend(k for i, k in enumerate(keys) if k in keys[:i])
        return dict(pairs)

    try:
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=pairs_hook)
    except OSError as e:
        problems.append(Problem(where, f"cannot be read ({e.strerror})", "check its permissions"))
        return None
    except UnicodeDecodeError as e:
        problems.append(Problem(where, f"not UTF-8 text ({e.reason} at byte {e.start})", "save it as UTF-8"))
        return None
    except json.JSONDecodeError as e:
        msg = f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        problems.append(Problem(where, msg, "fix the syntax there (a missing comma or quote is typical)"))
        return None
    if not isinstance(data, dict):
        msg = f"top level is a JSON {_json_type(data)}, not an object"
        problems.append(Problem(where, msg, 'make it an object: {"0.jpg": ["<entity A> {} <entity B>", ...], ...}'))
        return None
    for key in dict.fromkeys(duplicates):
        problems.append(Problem(where, f'key "{key}" appears more than once', "merge its lists into one key"))
    return data, hashlib.sha256(raw).hexdigest()


def _check_entry(where: str, key: str, value: object, problems: list[Problem]) -> None:
    if not isinstance(value, list):
        msg = f'value of "{key}" is a JSON {_json_type(value)}, not an array of templates'
        problems.append(Problem(where, msg, f'write it as "{key}": ["<entity A> {{}} <entity B>", ...]'))
        return
    if not value:
        problems.append(Problem(where, f'"{key}" has an empty template list', "add at least one template"))
    for i, template in enumerate(value):
        reason = template_problem(template)
        if reason:
            problems.append(Problem(where, f'"{key}" template {i}: {reason}', TEMPLATE_FIX))


def _load_image(path: Path, problems: list[Problem], resolution: int | None = None) -> tuple[Image.Image, str] | None:
    """The file as RGB (squashed to ``resolution`` if given) and the sha256 of its bytes, or None
    (with a problem recorded). Squashing here keeps one full-size image in memory at a time."""
    try:
        raw = path.read_bytes()
        with Image.open(io.BytesIO(raw)) as image:
            image.load()
            rgb = to_rgb(image)
        if resolution is not None:
            rgb = squash(rgb, resolution)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        reason = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e))  # Pillow names our buffer, not the file
        msg = f"cannot be opened as an image (truncated or corrupt file?) [{type(e).__name__}: {reason}]"
        problems.append(Problem(str(path), msg, f"re-export it, or remove it and its key from {TEXT_FILE}"))
        return None
    return rgb, hashlib.sha256(raw).hexdigest()


def _check_keys(folder: Path, names: list[str], data: dict, problems: list[Problem]) -> None:
    for name in names:
        if name not in data:
            fix = f'add "{name}": ["<entity A> {{}} <entity B>", ...] to {TEXT_FILE}, or remove the image'
            problems.append(Problem(str(folder / name), f"has no key in {TEXT_FILE}", fix))
    by_lower = {n.lower(): n for n in names}
    for key in data:
        if key in names:
            continue
        if key.lower() in by_lower:
            fix = f'rename the key to "{by_lower[key.lower()]}" (names are case-sensitive)'
        elif (folder / key).is_file():
            fix = f"remove the key: only {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} files are exemplars"
        else:
            fix = "remove the key, or add the image to the folder"
        problems.append(Problem(str(folder / TEXT_FILE), f'stray key "{key}" names no image in the folder', fix))


def load_exemplars(folder: str | os.PathLike, resolution: int | None = None) -> ExemplarSet:
    """Validate a relation folder completely, then return its exemplars (see the module docstring).

    Raises :class:`DataError` listing every problem found (missing/invalid text.json, images
    without a key, stray keys, bad templates, unreadable images, no images at all).
    If ``resolution`` is given, images are squashed to resolution x resolution (BICUBIC).
    Images are converted with :func:`to_rgb`: transparency goes over white.
    """
    if resolution is not None:
        _check_resolution(resolution)
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError([Problem(str(folder), "is not a folder", "pass the path of one relation folder")])
    problems: list[Problem] = []
    names = [p.name for p in image_files(folder)]
    if not names:
        fix = f"add at least one {'/'.join(e[1:] for e in IMAGE_EXTENSIONS)} exemplar image"
        problems.append(Problem(str(folder), "contains no images", fix))
    text = _read_templates(folder / TEXT_FILE, problems)
    if text is not None:
        data, text_checksum = text
        for key, value in data.items():
            _check_entry(str(folder / TEXT_FILE), key, value, problems)
        _check_keys(folder, names, data, problems)
    loaded = {name: _load_image(folder / name, problems, resolution) for name in names}
    if problems:
        raise DataError(sorted(problems, key=lambda p: natural_key(p.path)))

    images = tuple(loaded[n][0] for n in names)
    checksums = {n: loaded[n][1] for n in names}
    checksums[TEXT_FILE] = text_checksum
    return ExemplarSet(
        root=folder,
        relation=folder.resolve().name,
        images=images,
        names=tuple(names),
        templates=tuple(tuple(data[n]) for n in names),
        checksums=checksums,
    )


def to_tensor(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """Images as a float32 batch [N, 3, resolution, resolution] in [-1, 1], squashed (see :func:`squash`)."""
    _check_resolution(resolution)
    arrays = [np.asarray(squash(to_rgb(im), resolution)) for im in images]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def _as_image(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    array = np.asarray(image)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"image arrays must be uint8 HxWx3 or HxW, got {array.dtype} {array.shape}")
    return Image.fromarray(array).convert("RGB")


def write_exemplars(
    folder: str | os.PathLike,
    images: Sequence[Image.Image | np.ndarray],
    templates: Sequence[Sequence[str]],
) -> Path:
    """Write ``0.png, 1.png, ...`` and ``text.json`` into ``folder`` so :func:`load_exemplars` reads them.

    Each file is written atomically (temp file + ``os.replace``), text.json last. Refuses a folder
    already holding other images, which would leave images without keys.
    """
    if not images:
        raise ValueError("no images to write")
    if len(images) != len(templates):
        raise ValueError(f"{len(images)} images but {len(templates)} template lists")
    problems = []
    for i, temps in enumerate(templates):
        if isinstance(temps, str) or not temps:
            problems.append(Problem(f"templates[{i}]", "must be a non-empty list of strings", TEMPLATE_FIX))
            continue
        for j, template in enumerate(temps):
            reason = template_problem(template)
            if reason:
                problems.append(Problem(f"templates[{i}]", f"template {j}: {reason}", TEMPLATE_FIX))
    if problems:
        raise DataError(problems)
    pictures = [_as_image(im) for im in images]
    folder = Path(folder)
    names = [f"{i}.png" for i in range(len(pictures))]
    folder.mkdir(parents=True, exist_ok=True)
    others = sorted(p.name for p in folder.iterdir() if is_image_name(p.name) and p.name not in names)
    if others:
        raise ValueError(f"{folder} already holds other images ({', '.join(others)}): use an empty folder")
    from invrev.runs import atomic_write, atomic_write_text  # here: runs imports the model stack

    for name, picture in zip(names, pictures):
        atomic_write(folder / name, lambda f, im=picture: im.save(f, format="PNG"))
    atomic_write_text(folder / TEXT_FILE, json.dumps({n: list(t) for n, t in zip(names, templates)}, ensure_ascii=False, indent=2) + "\n")
    return folder
