"""The benchmark registry and the vocabularies (class names and base/novel groups)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipvis.data.registry import BENCHMARKS, get_benchmark, missing_paths, resolve_root
from clipvis.data.vocabularies import categories, category_groups, novel_ids, vocabulary
from clipvis.errors import InputError

# name: (image root, annotation json, scorer, public ground truth), as the CLIP-VIS code registers them
EXPECTED = {
    "lvvis_val": ("lvvis/val/JPEGImages", "lvvis/val/val_instances_.json", "lvvis", True),
    "lvvis_test": ("lvvis/test/JPEGImages", "lvvis/test/test_instances.json", "lvvis", False),
    "ytvis19_val": ("ytvis2019/valid/JPEGImages", "ytvis2019/valid.json", "ytvis", False),
    "ytvis21_val": ("ytvis2021/valid/JPEGImages", "ytvis2021/valid.json", "ytvis", False),
    "ovis_val": ("ovis/valid", "ovis/annotations_valid.json", "ytvis", False),
    "burst_val": ("burst/val", "burst/val/b2y_val.json", "burst", True),
    "lvis_train_norare": ("coco", "lvis/lvis_v1_train_norare.json", None, True),
    "coco_train": ("coco/train2017", "coco/annotations/instances_train2017.json", None, True),
    "ytvis19_train": ("ytvis2019/train/JPEGImages", "ytvis2019/train.json", None, True),
    "toy_lvis_train": ("toy/toy_lvis_train/images", "toy/toy_lvis_train/annotations.json", None, True),
    "toy_lvis_val": ("toy/toy_lvis_val/images", "toy/toy_lvis_val/annotations.json", None, True),
    "toy_ytvis_train": ("toy/toy_ytvis_train/JPEGImages", "toy/toy_ytvis_train/annotations.json", None, True),
    "toy_lvvis": ("toy/toy_lvvis/JPEGImages", "toy/toy_lvvis/annotations.json", "lvvis", True),
    "toy_ovis": ("toy/toy_ovis/JPEGImages", "toy/toy_ovis/annotations.json", "ytvis", True),
    "toy_captions": ("toy/toy_captions/images", "toy/toy_captions/captions.json", None, True),
}


def test_registry_holds_exactly_the_expected_benchmarks():
    assert set(BENCHMARKS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paths_scorer_and_ground_truth(name):
    b = get_benchmark(name)
    image_root, annotations, scorer, public = EXPECTED[name]
    assert (b.image_root, b.annotations, b.scorer, b.has_public_gt) == (image_root, annotations, scorer, public)
    assert b.server if not public else b.server is None  # where results go when the GT is hidden
    assert b.manual  # every benchmark says how to obtain it
    assert b.role == ("train" if name.endswith("train") or name in ("toy_captions", "lvis_train_norare")
                      else "test" if name == "lvvis_test" else "val")
    for remote in b.downloads:
        assert not Path(remote.relative_path).is_absolute() and ".." not in remote.relative_path


def test_unknown_benchmark_names_the_known_ones():
    with pytest.raises(InputError) as error:
        get_benchmark("lvvis_train")
    assert error.value.source == "--benchmark" and error.value.field == "lvvis_train"
    assert "lvvis_val" in error.value.problem and "toy_ovis" in error.value.problem


@pytest.mark.parametrize("name, size, examples", [
    ("ytvis19_val", 40, ["giant_panda", "earless_seal", "tennis_racket"]),
    ("ytvis21_val", 40, ["flying_disc", "earless_seal"]),
    ("ovis_val", 25, ["Giant_panda", "Vehical", "Poultry"]),
    ("lvvis_val", 1196, ["bat_(animal)", "giant_panda", "CD"]),
    ("burst_val", 482, ["aerosol_can", "monitor_(computer_equipment) computer_monitor"]),
    ("lvis_train_norare", 1203, ["aerosol_can", "horned_cow", "bat_(animal)"]),
    ("coco_train", 80, ["traffic light", "person", "toothbrush"]),
])
def test_embedded_vocabularies(tmp_path, name, size, examples):
    names = vocabulary(name, tmp_path)  # embedded: nothing needed under the root
    assert len(names) == size == len(set(names))
    assert set(examples) <= set(names)


def test_vocabulary_order_and_ids():
    assert vocabulary("ovis_val", ".")[:3] == ["Person", "Bird", "Cat"]
    assert vocabulary("ytvis19_val", ".")[-1] == "tennis_racket"
    lvvis = categories("lvvis_val", ".")
    assert [c["id"] for c in lvvis] == list(range(1, 1197))
    coco_ids = [c["id"] for c in categories("coco_train", ".")]
    assert coco_ids[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13] and coco_ids[-1] == 90


def test_novel_groups_match_the_published_counts():
    lvvis = category_groups("lvvis_val", ".")
    assert (len(lvvis["base"]), len(lvvis["novel"])) == (641, 555)  # partitions 0,1 / 2,3
    assert len(novel_ids("lvis_train_norare", ".")) == 337  # LVIS v1 rare
    assert len(novel_ids("burst_val", ".")) == 96  # BURST classes of LVIS frequency r
    assert novel_ids("ytvis19_val", ".") == set()
    assert 1 in novel_ids("lvvis_val", ".")  # accordion, partition 3


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_burst_common_uncommon_comes_from_its_annotation_file(tmp_path):
    with pytest.raises(InputError) as error:
        category_groups("burst_val", tmp_path)
    assert error.value.source == str(tmp_path / "burst/val/b2y_val.json")
    _write_json(tmp_path / "burst/val/b2y_val.json", {"videos": [], "annotations": [], "categories": [
        {"id": 1, "name": "aerosol_can", "split": "uncommon"}, {"id": 2, "name": "airplane", "split": "common"}]})
    groups = category_groups("burst_val", tmp_path)
    assert groups["common"] == {2} and groups["uncommon"] == {1}
    assert len(groups["novel"]) == 96


def test_burst_split_values_are_checked(tmp_path):
    _write_json(tmp_path / "burst/val/b2y_val.json", {"categories": [{"id": 1, "name": "x", "split": "rare"}]})
    with pytest.raises(InputError, match=r"categories\[0\]\.split"):
        category_groups("burst_val", tmp_path)


def test_toy_vocabulary_comes_from_the_generated_world(tmp_path):
    with pytest.raises(InputError, match="clipvis data --benchmark toy"):
        vocabulary("toy_lvvis", tmp_path)
    _write_json(tmp_path / "toy/categories.json", {"categories": [
        {"id": 1, "name": "red circle", "partition": 0}, {"id": 2, "name": "blue star", "partition": 2}]})
    assert vocabulary("toy_lvvis", tmp_path) == ["red circle", "blue star"]
    assert novel_ids("toy_ovis", tmp_path) == {2}


@pytest.mark.parametrize("content, field", [
    ([], "categories"),
    ([{"id": 1, "name": ""}], "categories[0].name"),
    ([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "categories[1].id"),
])
def test_bad_or_empty_vocabulary_is_an_input_error(tmp_path, content, field):
    path = _write_json(tmp_path / "toy/categories.json", {"categories": content})
    with pytest.raises(InputError) as error:
        vocabulary("toy_lvvis", tmp_path)
    assert error.value.source == str(path) and error.value.field == field


def test_missing_paths_name_the_exact_files(tmp_path):
    b = get_benchmark("ovis_val")
    assert [(m.path, m.is_dir) for m in missing_paths(b, tmp_path)] == [
        (tmp_path / "ovis/annotations_valid.json", False), (tmp_path / "ovis/valid", True)]
    _write_json(tmp_path / "ovis/annotations_valid.json", {})
    (tmp_path / "ovis/valid").mkdir()
    assert missing_paths(b, tmp_path) == []


def test_data_root_precedence(monkeypatch):
    monkeypatch.delenv("CLIPVIS_DATA", raising=False)
    assert resolve_root(None, "from_config") == Path("from_config")
    monkeypatch.setenv("CLIPVIS_DATA", "/from/env")
    assert resolve_root(None, "from_config") == Path("/from/env")
    assert resolve_root("explicit", "from_config") == Path("explicit")
