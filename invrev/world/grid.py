"""Binary-image tools for small grids (scipy is not a dependency): shifts, morphology, labelling.

Outside the grid is background, for erosion too: a closing must not join a shape to the edge
across the 1 px margin every scene keeps.
"""

from __future__ import annotations

import numpy as np


def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved down by ``dy`` and right by ``dx``; cells shifted in are False."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    """Dilation by a (2r+1)-square, done separably."""
    rows = mask.copy()
    for d in range(1, r + 1):
        rows |= shift(mask, 0, d) | shift(mask, 0, -d)
    out = rows.copy()
    for d in range(1, r + 1):
        out |= shift(rows, d, 0) | shift(rows, -d, 0)
    return out


def erode(mask: np.ndarray, r: int = 1) -> np.ndarray:
    out = ~dilate(~mask, r)
    out[:r], out[-r:], out[:, :r], out[:, -r:] = False, False, False, False
    return out


def close(mask: np.ndarray) -> np.ndarray:
    """3x3 closing: bridges gaps up to 2 cells wide (anti-aliased seams, 2-px stripes)."""
    return erode(dilate(mask))


def drop_thin_rows(mask: np.ndarray, height: int = 1) -> np.ndarray:
    """Opening by a vertical run of ``height`` + 1: removes marks up to ``height`` cells tall (bars,
    arms) but keeps bodies. A cell stays if some run of ``height`` + 1 set cells covers it."""
    n = height + 1
    starts = mask.copy()  # cells that begin a run of n set cells downwards
    for d in range(1, n):
        starts &= shift(mask, -d, 0)
    kept = starts.copy()
    for d in range(1, n):
        kept |= shift(starts, d, 0)
    return kept


def label(mask: np.ndarray, diagonal: bool = True) -> tuple[np.ndarray, int]:
    """Connected components (8-connected, or 4 with ``diagonal=False``): labels 1..n, 0 outside.

    Union-find over row runs, so the Python loop runs over a few dozen runs, not pixels.
    """
    h, w = mask.shape
    starts = mask.copy()
    starts[:, 1:] &= ~mask[:, :-1]
    runs = np.cumsum(starts).reshape(h, w) * mask
    n_runs = int(runs.max())
    up, down = runs[:-1], runs[1:]
    links = [(up, down)]
    if diagonal:
        links += [(up[:, :-1], down[:, 1:]), (up[:, 1:], down[:, :-1])]
    codes = np.concatenate([(u * (n_runs + 1) + d)[(u > 0) & (d > 0)] for u, d in links])
    parent = list(range(n_runs + 1))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for code in np.unique(codes).tolist():
        ri, rj = (find(k) for k in divmod(code, n_runs + 1))
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots, table = np.unique([find(i) for i in range(n_runs + 1)], return_inverse=True)
    return table[runs], len(roots) - 1


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` plus every background cell the border cannot reach (4-connected, so a diagonal
    seam in a 1-px outline does not count as a leak)."""
    labels, _ = label(~mask, diagonal=False)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return ~np.isin(labels, border[border > 0])
