"""Overlay drawing: tracks above the threshold once each, small frames enlarged, labels beside their masks."""

import numpy as np

from clipvis.reports import overlays
from conftest import rle


def square(top, left, size, shape=(64, 80)):
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + size, left:left + size] = True
    return mask


def test_tracks_keep_those_above_the_threshold_once_each_with_their_own_colour():
    first, second = [rle(square(5, 5, 10))], [rle(square(30, 40, 10))]
    records = [{"category_id": 1, "score": 0.5, "segmentations": first},
               {"category_id": 2, "score": 0.9, "segmentations": first},  # the same track slot, another label
               {"category_id": 1, "score": 0.7, "segmentations": second},
               {"category_id": 2, "score": 0.2, "segmentations": [rle(square(0, 0, 3))]}]
    tracks = overlays.tracks_from_results(records, {1: "cat", 2: "dog"}, min_score=0.3)
    assert [t.caption for t in tracks] == ["dog 0.90", "cat 0.70"]
    assert tracks[0].colour != tracks[1].colour


def test_a_small_frame_is_enlarged_and_the_label_sits_beside_the_mask():
    frame = np.full((64, 80, 3), 100, dtype=np.uint8)
    mask = square(20, 10, 16)
    track = overlays.Track("red star 0.93", (255, 0, 0), [rle(mask)])
    scale = overlays.draw_scale(64)
    drawn = overlays.draw_tracks(frame, [track], 0)
    assert scale > 1 and drawn.shape == (64 * scale, 80 * scale, 3)

    big = np.repeat(np.repeat(mask, scale, 0), scale, 1)
    inner = big.copy()
    inner[1:-1, 1:-1] = big[:-2, 1:-1] & big[2:, 1:-1] & big[1:-1, :-2] & big[1:-1, 2:]  # without the outline
    tint = np.round((1 - overlays.MASK_ALPHA) * 100 + overlays.MASK_ALPHA * np.array([255, 0, 0]))
    assert (drawn[inner] == tint).all()  # nothing drawn over the mask
    label = (drawn == [255, 0, 0]).all(-1) & ~big  # the label's fill, outside the mask
    rows, cols = np.nonzero(label)
    assert len(rows) and cols.min() > np.nonzero(big)[1].max()  # to the right of the mask's box


def test_labels_go_elsewhere_when_the_first_place_is_taken_or_off_the_frame():
    box, size, frame = (50, 40, 90, 60), (30, 10), (200, 100)
    assert overlays._label_position(box, size, frame, []) == (94, 40)  # right of the box
    assert overlays._label_position(box, size, frame, [(94, 35, 130, 50)]) == (16, 40)  # taken: left
    assert overlays._label_position((150, 40, 190, 60), size, frame, []) == (116, 40)  # no room right: left
