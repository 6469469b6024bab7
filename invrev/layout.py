"""How an evaluation lays out its images: the seed of each image, and its place in ``eval/grid.png``.

:func:`invrev.evaluate.evaluate` draws sample ``k`` of prompt ``i`` with :func:`image_seed` and
tiles the samples of its first :data:`GRID_PROMPTS` prompts, :data:`PROMPTS_PER_ROW` prompts a row,
with :func:`eval_grid`. The record (``invrev.record``), the rating (``invrev.ratings``) and the
results notebook read images and grids back through this module only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from invrev.generate import grid, grid_box

GRID_PROMPTS = 8  # prompts shown in eval/grid.png; the metrics score all of them
PROMPTS_PER_ROW = 2
PAD = 2  # white gutter between the images, in pixels
SEEN = 50_000  # the seen different-shape pairs' image seeds start here, after the held-out ones'


def image_seed(seed: int, index: int, sample: int = 0, *, seen: bool = False) -> int:
    """The seed of sample ``sample`` of prompt ``index`` in an evaluation with seed ``seed``: each
    image has its own, so an image does not depend on how many prompts or samples were drawn."""
    return seed * 100_000 + (SEEN if seen else 0) + index * 100 + sample


def prompt_index(image_seed_: int) -> int:
    """Inverse of :func:`image_seed` for a held-out image: which prompt it belongs to."""
    return (image_seed_ % 100_000) // 100


def samples_per_prompt(images: Sequence[Mapping]) -> int:
    """How many samples an evaluation drew per prompt, from its ``metrics.json`` image records."""
    return len(images) // max(1, len({prompt_index(image["seed"]) for image in images}))


def eval_grid(images: Sequence[np.ndarray], samples: int) -> Image.Image:
    """``eval/grid.png`` from images ordered prompt by prompt: the first :data:`GRID_PROMPTS`
    prompts' samples, :data:`PROMPTS_PER_ROW` prompts a row, at 1:1 (viewers upscale)."""
    return grid(list(images[: samples * GRID_PROMPTS]), samples * PROMPTS_PER_ROW, pad=PAD)


def grid_rows(canvas: Image.Image, samples: int, prompts: int) -> Image.Image:
    """The rows of an :func:`eval_grid` that hold its first ``prompts`` prompts."""
    columns = samples * PROMPTS_PER_ROW
    last_row = -(-prompts // PROMPTS_PER_ROW) - 1
    bottom = grid_box(last_row * columns, columns, _cell(canvas, columns), PAD)[3] + PAD
    return canvas.crop((0, 0, canvas.width, min(canvas.height, bottom)))


def grid_tile(canvas: Image.Image, samples: int, index: int, sample: int = 0) -> Image.Image | None:
    """Sample ``sample`` of prompt ``index`` cut from an :func:`eval_grid` (None if the grid does not show it)."""
    box = grid_box(index * samples + sample, samples * PROMPTS_PER_ROW, _cell(canvas, samples * PROMPTS_PER_ROW), PAD)
    return canvas.crop(box) if box[3] <= canvas.height else None


def _cell(canvas: Image.Image, columns: int) -> tuple[int, int]:
    size = (canvas.width - PAD) // columns - PAD
    return size, size
