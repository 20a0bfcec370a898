"""The toy world: category split, file formats, what the videos contain, determinism and idempotence."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_api
import pytest
from PIL import Image
from pycocotools.coco import COCO

from clipvis.config import ToyWorldConfig
from clipvis.toy import generate as toy_datasets
from clipvis.toy.generate import caption_scene, dataset_scenes, generate_toy_world
from clipvis.toy.render import render_scene
from clipvis.toy.world import EXIT, make_categories
from clipvis.errors import InputError
from clipvis.files import read_json

TINY = ToyWorldConfig(frame_size=48, min_frames=12, max_frames=14, train_images=6, val_images=4, train_videos=2,
                      val_videos=3, ovis_videos=2, caption_images=8, heldout_captions=4)
# pycocotools' decode under numpy 2 warns on every call; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
HEIGHT, WIDTH = 48, 60  # 48 * 1.25
JSON_FILES = ("categories.json", "toy_lvis_train/annotations.json", "toy_lvis_val/annotations.json",
              "toy_ytvis_train/annotations.json", "toy_lvvis/annotations.json", "toy_ovis/annotations.json",
              "toy_captions/captions.json")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    return generate_toy_world(TINY, root, samples_path=root / "samples.png")


def load(world: Path, dataset: str) -> dict:
    return read_json(world / dataset / "annotations.json")


def decode(segmentation) -> np.ndarray:
    return mask_api.decode(segmentation).astype(bool)


def ground_truth(world: Path, dataset: str):
    """Per video: (scene, annotations paired with their scene objects, rendered frames)."""
    data = load(world, dataset)
    categories = make_categories(TINY.colours, TINY.shapes, TINY.novel_fraction, TINY.seed)
    for video, scene in zip(data["videos"], dataset_scenes(TINY, categories, dataset), strict=True):
        frames = list(render_scene(scene))
        ever_visible = [i for i in range(len(scene.objects)) if any(f.visible[i].any() for f in frames)]
        annotations = [a for a in data["annotations"] if a["video_id"] == video["id"]]
        assert [scene.objects[i].category_id for i in ever_visible] == [a["category_id"] for a in annotations]
        yield scene, list(zip(ever_visible, annotations)), frames


# ---------------------------------------------------------------- categories


def test_split_is_compositional_and_labelled_like_lvvis():
    categories = make_categories(TINY.colours, TINY.shapes, 1 / 3, seed=0)
    assert [c.id for c in categories] == list(range(1, 31))
    assert [c.name for c in categories] == sorted(f"{c} {s}" for c in TINY.colours for s in TINY.shapes)
    novel = [c for c in categories if c.is_novel]
    base = [c for c in categories if not c.is_novel]
    assert len(novel) == 10
    for group in (base, novel):
        assert {c.colour for c in group} == set(TINY.colours)
        assert {c.shape for c in group} == set(TINY.shapes)
    assert all(c.partition in (0, 1) and c.frequency in "fc" for c in base)
    assert all(c.partition in (2, 3) and c.frequency == "r" for c in novel)
    assert {c.frequency for c in base} == {"f", "c"}
    splits = {frozenset(c.name for c in make_categories(TINY.colours, TINY.shapes, 1 / 3, seed) if c.is_novel)
              for seed in range(4)}
    assert len(splits) > 1


def test_smallest_world_still_has_every_word_in_both_splits():
    categories = make_categories(["red", "blue"], ["star", "ring"], 0.9, seed=3)
    novel = [c for c in categories if c.is_novel]
    assert len(novel) == 2  # clamped: 4 cells, each colour and shape needs one base and one novel
    assert {c.colour for c in novel} == {"red", "blue"} and {c.shape for c in novel} == {"star", "ring"}


def test_bad_config_names_the_field(tmp_path):
    with pytest.raises(InputError, match=r"toy\.colours\[1\].*unknown colour 'mauve'"):
        make_categories(["red", "mauve"], ["star", "ring"], 0.5, seed=0)
    with pytest.raises(InputError, match=r"toy\.max_frames"):
        generate_toy_world(replace(TINY, max_frames=5), tmp_path, samples_path=None)


# ---------------------------------------------------------------- files


def test_layout_and_category_files(world):
    assert world.name == "toy"
    categories = read_json(world / "categories.json")["categories"]
    assert set(categories[0]) == {"id", "name", "partition", "frequency", "colour", "shape"}
    for dataset in ("toy_lvvis", "toy_ovis", "toy_ytvis_train"):
        assert load(world, dataset)["categories"] == categories
    manifest = read_json(world / "world.json")
    assert manifest["config"]["frame_size"] == 48 and manifest["counts"]["toy_lvvis"]["videos"] == 3
    assert manifest["counts"]["toy_lvis_val"]["images"] == 4
    assert (world.parent / "samples.png").stat().st_size > 10_000


def test_lvis_file_loads_with_pycocotools_and_masks_match(world):
    path = world / "toy_lvis_train" / "annotations.json"
    coco = COCO(str(path))
    assert len(coco.imgs) == TINY.train_images and coco.anns
    for annotation in coco.anns.values():
        image = coco.imgs[annotation["image_id"]]
        mask = coco.annToMask(annotation)
        assert mask.shape == (image["height"], image["width"]) == (HEIGHT, WIDTH)
        assert mask.sum() == annotation["area"] > 0
        ys, xs = np.nonzero(mask)
        assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert annotation["category_id"] not in image["neg_category_ids"]
    for image in coco.imgs.values():
        assert Image.open(world / "toy_lvis_train" / "images" / image["file_name"]).size == (WIDTH, HEIGHT)
    counts = {c["id"]: c["instance_count"] for c in coco.dataset["categories"]}
    assert sum(counts.values()) == len(coco.anns)


@pytest.mark.parametrize("dataset", ["toy_ytvis_train", "toy_lvvis", "toy_ovis"])
def test_video_files_decode_to_frame_sized_masks(world, dataset):
    data = load(world, dataset)
    videos = {v["id"]: v for v in data["videos"]}
    for video in videos.values():
        assert TINY.min_frames <= video["length"] == len(video["file_names"]) <= TINY.max_frames
        first = world / dataset / "JPEGImages" / video["file_names"][0]
        assert Image.open(first).size == (video["width"], video["height"]) == (WIDTH, HEIGHT)
    for annotation in data["annotations"]:
        video = videos[annotation["video_id"]]
        assert annotation["iscrowd"] == 0 and annotation["length"] == video["length"]
        entries = zip(annotation["segmentations"], annotation["bboxes"], annotation["areas"], strict=True)
        for segmentation, bbox, area in entries:
            assert (segmentation is None) == (bbox is None) == (area is None)
            if segmentation is not None:
                assert isinstance(segmentation["counts"], str)
                mask = decode(segmentation)
                assert mask.shape == (video["height"], video["width"]) and mask.sum() == area > 0
        assert any(s is not None for s in annotation["segmentations"])


def test_masks_of_different_objects_never_overlap(world):
    for dataset in ("toy_lvvis", "toy_ovis"):
        data = load(world, dataset)
        for video in data["videos"]:
            tracks = [a["segmentations"] for a in data["annotations"] if a["video_id"] == video["id"]]
            for t in range(video["length"]):
                cover = sum(decode(track[t]).astype(int) for track in tracks if track[t] is not None)
                assert np.max(cover) <= 1


def test_novel_categories_only_in_validation(world):
    novel = {c["id"] for c in read_json(world / "categories.json")["categories"] if c["partition"] >= 2}
    for dataset in ("toy_lvis_train", "toy_ytvis_train"):
        assert not novel & {a["category_id"] for a in load(world, dataset)["annotations"]}
    assert novel & {a["category_id"] for a in load(world, "toy_lvvis")["annotations"]}
    # the training pixels still show novel objects: only their annotations are dropped
    categories = make_categories(TINY.colours, TINY.shapes, TINY.novel_fraction, TINY.seed)
    drawn = {obj.category_id for scene in dataset_scenes(TINY, categories, "toy_lvis_train") for obj in scene.objects}
    assert novel & drawn


# ---------------------------------------------------------------- what the videos contain


def test_objects_leave_the_frame_and_come_back(world):
    returns = 0
    for scene, pairs, _ in ground_truth(world, "toy_lvvis"):
        for index, annotation in pairs:
            obj = scene.objects[index]
            x, y = obj.centres[:, 0], obj.centres[:, 1]
            r = obj.radius
            gone = (x < -r) | (x > scene.width + r) | (y < -r) | (y > scene.height + r)  # wholly outside
            present = np.array([s is not None for s in annotation["segmentations"]])
            assert not (gone & present).any()
            gone_at = np.nonzero(gone)[0]
            if len(gone_at) and present[:gone_at[0]].any() and present[gone_at[0]:].any():
                returns += 1
                assert obj.role == EXIT
    assert returns >= 2


def test_masks_are_the_visible_parts_in_z_order(world):
    occluded = 0
    for dataset in ("toy_lvvis", "toy_ovis"):
        for scene, pairs, frames in ground_truth(world, dataset):
            for t, frame in enumerate(frames):
                for index, annotation in pairs:
                    in_front = frame.full[index + 1:].any(axis=0)
                    expected = frame.full[index] & ~in_front
                    segmentation = annotation["segmentations"][t]
                    if not expected.any():
                        assert segmentation is None
                        continue
                    assert np.array_equal(decode(segmentation), expected)
                    occluded += expected.sum() < frame.full[index].sum()
    assert occluded >= 5


def test_look_alikes_cross_paths(world):
    crossings = 0
    for dataset in ("toy_lvvis", "toy_ovis"):
        for scene, pairs, _ in ground_truth(world, dataset):
            objects = [scene.objects[i] for i, _ in pairs]
            for i, a in enumerate(objects):
                for b in objects[i + 1:]:
                    distance = np.linalg.norm(a.centres - b.centres, axis=1)
                    crossings += a.category_id == b.category_id and distance.min() < a.radius
    assert crossings >= 1


def test_captions_cover_train_and_heldout(world):
    items = read_json(world / "toy_captions" / "captions.json")["items"]
    names = {c["id"]: c["name"] for c in read_json(world / "categories.json")["categories"]}
    assert [i["split"] for i in items] == ["train"] * 8 + ["heldout"] * 4
    for item in items:
        assert Image.open(world / "toy_captions" / "images" / item["file_name"]).size == (WIDTH, HEIGHT)
        assert all(names[i] in item["caption"] for i in item["category_ids"])
    heldout = [i for i in items if i["split"] == "heldout"]
    assert [i["category_ids"] for i in heldout] == [[1], [2], [3], [4]]  # every category in turn
    assert [i["caption"] for i in heldout] == [f"a photo of a {names[k]}" for k in (1, 2, 3, 4)]


def test_caption_masks_are_the_visible_pixels_of_each_named_category(world):
    items = read_json(world / "toy_captions" / "captions.json")["items"]
    categories = make_categories(TINY.colours, TINY.shapes, TINY.novel_fraction, TINY.seed)
    plan = [("train", i) for i in range(TINY.caption_images)] + [("heldout", i) for i in range(TINY.heldout_captions)]
    for item, (split, index) in zip(items, plan, strict=True):
        scene, _ = caption_scene(TINY, categories, split, index)
        (frame,) = render_scene(scene)
        assert len(item["segmentations"]) == len(item["category_ids"])
        for category_id, rle in zip(item["category_ids"], item["segmentations"]):
            shown = frame.visible[[obj.category_id == category_id for obj in scene.objects]].any(0)
            assert shown.any() and np.array_equal(decode({**rle, "counts": rle["counts"].encode()}), shown)


# ---------------------------------------------------------------- determinism and idempotence


def test_same_seed_same_bytes_other_seed_other_world(world, tmp_path):
    again = generate_toy_world(TINY, tmp_path / "again", samples_path=None)
    other = generate_toy_world(replace(TINY, seed=1), tmp_path / "other", samples_path=None)
    for name in JSON_FILES:
        assert (again / name).read_bytes() == (world / name).read_bytes(), name
    for name in JSON_FILES[1:]:
        assert (other / name).read_bytes() != (world / name).read_bytes(), name
    hashes = [read_json(w / "world.json")["content_hash"] for w in (world, again, other)]
    assert hashes[0] == hashes[1] != hashes[2]


def test_second_run_skips_and_a_new_config_regenerates(tmp_path, caplog):
    toy = generate_toy_world(TINY, tmp_path, samples_path=None)
    annotations = toy / "toy_ovis" / "annotations.json"
    stamp = annotations.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="clipvis.toy.generate"):
        generate_toy_world(TINY, tmp_path, samples_path=tmp_path / "samples.png")
    assert "skipping" in caplog.text
    assert annotations.stat().st_mtime_ns == stamp
    assert (tmp_path / "samples.png").exists()  # a missing figure is drawn even when skipping

    generate_toy_world(replace(TINY, ovis_videos=1), tmp_path, samples_path=None)
    assert read_json(toy / "world.json")["config"]["ovis_videos"] == 1
    assert len(read_json(annotations)["videos"]) == 1
    assert sorted(p.name for p in (toy / "toy_ovis" / "JPEGImages").iterdir()) == ["00000"]  # no stale video


def test_a_world_of_an_older_format_is_regenerated(tmp_path, monkeypatch):
    toy = generate_toy_world(TINY, tmp_path, samples_path=None)
    assert read_json(toy / "world.json")["format"] == toy_datasets.WORLD_FORMAT
    monkeypatch.setattr(toy_datasets, "WORLD_FORMAT", toy_datasets.WORLD_FORMAT + 1)
    stamp = (toy / "toy_ovis" / "annotations.json").stat().st_mtime_ns
    generate_toy_world(TINY, tmp_path, samples_path=None)
    assert (toy / "toy_ovis" / "annotations.json").stat().st_mtime_ns != stamp
    assert read_json(toy / "world.json")["format"] == toy_datasets.WORLD_FORMAT


def test_interrupted_generation_leaves_no_manifest(tmp_path, monkeypatch):
    toy = generate_toy_world(TINY, tmp_path, samples_path=None)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(toy_datasets, "_write_captions", killed)
    with pytest.raises(KeyboardInterrupt):
        generate_toy_world(replace(TINY, seed=5), tmp_path, samples_path=None)
    assert not (toy / "world.json").exists()
