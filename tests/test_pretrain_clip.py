import argparse
import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image, ImageDraw

from clipvis.commands import pretrain_clip as pretrain_clip_command
from clipvis.errors import InputError
from clipvis.model.clip_encoder import FrozenCLIP
from clipvis.model.text_classifier import TEMPLATES, class_text_embeddings
from clipvis.toy.clip_pretrain import (CaptionPairs, ViewSampler, content_groups, contrastive_loss, flip_and_turn,
                                   heldout_crops, image_texts, load_caption_pairs, object_crop, save_checkpoint,
                                   train_clip, warmup_cosine, zero_shot_accuracy)

TINY = "clipvis_test_tiny_rn"  # registered below: 32-pixel input, width 8, a 1-layer text tower
CATEGORIES = [  # (id, name, partition, colour): partition 0/1 base, 2/3 novel
    (1, "red circle", 0, (220, 30, 30)),
    (2, "blue square", 1, (30, 60, 220)),
    (3, "green circle", 2, (30, 170, 50)),
]
SIZE = (40, 32)  # width, height of the generated images


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run many tiny ops: with a second thread each one waits for a busy shared core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def tiny_model_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("configs") / f"{TINY}.json"
    path.write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(path)


def object_box(position: int) -> tuple[int, int, int, int]:
    """Where `draw` puts the shape: (left, top, right, bottom), inclusive."""
    x = 4 + 6 * (position % 3)
    return x, 6, x + 17, 23


def draw(category: int, position: int) -> Image.Image:
    _, name, _, colour = CATEGORIES[category]
    image = Image.new("RGB", SIZE, (128, 128, 128))
    shape = ImageDraw.Draw(image)
    (shape.ellipse if "circle" in name else shape.rectangle)(object_box(position), fill=colour)
    return image


def write_caption_world(root, train_per_category: int = 4) -> None:
    """A toy caption set: one object per image, "train" and one "heldout" image per category."""
    toy = root / "toy"
    (toy / "toy_captions" / "images").mkdir(parents=True)
    (toy / "categories.json").write_text(json.dumps({"categories": [
        {"id": cid, "name": name, "partition": partition} for cid, name, partition, _ in CATEGORIES]}))
    items = []
    plan = [("train", c, i) for i in range(train_per_category) for c in range(len(CATEGORIES))]
    plan += [("heldout", c, 1) for c in range(len(CATEGORIES))]
    for item_id, (split, category, position) in enumerate(plan, start=1):
        file_name = f"{item_id:06d}.jpg"
        draw(category, position).save(toy / "toy_captions" / "images" / file_name, quality=95)
        cid, name, _, _ = CATEGORIES[category]
        left, top, right, bottom = object_box(position)
        items.append({"id": item_id, "file_name": file_name, "caption": f"a photo of a {name}",
                      "category_ids": [cid], "boxes": [[left, top, right - left + 1, bottom - top + 1]],
                      "split": split})
    (toy / "toy_captions" / "captions.json").write_text(json.dumps({"items": items}))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_caption_world(root)
    return root


NAMES = {cid: name for cid, name, _, _ in CATEGORIES}


def fit(world):
    pairs = load_caption_pairs(world, "train")
    torch.manual_seed(0)
    return train_clip(TINY, pairs, NAMES, epochs=8, batch_size=6, lr=2e-3, weight_decay=0.1, crop_probability=0.5)


@pytest.fixture(scope="module")
def trained(world):
    return fit(world)


def test_load_caption_pairs_reads_split_images_and_captions(world):
    pairs = load_caption_pairs(world, "heldout")
    assert pairs.images.shape == (3, 3, SIZE[1], SIZE[0]) and pairs.images.dtype == torch.uint8
    assert pairs.captions == ["a photo of a red circle", "a photo of a blue square", "a photo of a green circle"]
    assert pairs.category_ids == [[1], [2], [3]]
    assert pairs.boxes == [[[10.0, 6.0, 18.0, 18.0]]] * 3
    assert tuple(pairs.images[1, :, 15, 15].tolist()) == pytest.approx((30, 60, 220), abs=12)  # inside the square


def test_missing_captions_file_names_it_and_the_fix(tmp_path):
    with pytest.raises(InputError) as error:
        load_caption_pairs(tmp_path, "train")
    assert "captions.json" in str(error.value) and "clipvis data --benchmark toy" in str(error.value)


@pytest.mark.parametrize("boxes, problem", [
    (None, "missing; this toy world predates object boxes"),
    ([], "expected a list of 1 boxes"),
    ([[1, 2, 0, 4]], "bad box [1, 2, 0, 4]"),
    ([[1, 2, "3", 4]], "bad box"),
])
def test_bad_boxes_name_the_file_and_the_item(tmp_path, boxes, problem):
    write_caption_world(tmp_path, train_per_category=1)
    path = tmp_path / "toy" / "toy_captions" / "captions.json"
    items = json.loads(path.read_text())["items"]
    if boxes is None:
        del items[1]["boxes"]
    else:
        items[1]["boxes"] = boxes
    path.write_text(json.dumps({"items": items}))
    with pytest.raises(InputError) as error:
        load_caption_pairs(tmp_path, "train")
    assert "captions.json" in str(error.value) and "items[1].boxes" in str(error.value) and problem in str(error.value)


def test_object_crop_is_the_square_around_the_box_zero_outside_the_image():
    image = torch.arange(10 * 12, dtype=torch.uint8).view(1, 10, 12).expand(3, 10, 12)
    # Box 4 wide, 2 high at (3, 5): context 1.5 gives a 6-pixel square centred on (5, 6), left 2, top 3.
    crop = object_crop(image, [3, 5, 4, 2], 1.5, (0.0, 0.0), 6)
    assert torch.equal(crop, image[:, 3:9, 2:8])
    # Shifted half a side (3 px) right and up: left 5, top 0.
    assert torch.equal(object_crop(image, [3, 5, 4, 2], 1.5, (0.5, -0.5), 6), image[:, 0:6, 5:11])
    # Past the image's corner: zeros there.
    corner = object_crop(image, [9, 8, 2, 2], 3.0, (0.0, 0.0), 6)  # left 7, top 6: 5 columns and 4 rows inside
    assert torch.equal(corner[:, :4, :5], image[:, 6:10, 7:12])
    assert not corner[:, 4:].any() and not corner[:, :, 5:].any()
    resized = object_crop(image, [3, 5, 4, 2], 1.5, (0.0, 0.0), 3)
    assert resized.shape == (3, 3, 3) and resized.dtype == torch.uint8


def test_heldout_crops_centre_the_first_object(world):
    pairs = load_caption_pairs(world, "heldout")
    crops = heldout_crops(pairs, 25)  # the 18-pixel shapes times 1.4: 25 pixels, no resizing
    assert crops.shape == (3, 3, 25, 25)
    for crop, colour in zip(crops, [c[3] for c in CATEGORIES]):
        assert tuple(crop[:, 12, 12].tolist()) == pytest.approx(colour, abs=12)  # the object's middle
        assert tuple(crop[:, 12, 1].tolist()) == pytest.approx((128, 128, 128), abs=12)  # beside it: background


def test_view_sampler_pairs_crops_with_class_prompts_and_wholes_with_captions(world):
    pairs = load_caption_pairs(world, "train")
    crops = ViewSampler(pairs, NAMES, crop_probability=1.0, size=32)
    wholes = ViewSampler(pairs, NAMES, crop_probability=0.0, size=32)
    torch.manual_seed(0)
    for index in range(len(pairs.images)):
        view, text, shown = crops.draw(index)
        name = NAMES[pairs.category_ids[index][0]]
        assert view.shape == (3, 32, 32) and shown == pairs.category_ids[index]
        assert text in [template.format(name) for template in TEMPLATES]
        colour = CATEGORIES[pairs.category_ids[index][0] - 1][3]
        assert tuple(view[:, 16, 16].tolist()) == pytest.approx(colour, abs=40)  # the object fills the middle
        view, text, shown = wholes.draw(index)
        assert text in [pairs.captions[index]] + [template.format(name) for template in TEMPLATES]
        assert shown == pairs.category_ids[index]
        assert any(torch.equal(view, oriented.rot90(turns, dims=(-2, -1)))
                   for whole in [wholes.wholes[index]] for oriented in (whole, whole.flip(-1)) for turns in range(4))


def test_warmup_then_cosine_schedule():
    # 100 steps: warm-up over the first 5 (5%), cosine from step 5 to 100.
    assert warmup_cosine(0, 100) == pytest.approx(0.2)
    assert warmup_cosine(4, 100) == pytest.approx(1.0)
    assert warmup_cosine(5, 100) == pytest.approx(1.0)
    assert warmup_cosine(5 + 95 // 2, 100) == pytest.approx(0.5 * (1 + np.cos(np.pi * 47 / 95)))
    assert warmup_cosine(100, 100) == pytest.approx(0.0)


def test_image_texts_add_the_class_prompts_to_single_category_captions():
    pairs = CaptionPairs(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), ["a red circle", "a red circle and a blue square"],
                         [[1], [1, 2]], [[[0, 0, 1, 1]], [[0, 0, 1, 1], [2, 2, 1, 1]]])
    texts = image_texts(pairs, {1: "red circle", 2: "blue square"})
    assert texts[0][0] == "a red circle" and len(texts[0]) == 1 + 14
    assert "There is a large red circle in the scene." in texts[0]
    assert texts[1] == ["a red circle and a blue square"]


def test_content_groups_match_images_showing_the_same_categories():
    assert content_groups([[1], [2, 3], [3, 2], [1], [2]]).tolist() == [0, 1, 1, 0, 2]


def test_augmentation_keeps_the_whole_image_in_each_of_its_eight_orientations():
    # No crop: a caption names every object in its image, so each view must keep all of them.
    image = torch.arange(3 * 4 * 4, dtype=torch.uint8).view(3, 4, 4)
    orientations = [oriented.rot90(turns, dims=(-2, -1)) for oriented in (image, image.flip(-1)) for turns in range(4)]
    torch.manual_seed(0)
    seen = set()
    for _ in range(100):
        view = flip_and_turn(image)
        matches = [index for index, oriented in enumerate(orientations) if torch.equal(view, oriented)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(range(8))


def test_contrastive_loss_is_clip_loss_with_distinct_groups_and_shares_matches_otherwise():
    torch.manual_seed(0)
    image = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    expected = open_clip.ClipLoss()(image, text, scale)
    assert contrastive_loss(image, text, scale, torch.arange(4)).item() == pytest.approx(expected.item(), rel=1e-6)
    # Images 0 and 1 show the same thing: each one's target is split half-half between texts 0 and 1.
    logits = scale * image @ text.T
    terms = []
    for log_p in (logits.log_softmax(1), logits.T.log_softmax(1)):
        terms.append(-(log_p[0, :2].mean() + log_p[1, :2].mean() + log_p[2, 2] + log_p[3, 3]) / 4)
    grouped = contrastive_loss(image, text, scale, torch.tensor([5, 5, 6, 7]))
    assert grouped.item() == pytest.approx(((terms[0] + terms[1]) / 2).item(), rel=1e-6)


def test_loss_decreases(trained):
    _, losses = trained
    assert len(losses) == 8 * 2  # 12 pairs, batches of 6
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])


def test_training_is_deterministic(world, trained):
    model, _ = trained
    again, _ = fit(world)
    for (name, tensor), other in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(tensor, other), name


def test_checkpoint_loads_through_frozen_clip_bit_identically(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "clip.pt"
    save_checkpoint(model, path)
    model.requires_grad_(False)  # as FrozenCLIP: PyTorch takes its fused attention kernel only then
    loaded = FrozenCLIP(TINY, pretrained=str(path))
    for (name, tensor), other in zip(model.state_dict().items(), loaded.clip.state_dict().values()):
        assert torch.equal(tensor, other), name
    images = torch.randn(2, 3, 32, 32)
    tokens = open_clip.get_tokenizer(TINY)(["a photo of a red circle", "a blue square"])
    with torch.no_grad():
        assert torch.equal(loaded.clip.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.clip.encode_text(tokens), model.encode_text(tokens))


def test_zero_shot_accuracy_counts_top1_over_the_whole_vocabulary(monkeypatch):
    torch.manual_seed(0)
    clip = FrozenCLIP(TINY)
    names = ["red circle", "blue square", "green circle", "yellow star"]
    text = class_text_embeddings(clip, names).embeddings  # (4, D), unit rows
    # Image i "looks like" class answers[i]; labels agree for 3 of the 5 images.
    answers = torch.tensor([0, 3, 2, 1, 1])
    labels = torch.tensor([0, 3, 1, 1, 2])
    seen_shapes = []

    def encode_image(images):
        seen_shapes.append(tuple(images.shape))
        return 2.0 * text[answers[:len(images)]]  # unnormalised, as open_clip's encode_image

    monkeypatch.setattr(clip.clip, "encode_image", encode_image)
    images = torch.randint(0, 256, (5, 3, 48, 60), dtype=torch.uint8)
    assert zero_shot_accuracy(clip, images, labels, names) == pytest.approx(3 / 5)
    assert seen_shapes == [(5, 3, 32, 32)]  # whole images resized to the CLIP input size


def test_command_writes_checkpoint_report_and_config(world, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # a file store: no database to set up
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "clip" / "toy_clip.pt"
    params = tmp_path / "params.yaml"
    params.write_text(f"clip:\n  model: {TINY}\n")
    parser = argparse.ArgumentParser()
    pretrain_clip_command.add_arguments(parser)
    args = parser.parse_args(["--params", str(params), "--set", f"data.root={world}", f"clip_pretrain.out={out}",
                              "clip_pretrain.epochs=1", "clip_pretrain.batch_size=4"])
    assert pretrain_clip_command.main(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["steps"] == 3 and report["train_pairs"] == 12 and report["heldout_images"] == 3
    for top1 in (report["zero_shot_top1"], report["zero_shot_top1_whole_image"]):
        assert top1["novel"] in (0.0, 1.0) and top1["base"] in (0.0, 0.5, 1.0)  # 2 base, 1 novel held-out image
        assert top1["overall"] == pytest.approx((top1["base"] * 2 + top1["novel"]) / 3)
    assert "epochs: 1" in out.with_suffix(".config.yaml").read_text()
    FrozenCLIP(TINY, pretrained=str(out))  # loads like real weights
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy_clip.config.yaml", "toy_clip.json", "toy_clip.pt"]
