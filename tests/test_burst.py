import json

import numpy as np
import pycocotools.mask as mask_api
import pytest

from clipvis.data.burst import convert_burst, write_burst_conversion
from clipvis.data.formats import load_video_gt
from clipvis.errors import InputError


def box_mask(height, width, top, bottom, left, right):
    mask = np.zeros((height, width), np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


def rle_string(mask):
    return mask_api.encode(np.asfortranarray(mask))["counts"].decode("ascii")


# Sequence 5 (4 x 6, 3 annotated frames): track "1" in every frame, track "2" in frames 0 and 2.
# Sequence 9 (3 x 3, 2 annotated frames): track "4" in frame 1 only.
MASKS = {
    (5, "1", 0): box_mask(4, 6, 0, 2, 0, 3),
    (5, "1", 1): box_mask(4, 6, 1, 3, 1, 4),
    (5, "1", 2): box_mask(4, 6, 2, 4, 3, 6),
    (5, "2", 0): box_mask(4, 6, 3, 4, 5, 6),
    (5, "2", 2): box_mask(4, 6, 0, 4, 0, 1),
    (9, "4", 1): box_mask(3, 3, 1, 3, 1, 2),
}


def burst_files(tmp_path, change=lambda data, split: None):
    sequences = []
    for seq_id, (height, width, frames, tracks) in {5: (4, 6, 3, {"1": 10, "2": 3}), 9: (3, 3, 2, {"4": 7})}.items():
        sequences.append({
            "id": seq_id, "width": width, "height": height, "dataset": "LaSOT", "seq_name": f"seq{seq_id}",
            "fps": 30, "all_image_paths": [f"{t:06d}.jpg" for t in range(10)],
            "annotated_image_paths": [f"{t:06d}.jpg" for t in range(frames)],
            "neg_category_ids": [3] if seq_id == 9 else [], "not_exhaustive_category_ids": [],
            "track_category_ids": tracks,
            "segmentations": [{track: {"rle": rle_string(MASKS[seq_id, track, t]), "is_gt": True}
                               for track in tracks if (seq_id, track, t) in MASKS} for t in range(frames)],
        })
    data = {"split": "val", "sequences": sequences, "categories": [
        {"id": 3, "name": "apple", "frequency": "f", "synonyms": ["apple"]},
        {"id": 10, "name": "bear", "frequency": "r", "synonyms": ["bear"]},
        {"id": 7, "name": "cat", "frequency": "c", "synonyms": ["cat"]},
    ]}
    split = {"common": [3], "uncommon": [10, 7, 99]}
    change(data, split)
    (tmp_path / "all_classes.json").write_text(json.dumps(data))
    (tmp_path / "class_split.json").write_text(json.dumps(split))
    return tmp_path / "all_classes.json", tmp_path / "class_split.json"


def test_conversion_builds_ytvis_videos_tracks_and_categories(tmp_path):
    converted = convert_burst(*burst_files(tmp_path))

    assert [(c["id"], c["lvis_id"], c["name"], c["split"], c["frequency"]) for c in converted["categories"]] == [
        (1, 3, "apple", "common", "f"), (2, 10, "bear", "uncommon", "r"), (3, 7, "cat", "uncommon", "c")]

    videos = converted["videos"]
    assert [(v["id"], v["height"], v["width"], v["length"]) for v in videos] == [(5, 4, 6, 3), (9, 3, 3, 2)]
    assert videos[1]["file_names"] == ["LaSOT/seq9/000000.jpg", "LaSOT/seq9/000001.jpg"]
    assert videos[1]["neg_category_ids"] == [3] and videos[1]["metadata"] == {"dataset": "LaSOT"}

    annotations = converted["annotations"]
    assert [(a["id"], a["video_id"], a["category_id"]) for a in annotations] == [(1, 5, 2), (2, 5, 1), (3, 9, 3)]
    for annotation, (seq_id, track) in zip(annotations, [(5, "1"), (5, "2"), (9, "4")], strict=True):
        for t, rle in enumerate(annotation["segmentations"]):
            if (seq_id, track, t) in MASKS:
                assert (mask_api.decode(rle) == MASKS[seq_id, track, t]).all()
            else:
                assert rle is None
    assert annotations[1]["segmentations"][1] is None and annotations[2]["segmentations"][0] is None
    assert annotations[0]["bboxes"] == [[0, 0, 3, 2], [1, 1, 3, 2], [3, 2, 3, 2]]
    assert annotations[1]["bboxes"] == [[5, 3, 1, 1], None, [0, 0, 1, 4]]


def test_written_conversion_loads_as_video_gt(tmp_path):
    out = tmp_path / "out" / "b2y_val.json"
    write_burst_conversion(*burst_files(tmp_path), out)
    gt = load_video_gt(out)
    assert gt["annotations"][1]["areas"] == [1, None, 4]
    assert {c["split"] for c in gt["categories"]} == {"common", "uncommon"}


def drop_frame(data, split):
    data["sequences"][0]["segmentations"].pop()


def unknown_track(data, split):
    data["sequences"][1]["segmentations"][0]["8"] = {"rle": "0<"}


def bad_rle(data, split):
    data["sequences"][1]["segmentations"][1]["4"]["rle"] = "00"


def unsplit_category(data, split):
    split["uncommon"].remove(7)


def unknown_category(data, split):
    data["sequences"][1]["track_category_ids"]["4"] = 55


@pytest.mark.parametrize("change, file, field, problem", [
    (drop_frame, "all_classes.json", "sequences[0].segmentations", "has 2 frames, annotated_image_paths has 3"),
    (unknown_track, "all_classes.json", 'sequences[1].segmentations[0]["8"]', "no entry in track_category_ids"),
    (bad_rle, "all_classes.json", 'sequences[1].segmentations[1]["4"].rle', "covers 0 pixels, size [3, 3] has 9"),
    (unsplit_category, "all_classes.json", "categories[2].id", "neither list of the class split"),
    (unknown_category, "all_classes.json", 'sequences[1].track_category_ids["4"]', "category 55 does not exist"),
    (lambda data, split: split.pop("common"), "class_split.json", "common", "missing"),
])
def test_bad_burst_input_names_file_and_field(tmp_path, change, file, field, problem):
    paths = burst_files(tmp_path, change)
    with pytest.raises(InputError) as caught:
        convert_burst(*paths)
    assert caught.value.source == str(tmp_path / file)
    assert caught.value.field == field and problem in caught.value.problem
