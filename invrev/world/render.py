"""Render a scene: entity A in a relation to entity B, as a small RGB image.

Shapes are rasterised at ``SS``x supersampling and box-filtered down, so edges are anti-aliased
while interiors keep the pure palette colour the scorer looks for. Thin marks (bars, arms, rope,
eyes, wheels, engraving) are pixel-aligned for the same reason. Every relation has a visual
signature a program can check (see ``scorer``), and all but ``next_to`` change when A and B swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from invrev.world.grid import erode, shift
from invrev.world.scene import ALL_RELATIONS, BACKGROUND, COLOURS, WHITE, Entity

SS = 4  # supersampling factor: 16 samples per pixel
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
Layer = tuple[np.ndarray, tuple[int, int, int]]  # a mask at SS x resolution, painted in a colour


def shape_mask(shape: str, box: Box, canvas: tuple[int, int], inset: float = 0.0) -> np.ndarray:
    """Samples (SS per pixel each way) of a ``canvas`` = (height, width) that lie in ``shape``
    fitted to ``box``; ``inset`` > 0 shrinks it by that many pixels all round (a ring's hole)."""
    x0, y0, x1, y1 = box
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    y = ((np.arange(canvas[0] * SS) + 0.5) / SS)[:, None]
    x = ((np.arange(canvas[1] * SS) + 0.5) / SS)[None, :]
    dx, dy = np.abs(x - cx), np.abs(y - cy)
    if shape == "circle":
        return (dx / (hw - inset)) ** 2 + (dy / (hh - inset)) ** 2 <= 1
    if shape == "square":
        return (dx <= hw - inset) & (dy <= hh - inset)
    if shape == "cross":  # arms a third of the box wide
        return (((dx <= hw - inset) & (dy <= hh / 3 - inset))
                | ((dx <= hw / 3 - inset) & (dy <= hh - inset)))
    if shape == "triangle":  # apex up; inside = at least ``inset`` from the base and both sides
        side = (dx * 2 * hh - (y - y0) * hw) / np.hypot(2 * hh, hw)
        return (y <= y1 - inset) & (side <= -inset)
    raise ValueError(f"unknown shape {shape!r}")


def coverage(mask: np.ndarray) -> np.ndarray:
    """Fraction of each pixel's samples that are set."""
    return _pixel_mean(mask, np.float64)


def _pixel_mean(samples: np.ndarray, dtype) -> np.ndarray:
    """Mean of each pixel's SS x SS samples: ``reshape(h, SS, w, SS, ...).mean(axis=(1, 3))``, exactly
    (the sums are of integers, exact in any order) and 4x faster: the pretraining's data loader is
    bound by this."""
    h, w = samples.shape[0] // SS, samples.shape[1] // SS
    rows = samples.reshape(h, SS, -1).sum(axis=1, dtype=dtype)
    return rows.reshape(h, w, SS, *samples.shape[2:]).sum(axis=2) / (SS * SS)


def render(a: Entity, relation: str, b: Entity, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A random scene of ``a <relation> b``: uint8 [size, size, 3]."""
    return paint(layout(a, relation, b, rng, size), size)


def layout(a: Entity, relation: str, b: Entity, rng: np.random.Generator, size: int = 32) -> list[Layer]:
    """The layers of a random scene of ``a <relation> b``, back to front (``paint`` draws them)."""
    if relation not in _LAYOUTS:
        raise ValueError(f"unknown relation {relation!r}; choose from {sorted(ALL_RELATIONS)}")
    if a.colour == b.colour:
        raise ValueError("A and B must have different colours")
    return _LAYOUTS[relation](a, b, rng, _Frame(size))


def paint(layers: list[Layer], size: int = 32) -> np.ndarray:
    """The layers drawn in order onto the background: uint8 [size, size, 3]."""
    shown = np.zeros((size * SS, size * SS), np.uint8)  # which layer each sample shows, last on top
    for k, (mask, _) in enumerate(layers, start=1):
        shown[mask] = k
    palette = np.array([BACKGROUND, *(colour for _, colour in layers)], np.float32)
    return _pixel_mean(palette[shown], np.float32).round().astype(np.uint8)


@dataclass(frozen=True)
class _Frame:
    """The canvas being laid out; lengths are given for 32 px and scaled to ``size``."""

    size: int

    def length(self, rng: np.random.Generator, lo: float, hi: float) -> float:
        return rng.uniform(lo, hi) * self.size / 32

    def mask(self, shape: str, box: Box, inset: float = 0.0) -> np.ndarray:
        return shape_mask(shape, box, (self.size, self.size), inset * self.size / 32)

    def fit(self, rng: np.random.Generator, *boxes: Box) -> list[Box]:
        """The boxes moved together to a random place with a 1 px margin to the edge."""
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        margin = self.size / 32
        ox = rng.uniform(margin - x0, max(margin - x0, self.size - margin - x1))
        oy = rng.uniform(margin - y0, max(margin - y0, self.size - margin - y1))
        return [(b[0] + ox, b[1] + oy, b[2] + ox, b[3] + oy) for b in boxes]


def _box(cx: float, cy: float, w: float, h: float) -> Box:
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


def _move(box: Box, dx: float, dy: float) -> Box:
    return box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy


def _up(pixels: np.ndarray) -> np.ndarray:
    """A pixel mask at sample resolution (marks are whole pixels)."""
    return pixels.repeat(SS, 0).repeat(SS, 1)


def _pixels(mask: np.ndarray) -> np.ndarray:
    """Pixels at least half covered: what the scorer will see as the shape."""
    return coverage(mask) >= 0.5


def _rows(pixels: np.ndarray) -> np.ndarray:
    return np.flatnonzero(pixels.any(1))


def _cols(pixels: np.ndarray) -> np.ndarray:
    return np.flatnonzero(pixels.any(0))


def _gap_below(mover: np.ndarray, fixed: np.ndarray) -> int:
    """Samples ``mover`` can fall before it rests on ``fixed`` (columns they share)."""
    n = mover.shape[0]
    idx = np.arange(n)[:, None]
    bottom = np.where(mover, idx, -1).max(0)
    top = np.where(fixed, idx, n).min(0)
    both = (bottom >= 0) & (top < n)
    return int((top - bottom - 1)[both].min()) if both.any() else 0


def _settle(frame: _Frame, shape: str, box: Box, fixed: np.ndarray, sideways: bool) -> np.ndarray:
    """``shape`` in ``box`` slid down (or right) until it touches ``fixed``: resting on, leaning on."""
    mask = frame.mask(shape, box)
    if sideways:
        return frame.mask(shape, _move(box, _gap_below(mask.T, fixed.T) / SS, 0))
    return frame.mask(shape, _move(box, 0, _gap_below(mask, fixed) / SS))


# Layouts: each returns the layers to paint, back to front.

def _apart(a: Entity, b: Entity, rng: np.random.Generator, f: _Frame, vertical: bool) -> list[Layer]:
    """A before B (above, or left of), a clear gap between them."""
    sa, sb, gap = f.length(rng, 9, 12), f.length(rng, 9, 12), f.length(rng, 4.5, 6)
    offset = f.length(rng, -2, 2)
    step = (sa + sb) / 2 + gap
    if vertical:
        box_a, box_b = f.fit(rng, _box(offset, 0, sa, sa), _box(0, step, sb, sb))
    else:
        box_a, box_b = f.fit(rng, _box(0, offset, sa, sa), _box(step, 0, sb, sb))
    return [(f.mask(a.shape, box_a), COLOURS[a.colour]), (f.mask(b.shape, box_b), COLOURS[b.colour])]


def _above(a, b, rng, f):
    return _apart(a, b, rng, f, vertical=True)


def _below(a, b, rng, f):
    return _apart(b, a, rng, f, vertical=True)


def _left_of(a, b, rng, f):
    return _apart(a, b, rng, f, vertical=False)


def _right_of(a, b, rng, f):
    return _apart(b, a, rng, f, vertical=False)


def _next_to(a, b, rng, f):
    """Side by side in either order: the world's one symmetric relation."""
    first, second = (a, b) if rng.random() < 0.5 else (b, a)
    return _apart(first, second, rng, f, vertical=False)


def _resting(a: Entity, b: Entity, rng: np.random.Generator, f: _Frame, wb: float, hb: float,
             room_below: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A dropped onto B so it rests on B's top; returns both masks and B's pixels."""
    sa = f.length(rng, 9, 12)
    offset = rng.uniform(-1, 1) * min(sa, wb) / 5
    box_a, box_b, _ = f.fit(rng, _box(offset, -(sa + hb) / 2, sa, sa), _box(0, 0, wb, hb),
                            _box(0, hb / 2 + room_below / 2, wb, room_below))
    mask_b = f.mask(b.shape, box_b)
    return _settle(f, a.shape, box_a, mask_b, sideways=False), mask_b, _pixels(mask_b)


def _on(a, b, rng, f):
    """A resting on top of B, touching it."""
    sb = f.length(rng, 9, 13)
    mask_a, mask_b, _ = _resting(a, b, rng, f, sb, sb)
    return [(mask_b, COLOURS[b.colour]), (mask_a, COLOURS[a.colour])]


def _ride_on(a, b, rng, f):
    """A resting on a long, low B that has two white wheels under it."""
    wb, hb = f.length(rng, 16, 21), f.length(rng, 7, 9)
    mask_a, mask_b, pixels_b = _resting(a, b, rng, f, wb, hb, room_below=3 * f.size / 32)
    cols = _cols(pixels_b)
    wheels = np.zeros_like(pixels_b)
    for x in (cols[0] + len(cols) // 4, cols[-1] - len(cols) // 4 - 1):
        y = _rows(pixels_b[:, x:x + 2])[-1] + 1
        wheels[y:y + 2, x:x + 2] = True
    return [(mask_b, COLOURS[b.colour]), (mask_a, COLOURS[a.colour]), (_up(wheels), WHITE)]


def _hanging_from(a, b, rng, f):
    """A below B with a gap, hung on a 1 px white rope from B's bottom to A's top."""
    sa, sb, gap = f.length(rng, 9, 11), f.length(rng, 9, 11), f.length(rng, 5, 8)
    box_b, box_a = f.fit(rng, _box(0, 0, sb, sb), _box(f.length(rng, -1, 1), (sa + sb) / 2 + gap, sa, sa))
    x, top, bottom = int((box_a[0] + box_a[2]) / 2), int((box_b[1] + box_b[3]) / 2), int((box_a[1] + box_a[3]) / 2)
    rope = np.zeros((f.size, f.size), bool)
    rope[top:bottom, x] = True
    return [(_up(rope), WHITE), (f.mask(b.shape, box_b), COLOURS[b.colour]),
            (f.mask(a.shape, box_a), COLOURS[a.colour])]


CELL = 2  # the world model folds 2x2 pixels into one cell: marks are a whole cell thick and aligned to the cells


def _cell_floor(x: float) -> int:
    return int(x) // CELL * CELL


def _shake_hands(a, b, rng, f):
    """A left, B right, a gap between, joined at mid-height by a bar one cell (2 px) tall: A's
    colour on A's half, B's on B's, meeting at a cell boundary (a 1 px bar is half a cell, which
    the model drew as one blended colour)."""
    sa, sb, gap = f.length(rng, 9, 11), f.length(rng, 9, 11), f.length(rng, 5, 8)
    box_a, box_b = f.fit(rng, _box(0, 0, sa, sa), _box((sa + sb) / 2 + gap, 0, sb, sb))
    y = _cell_floor((box_a[1] + box_a[3]) / 2 - CELL / 2)
    xa, xb = int((box_a[0] + box_a[2]) / 2), int((box_b[0] + box_b[2]) / 2)
    mid = _cell_floor((box_a[2] + box_b[0]) / 2 + CELL / 2)
    hand_a, hand_b = np.zeros((2, f.size, f.size), bool)
    hand_a[y:y + CELL, xa:mid] = True
    hand_b[y:y + CELL, mid:xb] = True
    return [(_up(hand_a), COLOURS[a.colour]), (_up(hand_b), COLOURS[b.colour]),
            (f.mask(a.shape, box_a), COLOURS[a.colour]), (f.mask(b.shape, box_b), COLOURS[b.colour])]


def _side_by_side(a: Entity, b: Entity, f: _Frame, rng: np.random.Generator, sa: float, sb: float,
                  room: float = 0.0):
    """A leaning on B from the left, same height, touching, ``room`` px kept free above and below
    B (for marks drawn there); returns both masks."""
    box_a, box_b, _ = f.fit(rng, _box(0, 0, sa, sa), _box((sa + sb) / 2, 0, sb, sb),
                            _box((sa + sb) / 2, 0, sb, sb + 2 * room))
    mask_b = f.mask(b.shape, box_b)
    return _settle(f, a.shape, box_a, mask_b, sideways=True), mask_b


def _hug(a, b, rng, f):
    """A (bigger) leaning on B from the left, its two arms over B's top and bottom edges: one cell
    (2 px) thick, aligned to the model's cells, as close to B as the cells allow (a 1 px arm
    is half a cell, which the model mostly failed to draw)."""
    sb = f.length(rng, 8, 10)
    sa = sb + f.length(rng, 3, 5)
    mask_a, mask_b = _side_by_side(a, b, f, rng, sa, sb, room=(CELL + 2) * f.size / 32)
    pixels_a, pixels_b = _pixels(mask_a), _pixels(mask_b)
    rows, cols = _rows(pixels_b), _cols(pixels_b)
    start, end = _cell_floor(np.mean(_cols(pixels_a))), _cell_floor(cols[0] + (3 * len(cols)) // 4 + CELL / 2)
    arms = np.zeros_like(pixels_b)
    top, bottom = _cell_floor(rows[0] - CELL), _cell_floor(rows[-1] + CELL)
    arms[top:top + CELL, start:end] = True
    arms[bottom:bottom + CELL, start:end] = True
    # On top, so B's faint anti-aliased edge does not tint them.
    return [(mask_a, COLOURS[a.colour]), (mask_b, COLOURS[b.colour]), (_up(arms), COLOURS[a.colour])]


def _eye(cover: np.ndarray, facing_left: bool) -> np.ndarray:
    """A 2x1 white eye inside a shape on its outer side, with well-covered pixels all round (so
    blur reads it as an eye, not a bite), in the widest such row nearest the shape's centroid."""
    inner = (cover > 0.999) & erode(cover > 0.7)
    fits = inner & shift(inner, 0, -1)
    rows = _rows(fits)
    centroid = (cover.sum(1) * np.arange(len(cover))).sum() / cover.sum()
    y = max(rows, key=lambda r: (fits[r].sum(), -abs(r - centroid)))
    xs = np.flatnonzero(fits[y])
    inward = int(len(xs) >= 4)  # one pixel in from the edge where the row is wide enough
    x = xs[inward] if facing_left else xs[-1 - inward]
    eye = np.zeros(cover.shape, bool)
    eye[y, x:x + 2] = True
    return eye


def _back2back(a, b, rng, f):
    """A and B side by side touching, each with a white eye on the side facing away."""
    mask_a, mask_b = _side_by_side(a, b, f, rng, f.length(rng, 11, 13), f.length(rng, 11, 13))
    eyes = _eye(coverage(mask_a), facing_left=True) | _eye(coverage(mask_b), facing_left=False)
    return [(mask_a, COLOURS[a.colour]), (mask_b, COLOURS[b.colour]), (_up(eyes), WHITE)]


def _inner_centre(shape: str, box: Box) -> tuple[float, float]:
    """Where a small shape fits best inside ``shape``: the incentre for the triangle."""
    x0, y0, x1, y1 = box
    if shape != "triangle":
        return (x0 + x1) / 2, (y0 + y1) / 2
    w, h = x1 - x0, y1 - y0
    return (x0 + x1) / 2, y1 - w * h / (w + 2 * np.hypot(h, w / 2))


def _contained(a: Entity, b: Entity, rng: np.random.Generator, f: _Frame,
               smallest: float = 8) -> tuple[Box, Box]:
    """A large container B and a small A (``smallest`` to ``smallest`` + 2 px, less if it must)
    placed well inside it: no pixel of A, even anti-aliased, outside B's solid pixels."""
    sb = 30 * f.size / 32 if b.shape == "cross" else f.length(rng, 26, 30)
    (box_b,) = f.fit(rng, _box(0, 0, sb, sb))
    solid_b = coverage(f.mask(b.shape, box_b)) > 0.999
    sa = f.length(rng, smallest, smallest + 2)
    jitter = f.size / 32
    cx, cy = _inner_centre(b.shape, box_b)
    for _ in range(100):
        box_a = _box(cx + rng.uniform(-jitter, jitter), cy + rng.uniform(-jitter, jitter), sa, sa)
        if not (coverage(f.mask(a.shape, box_a)) > 0)[~solid_b].any():
            return box_a, box_b
        sa, jitter = max(sa - 0.25, 6.0), jitter * 0.8
    raise RuntimeError(f"no room for a {a.shape} inside a {b.shape}")


INNER = 11  # px, the smallest a contained A is drawn: at 8 px the model drew it as a round blob
RING = 2.5  # px, wrapped_in's outline

def _inside(a, b, rng, f):
    """A small and whole, fully within a large filled B."""
    box_a, box_b = _contained(a, b, rng, f, smallest=INNER)
    return [(f.mask(b.shape, box_b), COLOURS[b.colour]), (f.mask(a.shape, box_a), COLOURS[a.colour])]


def _painted_on(a, b, rng, f):
    """A painted on a large filled B in horizontal brush strokes, 3 px of paint, 1 px of B between.

    The strokes run from A's bottom up and its top two rows are always painted, so its outline
    survives; the unpainted rows inside A are what tells "painted on" from "inside".
    """
    box_a, box_b = _contained(a, b, rng, f, smallest=10)
    mask_a = f.mask(a.shape, box_a)
    rows = _rows(_pixels(mask_a))
    unpainted = np.zeros((f.size, f.size), bool)
    unpainted[[r for r in rows if (rows[-1] - r) % 4 == 3 and r >= rows[0] + 2]] = True
    return [(f.mask(b.shape, box_b), COLOURS[b.colour]), (mask_a & ~_up(unpainted), COLOURS[a.colour])]


def _wrapped_in(a, b, rng, f):
    """A in the middle of B drawn as a thick hollow outline (B's shape, ``RING`` px wide)."""
    box_a, box_b = _contained(a, b, rng, f, smallest=INNER)
    ring = f.mask(b.shape, box_b) & ~f.mask(b.shape, box_b, inset=RING)
    return [(ring, COLOURS[b.colour]), (f.mask(a.shape, box_a), COLOURS[a.colour])]


def _carved_by(a, b, rng, f):
    """One object: A's shape in B's material (colour), engraved with white diagonal grooves.

    B's own shape is never drawn; the grooves stay a pixel clear of the outline.
    """
    s = f.length(rng, 14, 18)
    (box,) = f.fit(rng, _box(0, 0, s, s))
    mask = f.mask(a.shape, box)
    inner = (coverage(mask) > 0.999) & erode(_pixels(mask))
    y, x = np.indices(inner.shape)
    grooves = inner & ((x + y + rng.integers(5)) % 5 < 2)
    return [(mask, COLOURS[b.colour]), (_up(grooves), WHITE)]


_LAYOUTS: dict[str, Callable[[Entity, Entity, np.random.Generator, _Frame], list[Layer]]] = {
    "painted_on": _painted_on, "carved_by": _carved_by, "shake_hands": _shake_hands, "hug": _hug,
    "back2back": _back2back, "inside": _inside, "on": _on, "hanging_from": _hanging_from,
    "wrapped_in": _wrapped_in, "ride_on": _ride_on, "above": _above, "below": _below,
    "left_of": _left_of, "right_of": _right_of, "next_to": _next_to,
}
