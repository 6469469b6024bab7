"""The world's exact scorer: does an image show "A <relation> B"?

Each pixel is classified to a palette colour, white, background or nothing (a seam between two
colours). A's and B's bodies are their colours' largest blobs, thin marks removed and holes
filled; a body's shape is the ideal shape, sized by the body's moments, whose anti-aliased
coverage overlaps the body's best. Each relation's visual signature (see ``render``) is then
checked from the two bodies and the thin marks, in the stated direction: a caption with A and B
swapped fails on a true render. Colours are read along the RGB line from the background, so
blur and noise of the kind a small diffusion model's samples carry leave the verdicts alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from invrev.world.grid import close, dilate, drop_thin_rows, fill_holes, label
from invrev.world.render import coverage, shape_mask
from invrev.world.scene import ALL_RELATIONS, BACKGROUND, COLOURS, SHAPES, WHITE, Entity

UNKNOWN, BACK, WHITE_MARK = -1, 0, 1  # pixel classes; the i-th palette colour is 2 + i
_COLOUR_CLASS = {name: 2 + i for i, name in enumerate(COLOURS)}
_DIRECTIONS = np.array(list(COLOURS.values()), float) - BACKGROUND
RESIDUAL = 55.0  # RGB distance off the background-to-colour line still called that colour
MIN_AREA = 12  # pixels; a blob any smaller is a speck, not an entity (entities are 8-30 px wide)
FAINT = 0.3  # a thin mark faded by blur to this fraction of its colour still counts
MIN_IOU = 0.6  # a body matching no ideal shape this well has no shape
CONTAINERS = ("inside", "painted_on", "wrapped_in")
# Marks one model cell (2 px) thick, not 1 px, in these relations' entities' colours: shake_hands'
# hands in A's and B's, hug's arms in A's. Dropping 2 px marks from a body is kept to those bodies:
# a small cross's arms are barely 3 px.
CELL_MARKS = {"shake_hands": (True, True), "hug": (True, False)}
OWN_COLOUR = 0.3  # carved_by: at least this share of the object's body in B's own colour


@dataclass(frozen=True)
class Score:
    """One image against one caption; ``shape_a``/``shape_b`` are the shapes found in A's and B's
    colours (carved_by: ``shape_a`` is the object's shape, in B's colour; ``shape_b`` is None)."""

    entity_a: bool
    entity_b: bool
    entity: bool
    relation: bool
    fusion: bool
    shape_a: str | None
    shape_b: str | None

    @property
    def agrees(self) -> bool:
        return self.entity and self.relation


def classify(image: np.ndarray) -> np.ndarray:
    """Pixel classes [H, W]: BACK, WHITE_MARK, 2 + palette index, or UNKNOWN.

    Anti-aliasing and blur mix a colour with the background along the straight RGB line between
    them, so a pixel is colour c when it lies near that line at least half way to c. Seams between
    two colours lie off every line and stay UNKNOWN.
    """
    rgb = np.asarray(image, float)[..., :3]
    d = rgb - BACKGROUND
    alpha = d @ _DIRECTIONS.T / (_DIRECTIONS ** 2).sum(1)
    residual = np.linalg.norm(d[..., None, :] - alpha[..., None] * _DIRECTIONS, axis=-1)
    # The nearest line first, then how far along it: a faint orange edge is not a strong red.
    best = residual.argmin(-1)[..., None]
    along, off = np.take_along_axis(alpha, best, -1)[..., 0], np.take_along_axis(residual, best, -1)[..., 0]
    classes = np.where((along >= 0.5) & (along <= 1.5) & (off <= RESIDUAL), 2 + best[..., 0], UNKNOWN)
    classes[np.abs(d).max(-1) <= 48] = BACK
    classes[rgb.min(-1) >= 150] = WHITE_MARK  # no palette colour has all channels above 60
    return classes


def _shares(rgb: np.ndarray, colours: list[tuple[int, int, int]], under=BACKGROUND) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel unmixed as ``under`` plus shares of ``colours`` (least squares): the shares
    [H, W, k] and the RGB distance left unexplained [H, W]."""
    d = rgb - under
    basis = np.array(colours, float) - under  # [k, 3]
    share = np.linalg.solve(basis @ basis.T, (d @ basis.T)[..., None])[..., 0]
    return share, np.linalg.norm(d - share @ basis, axis=-1)


@dataclass(frozen=True)
class _Blob:
    """An entity's body: a filled region, its bounding box (inclusive), centroid and soft cover."""

    mask: np.ndarray
    cover: np.ndarray  # how much of each pixel the body covers, edges anti-aliased
    count: int  # how many separate blobs of entity size the colour has
    y0: int
    y1: int
    x0: int
    x1: int
    cy: float
    cx: float
    area: int


def _blob(pixels: np.ndarray, classes: np.ndarray, share: np.ndarray,
          extra: np.ndarray | None = None, thin: int = 1) -> _Blob | None:
    """The largest body in the colour's ``pixels`` plus ``extra`` pixels that belong to it
    (marks up to ``thin`` px tall dropped, seams closed, holes filled).

    ``share`` is the colour's part of each pixel: the body's own pixels and its rim of seams and
    anti-aliased background keep theirs as coverage; the rest of the body counts as covered.
    """
    labels, n = label(fill_holes(close(drop_thin_rows(pixels if extra is None else pixels | extra, thin))))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    if n == 0 or sizes.max() < MIN_AREA:
        return None
    mask = labels == 1 + sizes.argmax()
    rim = dilate(mask) & ~mask & ((classes == BACK) | (classes == UNKNOWN))
    cover = np.clip(np.where(mask, np.where(pixels, share, 1.0), np.where(rim, share, 0.0)), 0, 1)
    ys, xs = np.nonzero(mask)
    return _Blob(mask, cover, int((sizes >= MIN_AREA).sum()), ys.min(), ys.max(), xs.min(), xs.max(),
                 ys.mean(), xs.mean(), len(ys))


# Variance of each shape along x and y, as a fraction of its box's width² and height².
_SPREAD = {"circle": (1 / 16, 1 / 16), "square": (1 / 12, 1 / 12), "triangle": (1 / 24, 1 / 18),
           "cross": (29 / 540, 29 / 540)}


def _fitted_box(shape: str, cover: np.ndarray) -> tuple[float, float, float, float]:
    """The box ``shape`` would fill to have the blob's centroid and spread (sub-pixel exact,
    unlike the blob's bounding box, which gains or loses a row at every half-covered edge)."""
    kx, ky = _SPREAD[shape]
    y, x = np.indices(cover.shape) + 0.5  # pixel centres
    total = cover.sum()
    cx, cy = (cover * x).sum() / total, (cover * y).sum() / total
    # A pixel's own extent adds 1/12 to the variance of its samples.
    vx = (cover * (x - cx) ** 2).sum() / total + 1 / 12
    vy = (cover * (y - cy) ** 2).sum() / total + 1 / 12
    w, h = np.sqrt(vx / kx), np.sqrt(vy / ky)
    top = cy - (2 * h / 3 if shape == "triangle" else h / 2)  # a triangle's centroid is 2/3 down
    return cx - w / 2, top, cx + w / 2, top + h


def shape_of(blob: _Blob | None) -> str | None:
    """The shape whose ideal coverage, sized and placed by the blob's moments, overlaps the
    blob's coverage best (soft IoU: partial pixels tell an 8 px circle from an 8 px square)."""
    if blob is None or blob.cover.sum() == 0:  # a body of pixels that hold none of its colour
        return None
    margin = 3
    y0, x0 = max(blob.y0 - margin, 0), max(blob.x0 - margin, 0)
    cover = blob.cover[y0:blob.y1 + margin + 1, x0:blob.x1 + margin + 1]
    ious = []
    for shape in SHAPES:
        ideal = coverage(shape_mask(shape, _fitted_box(shape, cover), cover.shape))
        ious.append(np.minimum(cover, ideal).sum() / np.maximum(cover, ideal).sum())
    best = int(np.argmax(ious))
    return SHAPES[best] if ious[best] >= MIN_IOU else None


@dataclass(frozen=True)
class _View:
    """What the checks look at: the image, class masks and the two bodies."""

    rgb: np.ndarray
    rgb_a: tuple[int, int, int]
    rgb_b: tuple[int, int, int]
    colour_a: np.ndarray
    colour_b: np.ndarray
    white: np.ndarray
    background: np.ndarray
    a: _Blob | None
    b: _Blob | None


def _view(image: np.ndarray, a: Entity, relation: str, b: Entity) -> _View:
    rgb = np.asarray(image, float)[..., :3]
    classes = classify(rgb)
    colour_a, colour_b = classes == _COLOUR_CLASS[a.colour], classes == _COLOUR_CLASS[b.colour]
    white = classes == WHITE_MARK
    # Unmixed against each other, so a seam between A and B gives each its part.
    share, _ = _shares(rgb, [COLOURS[a.colour], COLOURS[b.colour]])
    thin_a, thin_b = (2 if cell else 1 for cell in CELL_MARKS.get(relation, (False, False)))
    body_a = _blob(colour_a, classes, share[..., 0], thin=thin_a)
    if relation == "carved_by":  # the grooves cut B's colour into strips; they belong to the object
        body_b = _blob(colour_b, classes, share[..., 1], extra=white)
    elif relation in CONTAINERS and body_a is not None:  # A covers part of B (or of its ring)
        # B's body is B's colour plus the A it contains, but only where B's colour has a body of
        # its own: otherwise B's body would be A's, and a missing B would pass as A's shape.
        own = _blob(colour_b, classes, share[..., 1])
        body_b = None if own is None else _blob(colour_b, classes, share[..., 1], extra=body_a.mask)
    else:
        body_b = _blob(colour_b, classes, share[..., 1], thin=thin_b)
    return _View(rgb, COLOURS[a.colour], COLOURS[b.colour], colour_a, colour_b, white, classes == BACK,
                 body_a, body_b)


def _faint(v: _View, colour: tuple[int, int, int], under: tuple[int, int, int] = BACKGROUND,
           beside: tuple[int, int, int] | None = None) -> np.ndarray:
    """Pixels that are at least ``FAINT`` ``colour`` over ``under``: thin marks (1 px bars and
    arms, the rope, eyes, grooves) that blur fades below their class. With ``beside``, a pixel
    may also hold some of that colour (an arm blurred into the body it lies on)."""
    share, residual = _shares(v.rgb, [colour] if beside is None else [colour, beside], under)
    return (share[..., 0] >= FAINT) & (residual <= RESIDUAL)


# Geometry of two bodies p and q (tolerances allow for resting shapes sinking into curves).

def _over(p: _Blob, q: _Blob) -> bool:
    """p's bottom at or above q's top, overlapping it horizontally."""
    return p.y1 <= q.y0 + 3 and p.y0 < q.y0 and p.x0 <= q.x1 and q.x0 <= p.x1


def _beside(p: _Blob, q: _Blob) -> bool:
    """p's right side at or left of q's left side, overlapping it vertically."""
    return p.x1 <= q.x0 + 4 and p.x0 < q.x0 and p.y0 <= q.y1 and q.y0 <= p.y1


def _touching(v: _View) -> bool:
    """At most 2 px of seam or background between the bodies (apart scenes leave 4 or more)."""
    return bool((dilate(v.a.mask, 3) & v.b.mask).any())


def _within(p: _Blob, q: _Blob) -> bool:
    """p strictly inside q's box, and q the bigger."""
    return q.y0 < p.y0 and p.y1 < q.y1 and q.x0 < p.x0 and p.x1 < q.x1 and q.area >= 2 * p.area


def _plain(v: _View) -> bool:
    """No white marks (a couple of stray pixels allowed)."""
    return v.white.sum() <= 2


def _clear_between(v: _View) -> bool:
    """Not even a faint bar of either colour in the gap between side-by-side bodies (a pixel
    clear of each body, where its own blurred edge fades out)."""
    left, right = sorted((v.a, v.b), key=lambda p: p.x0)
    rows = slice(max(left.y0, right.y0), min(left.y1, right.y1) + 1)
    cols = slice(left.x1 + 2, right.x0 - 1)
    return (_faint(v, v.rgb_a) | _faint(v, v.rgb_b))[rows, cols].sum() <= 2


def _hands(v: _View) -> bool:
    """A row across the gap filled by A's colour on the left, B's colour on the right (where they
    meet, one blended pixel may count as both)."""
    cols = slice(v.a.x1 + 1, v.b.x0)
    hand_a, hand_b = _faint(v, v.rgb_a, beside=v.rgb_b)[:, cols], _faint(v, v.rgb_b, beside=v.rgb_a)[:, cols]
    for y in range(max(v.a.y0, v.b.y0), min(v.a.y1, v.b.y1) + 1):
        xa, xb = np.flatnonzero(hand_a[y]), np.flatnonzero(hand_b[y])
        if len(xa) and len(xb) and xa.max() <= xb.min() + 1 and len(xa) + len(xb) >= 0.6 * (v.b.x0 - v.a.x1 - 1):
            return True
    return False


def _arms(v: _View) -> bool:
    """A's colour just above and just below B, over B's middle."""
    cols = slice(round(v.b.cx) - 1, round(v.b.cx) + 2)
    arm = _faint(v, v.rgb_a, beside=v.rgb_b)
    above = arm[max(v.b.y0 - 3, 0):v.b.y0, cols]
    below = arm[v.b.y1 + 1:v.b.y1 + 4, cols]
    return bool((above.sum(1) >= 2).any() and (below.sum(1) >= 2).any())


def _wheels(v: _View) -> bool:
    """White blobs under B's lower half, one left and one right of its middle."""
    labels, n = label(_faint(v, WHITE))
    xs = []
    for k in range(1, n + 1):
        ys, x = np.nonzero(labels == k)
        if v.b.cy <= ys.mean() <= v.b.y1 + 4 and v.b.x0 - 1 <= x.mean() <= v.b.x1 + 1:
            xs.append(x.mean())
    return bool(xs) and min(xs) < v.b.cx < max(xs)


def _rope(v: _View) -> bool:
    """A white vertical line filling the gap from B's bottom down to A's top."""
    gap = _faint(v, WHITE)[v.b.y1 + 1:v.a.y0, max(v.a.x0, v.b.x0):min(v.a.x1, v.b.x1) + 1]
    return gap.size > 0 and bool((gap.mean(0) >= 0.6).any())


def _eyes(v: _View) -> bool:
    """White inside A on its left (outer) side and inside B on its right side."""
    x = np.arange(v.white.shape[1])[None, :]
    eye_a = _faint(v, WHITE, v.rgb_a) & dilate(v.a.mask) & (x < v.a.cx)
    eye_b = _faint(v, WHITE, v.rgb_b) & dilate(v.b.mask) & (x > v.b.cx)
    return bool(eye_a.any() and eye_b.any())


def _hollow(v: _View) -> bool:
    """B is a ring: background shows inside its outline."""
    return (v.background & v.b.mask).sum() >= 0.1 * v.b.area


def _painted(v: _View) -> bool:
    """A is brush strokes: something else (B, or a blurred seam) shows between them."""
    return (v.a.mask & ~v.colour_a).sum() >= 0.05 * v.a.area


def _carved(v: _View) -> bool:
    """One object of B's colour, grooved with white, and no A colour anywhere."""
    if v.a is not None or not _own_body(v):
        return False
    return (_faint(v, WHITE, v.rgb_b) & v.b.mask).sum() >= max(3, 0.05 * v.b.area)


def _own_body(v: _View) -> bool:
    """carved_by's object has a body of B's own colour, not just grooves and a faint outline."""
    return v.b is not None and (v.colour_b & v.b.mask).sum() >= OWN_COLOUR * v.b.area


_CHECKS: dict[str, Callable[[_View], bool]] = {
    "above": lambda v: _over(v.a, v.b) and not _touching(v) and _plain(v),
    "below": lambda v: _over(v.b, v.a) and not _touching(v) and _plain(v),
    "left_of": lambda v: _beside(v.a, v.b) and not _touching(v) and _plain(v) and _clear_between(v),
    "right_of": lambda v: _beside(v.b, v.a) and not _touching(v) and _plain(v) and _clear_between(v),
    "next_to": lambda v: ((_beside(v.a, v.b) or _beside(v.b, v.a)) and not _touching(v) and _plain(v)
                          and _clear_between(v)),
    "on": lambda v: _over(v.a, v.b) and _touching(v) and _plain(v),
    "ride_on": lambda v: _over(v.a, v.b) and _touching(v) and _wheels(v),
    "hanging_from": lambda v: _over(v.b, v.a) and not _touching(v) and _rope(v),
    "shake_hands": lambda v: _beside(v.a, v.b) and not _touching(v) and _plain(v) and _hands(v),
    "hug": lambda v: _beside(v.a, v.b) and _touching(v) and _plain(v) and _arms(v),
    "back2back": lambda v: _beside(v.a, v.b) and _touching(v) and _eyes(v),
    "inside": lambda v: _within(v.a, v.b) and _plain(v) and not _hollow(v) and not _painted(v),
    "painted_on": lambda v: _within(v.a, v.b) and _plain(v) and not _hollow(v) and _painted(v),
    "wrapped_in": lambda v: _within(v.a, v.b) and _plain(v) and _hollow(v) and not _painted(v),
}


def _fusion(v: _View, a: Entity, b: Entity, relation: str, shape_a: str | None, shape_b: str | None) -> bool:
    """One entity carries the other's colour or shape: a shape shows up in the wrong colour, or
    one colour holds two bodies while the other is missing, or only one body exists.

    carved_by is a fusion by design (A's shape in B's colour), so there only a second body of
    B's colour counts.
    """
    if relation == "carved_by":
        return v.b is not None and v.b.count >= 2
    swapped = a.shape != b.shape and (shape_a == b.shape or shape_b == a.shape)
    lone = (v.a is None) != (v.b is None)
    doubled = any(p is None and q is not None and q.count >= 2 for p, q in ((v.a, v.b), (v.b, v.a)))
    return swapped or lone or doubled


def score(image: np.ndarray, a: Entity, relation: str, b: Entity) -> Score:
    """Score ``image`` (uint8 [H, W, 3]) against the caption "a <relation> b"."""
    if relation not in ALL_RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; choose from {sorted(ALL_RELATIONS)}")
    v = _view(np.asarray(image), a, relation, b)
    shape_a, shape_b = shape_of(v.a), shape_of(v.b)
    if relation == "carved_by":  # A's shape, made of B; A's own colour must be gone
        shape_a, shape_b = shape_b, None
        entity_a, entity_b = shape_a == a.shape, _own_body(v) and v.a is None
        related = _carved(v)
    else:
        entity_a, entity_b = shape_a == a.shape, shape_b == b.shape
        related = v.a is not None and v.b is not None and _CHECKS[relation](v)
    return Score(entity_a, entity_b, entity_a and entity_b, bool(related),
                 _fusion(v, a, b, relation, shape_a, shape_b), shape_a, shape_b)
