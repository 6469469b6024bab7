"""The demo's side-by-side mosaic: tiles framed by the scorer's verdict, row labels on the tiles' centres."""

import numpy as np

from invrev import demo


def test_mosaic_frames_hits_and_labels_sit_on_row_centres():
    images = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(6)]
    hits = [True, False, False, True, True, False]
    mosaic = demo.mosaic(images, hits, rows=3, columns=2)
    green, grey = np.array((42, 157, 58)), np.array((200, 200, 200))
    column = mosaic[:, demo.GAP]  # the left frame of the first column's tiles
    for row, centre in enumerate(demo._row_centres(mosaic.shape[0], 3)):
        colour = green if hits[2 * row] else grey
        framed = np.flatnonzero((column == colour).all(axis=1))
        framed = framed[(framed > centre - 40) & (framed < centre + 40)]  # this row's tile only
        assert (framed.min() + framed.max()) / 2 == centre, (row, framed.min(), framed.max(), centre)
    inner = mosaic[demo.GAP + 4:demo.GAP + 4 + 64, demo.GAP + 4:demo.GAP + 4 + 64]
    assert (inner == 0).all()  # the first image, upscaled 4× inside its frame
