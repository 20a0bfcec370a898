import json

import numpy as np
import pytest
import torch
from PIL import Image

from clipvis.config import ToyWorldConfig, TrainConfig
from clipvis.data.augmentation import LargeScaleJitter
from clipvis.data.datasets import (ImageInstanceDataset, VideoFrameDataset, build_train_dataset, collate,
                                   remove_categories, train_loader)
from clipvis.toy.generate import generate_toy_world
from clipvis.data.samplers import RepeatFactorTrainingSampler, TrainingSampler, build_train_sampler
from clipvis.errors import InputError
from conftest import rle

H, W = 16, 20


def box_mask(top, left, bottom, right):
    mask = np.zeros((H, W), bool)
    mask[top:bottom, left:right] = True
    return mask


def save_png(path, fill):
    """A H x W image, each pixel coloured from its position and `fill` (exact: PNG is lossless)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, columns = np.mgrid[:H, :W]
    pixels = np.stack([rows * 10, columns * 10, np.full((H, W), fill)], -1).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return torch.from_numpy(pixels).permute(2, 0, 1)


def categories():
    return [{"id": 1, "name": "cat", "frequency": "f"}, {"id": 2, "name": "dog", "frequency": "c"},
            {"id": 3, "name": "yak", "frequency": "r"}]


def write_lvis(path, image_root, lvis_urls=True):
    """Image 1: a dog on the left, a cat on the right, a crowd; image 2: only a crowd; image 3: nothing.
    With `lvis_urls`, images are named by LVIS's coco_url and live in image_root/train2017/ (as LVIS
    under coco/), else by file_name. Returns the pixels of image 1."""
    folder = image_root / "train2017" if lvis_urls else image_root
    pixels = save_png(folder / "000001.png", 7)
    for name in ("000002.png", "000003.png"):
        save_png(folder / name, 0)
    names = [{"coco_url": f"http://images.cocodataset.org/train2017/{i:06d}.png"} if lvis_urls
             else {"file_name": f"{i:06d}.png"} for i in (1, 2, 3)]
    images = [{"id": i, "height": H, "width": W, **name} for i, name in zip((1, 2, 3), names)]
    annotation = {"bbox": [0, 0, 1, 1]}
    annotations = [
        {**annotation, "id": 1, "image_id": 1, "category_id": 2, "segmentation": rle(box_mask(2, 1, 10, 6))},
        {**annotation, "id": 2, "image_id": 1, "category_id": 1, "segmentation": rle(box_mask(5, 14, 9, 18))},
        {**annotation, "id": 3, "image_id": 1, "category_id": 3, "iscrowd": 1,
         "segmentation": rle(box_mask(0, 0, 3, 3))},
        {**annotation, "id": 4, "image_id": 2, "category_id": 1, "iscrowd": 1,
         "segmentation": [[1, 1, 8, 1, 8, 8, 1, 8]]},
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories()}))
    return pixels


def write_ytvis(path, frame_root):
    """Video 1 (3 frames): instance A (cat) everywhere, B (dog) null in frame 1, C (yak) without a box
    in frame 2. Video 2 (2 frames): no instances. Returns the pixels of each (video, frame)."""
    frames = {(video, t): save_png(frame_root / f"v{video}" / f"{t}.png", 40 * video + t)
              for video, length in ((1, 3), (2, 2)) for t in range(length)}
    videos = [{"id": video, "height": H, "width": W, "length": length,
               "file_names": [f"v{video}/{t}.png" for t in range(length)]} for video, length in ((1, 3), (2, 2))]
    a = [rle(box_mask(1, 1, 5, 5 + t)) for t in range(3)]
    b = [rle(box_mask(8, 8, 12, 12)), None, rle(box_mask(9, 9, 13, 13))]
    c = [rle(box_mask(0, 15, 4, 19)) for _ in range(3)]
    annotations = [
        {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": a},
        {"id": 2, "video_id": 1, "category_id": 2, "iscrowd": 0, "segmentations": b},
        {"id": 3, "video_id": 1, "category_id": 3, "iscrowd": 0, "segmentations": c,
         "bboxes": [[15, 0, 4, 4], [15, 0, 4, 4], None]},
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"videos": videos, "annotations": annotations, "categories": categories()}))
    return frames


@pytest.fixture
def lvis(tmp_path):
    """(annotation path, image root, pixels of image 1)."""
    pixels = write_lvis(tmp_path / "lvis.json", tmp_path / "coco")
    return tmp_path / "lvis.json", tmp_path / "coco", pixels


@pytest.fixture
def ytvis(tmp_path):
    """(annotation path, frame root, pixels of each (video, frame))."""
    frames = write_ytvis(tmp_path / "videos.json", tmp_path / "frames")
    return tmp_path / "videos.json", tmp_path / "frames", frames


def test_image_dataset_drops_crowd_and_empty_images_and_reads_lvis_file_names(lvis):
    path, image_root, pixels = lvis
    dataset = ImageInstanceDataset(path, image_root)
    assert len(dataset) == 1 and dataset.image_categories == [[2, 1]]
    sample = dataset.get(0, sample_seed=0)
    assert sample["image_id"] == 1
    assert torch.equal(sample["image"], pixels) and sample["image"].dtype == torch.uint8
    assert torch.equal(sample["category_ids"], torch.tensor([2, 1]))
    expected = torch.from_numpy(np.stack([box_mask(2, 1, 10, 6), box_mask(5, 14, 9, 18)]))
    assert torch.equal(sample["masks"], expected)


def test_instances_emptied_by_augmentation_are_dropped(lvis):
    path, image_root, _ = lvis

    def left_half(image, masks, rng):
        return image[:, :, :W // 2], masks[:, :, :W // 2]

    sample = ImageInstanceDataset(path, image_root, left_half).get(0, sample_seed=0)
    assert sample["image"].shape == (3, H, W // 2) and sample["masks"].shape == (1, H, W // 2)
    assert sample["category_ids"].tolist() == [2]  # the cat was on the right


def test_image_errors_name_the_file(lvis):
    path, image_root, _ = lvis
    (image_root / "train2017" / "000001.png").unlink()
    with pytest.raises(InputError, match="000001.png.*image not found"):
        ImageInstanceDataset(path, image_root).get(0, 0)
    Image.new("RGB", (W + 1, H)).save(image_root / "train2017" / "000001.png")
    with pytest.raises(InputError, match="image is 16x21"):
        ImageInstanceDataset(path, image_root).get(0, 0)


def test_video_dataset_picks_a_frame_and_drops_absent_instances(ytvis):
    path, image_root, frames = ytvis
    dataset = VideoFrameDataset(path, image_root)
    assert len(dataset) == 2
    present = {0: [1, 2, 3], 1: [1, 3], 2: [1, 2]}  # B null in frame 1, C without a box in frame 2
    seen = set()
    for seed in range(30):
        sample = dataset.get(0, seed)
        t = sample["frame_index"]
        seen.add(t)
        assert sample["video_id"] == 1 and torch.equal(sample["image"], frames[(1, t)])
        assert sample["category_ids"].tolist() == present[t]
        assert torch.equal(sample["masks"][0], torch.from_numpy(box_mask(1, 1, 5, 5 + t)))
    assert seen == {0, 1, 2}
    empty = dataset.get(1, 0)
    assert empty["masks"].shape == (0, H, W) and empty["category_ids"].shape == (0,)


def test_samples_are_a_pure_function_of_the_key(ytvis):
    path, image_root, _ = ytvis
    dataset = VideoFrameDataset(path, image_root, LargeScaleJitter(24, 0.5, 2.0))
    first, second = dataset[(0, 123)], dataset[(0, 123)]
    assert first["frame_index"] == second["frame_index"]
    assert torch.equal(first["image"], second["image"]) and torch.equal(first["masks"], second["masks"])
    assert first["image"].shape == (3, 24, 24)
    assert any(not torch.equal(dataset[(0, seed)]["image"], first["image"]) for seed in range(5))


def batches(loader, count):
    out = []
    for batch in loader:
        out.append([(s["video_id"], s["frame_index"], s["image"], s["masks"]) for s in batch])
        if len(out) == count:
            return out


def same_batches(left, right):
    return all(len(a) == len(b) and all(x[:2] == y[:2] and torch.equal(x[2], y[2]) and torch.equal(x[3], y[3])
                                        for x, y in zip(a, b)) for a, b in zip(left, right))


def test_loader_stream_ignores_workers_and_resumes_exactly(ytvis):
    path, image_root, _ = ytvis
    dataset = VideoFrameDataset(path, image_root, LargeScaleJitter(24, 0.5, 2.0))
    single = batches(train_loader(dataset, TrainingSampler(len(dataset), 5, batch_size=3), num_workers=0), 4)
    parallel = batches(train_loader(dataset, TrainingSampler(len(dataset), 5, batch_size=3), num_workers=2), 4)
    resumed = batches(train_loader(dataset, TrainingSampler(len(dataset), 5, 3, start_iter=2), num_workers=0), 2)
    assert same_batches(single, parallel)
    assert same_batches(single[2:], resumed)


def test_build_train_dataset_and_sampler_follow_the_benchmark_kind(tmp_path):
    root = tmp_path  # the toy training sets' layout
    write_lvis(root / "toy/toy_lvis_train/annotations.json", root / "toy/toy_lvis_train/images", lvis_urls=False)
    write_ytvis(root / "toy/toy_ytvis_train/annotations.json", root / "toy/toy_ytvis_train/JPEGImages")
    cfg = TrainConfig(image_size=32, batch_size=4, repeat_factor_threshold=0.5)
    images = build_train_dataset("toy_lvis_train", root, cfg)
    assert isinstance(images, ImageInstanceDataset) and images.get(0, 1)["image"].shape == (3, 32, 32)
    video_cfg = TrainConfig(augmentation="resize_shortest", min_size_train=[32], max_size_train=100)
    videos = build_train_dataset("toy_ytvis_train", root, video_cfg)
    assert isinstance(videos, VideoFrameDataset) and videos.get(0, 1)["image"].shape == (3, 32, 40)

    sampler = build_train_sampler(images, cfg, start_iter=3, rank=1, world_size=2)
    assert isinstance(sampler, RepeatFactorTrainingSampler)
    assert (sampler.batch_size, sampler.start_iter, sampler.rank) == (2, 3, 1)
    plain = build_train_sampler(images, TrainConfig(repeat_factor_threshold=None))
    assert type(plain) is TrainingSampler
    assert type(build_train_sampler(videos, cfg)) is TrainingSampler
    with pytest.raises(InputError, match="train.batch_size"):
        build_train_sampler(images, TrainConfig(batch_size=3), world_size=2)


def test_generated_toy_world_trains(tmp_path):
    counts = dict(train_images=4, train_videos=2, val_videos=1, ovis_videos=1, caption_images=1, heldout_captions=1)
    generate_toy_world(ToyWorldConfig(**counts), tmp_path, samples_path=None)
    base = {c["id"] for c in json.loads((tmp_path / "toy/categories.json").read_text())["categories"]
            if c["partition"] < 2}  # partitions 2 and 3 are novel
    images = build_train_dataset("toy_lvis_train", tmp_path, TrainConfig(image_size=48))
    assert len(images) == 4 and set(sum(images.image_categories, [])) <= base
    sample = images.get(0, 0)
    assert sample["image"].shape == (3, 48, 48) and sample["masks"].shape[1:] == (48, 48)
    videos = build_train_dataset("toy_ytvis_train", tmp_path, TrainConfig(augmentation="resize_shortest",
                                                                          min_size_train=[64], max_size_train=200))
    assert len(videos) == 2 and videos.get(1, 0)["image"].shape == (3, 64, 80)  # toy frames are 128 x 160


def test_missing_benchmark_files_are_named(tmp_path):
    with pytest.raises(InputError, match="toy_ytvis_train/annotations.json.*clipvis data"):
        build_train_dataset("toy_ytvis_train", tmp_path, TrainConfig())


def test_remove_categories_keeps_images_and_categories():
    gt = {"images": [{"id": 1}, {"id": 2}], "categories": categories(),
          "annotations": [{"id": 1, "image_id": 1, "category_id": 3}, {"id": 2, "image_id": 1, "category_id": 1},
                          {"id": 3, "image_id": 2, "category_id": 3}, {"id": 4, "image_id": 2, "category_id": 2}]}
    norare = remove_categories(gt)
    assert [a["id"] for a in norare["annotations"]] == [2, 4]
    assert norare["images"] == gt["images"] and norare["categories"] == gt["categories"]
    assert len(gt["annotations"]) == 4  # the input is unchanged
    assert [a["id"] for a in remove_categories(gt, "f")["annotations"]] == [1, 3, 4]


def test_collate_keeps_samples_as_a_list():
    samples = [{"image_id": 1}, {"image_id": 2}]
    assert collate(samples) == samples and isinstance(collate(tuple(samples)), list)
