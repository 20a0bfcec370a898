import argparse
import json

import numpy as np
import open_clip
import pycocotools.mask as mask_api
import pytest
import torch
from PIL import Image, ImageDraw

from clipvis.commands import pretrain_clip as pretrain_clip_command
from clipvis.errors import InputError
from clipvis.model.clip_encoder import FrozenCLIP
from clipvis.model.text_classifier import class_text_embeddings
from clipvis.toy import clip_pretrain
from clipvis.toy.clip_pretrain import (CaptionPairs, content_groups, contrastive_loss, image_texts, load_caption_pairs,
                                       random_flips, region_masks, save_checkpoint, train_clip, warmup_cosine,
                                       zero_shot_accuracy)

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


def draw(category: int, position: int) -> tuple[Image.Image, np.ndarray]:
    """The image and the object's mask (H, W) bool."""
    _, name, _, colour = CATEGORIES[category]
    image, mask = Image.new("RGB", SIZE, (128, 128, 128)), Image.new("L", SIZE)
    for canvas, fill in ((image, colour), (mask, 255)):
        shape = ImageDraw.Draw(canvas)
        (shape.ellipse if "circle" in name else shape.rectangle)(object_box(position), fill=fill)
    return image, np.asarray(mask) > 0


def rle(mask: np.ndarray) -> dict:
    encoded = mask_api.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


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
        image, mask = draw(category, position)
        image.save(toy / "toy_captions" / "images" / file_name, quality=95)
        cid, name, _, _ = CATEGORIES[category]
        items.append({"id": item_id, "file_name": file_name, "caption": f"a photo of a {name}",
                      "category_ids": [cid], "segmentations": [rle(mask)], "split": split})
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
    return train_clip(TINY, pairs, NAMES, epochs=8, batch_size=6, lr=2e-3, weight_decay=0.1)


@pytest.fixture(scope="module")
def trained(world):
    return fit(world)


def test_load_caption_pairs_reads_split_images_and_captions(world):
    pairs = load_caption_pairs(world, "heldout")
    assert pairs.images.shape == (3, 3, SIZE[1], SIZE[0]) and pairs.images.dtype == torch.uint8
    assert pairs.captions == ["a photo of a red circle", "a photo of a blue square", "a photo of a green circle"]
    assert pairs.category_ids == [[1], [2], [3]]
    for masks, category in zip(pairs.masks, range(3)):
        assert masks.shape == (1, SIZE[1], SIZE[0]) and torch.equal(masks[0], torch.from_numpy(draw(category, 1)[1]))
    assert tuple(pairs.images[1, :, 15, 15].tolist()) == pytest.approx((30, 60, 220), abs=12)  # inside the square


def test_missing_captions_file_names_it_and_the_fix(tmp_path):
    with pytest.raises(InputError) as error:
        load_caption_pairs(tmp_path, "train")
    assert "captions.json" in str(error.value) and "clipvis data --benchmark toy" in str(error.value)


@pytest.mark.parametrize("masks, problem", [
    (None, "missing; this toy world predates object masks"),
    ([], "expected a list of 1 masks"),
    ([{"size": [4, 4], "counts": "0"}], "size [4, 4] is not the image's [32, 40]"),
    ([{"size": [32, 40]}], "bad mask"),
    ([rle(np.zeros((32, 40), dtype=bool))], "empty mask"),
])
def test_bad_masks_name_the_file_and_the_item(tmp_path, masks, problem):
    write_caption_world(tmp_path, train_per_category=1)
    path = tmp_path / "toy" / "toy_captions" / "captions.json"
    items = json.loads(path.read_text())["items"]
    if masks is None:
        del items[1]["segmentations"]
    else:
        items[1]["segmentations"] = masks
    path.write_text(json.dumps({"items": items}))
    with pytest.raises(InputError) as error:
        load_caption_pairs(tmp_path, "train")
    assert "captions.json" in str(error.value) and "items[1].segmentations" in str(error.value)
    assert problem in str(error.value)


def test_region_masks_binarise_ground_truth_as_inference_does_and_pad_with_empty_ones():
    first = torch.zeros(2, 64, 64, dtype=torch.bool)
    first[0, :32, :32] = True  # covers the top-left cell of the 2 x 2 map
    first[1, 30:34, 30:34] = True  # a speck at the corner where four cells meet: no cell centre
    second = torch.ones(1, 64, 64, dtype=torch.bool)
    regions = region_masks([first, second], (2, 2))
    assert regions.shape == (2, 2, 2, 2) and regions.dtype == torch.bool
    assert regions[0, 0].tolist() == [[True, False], [False, False]]
    assert not regions[0, 1].any() and regions[1, 0].all() and not regions[1, 1].any()


def test_random_flips_move_image_and_masks_together_and_reach_all_four_orientations():
    image = torch.arange(3 * 4 * 5, dtype=torch.uint8).view(3, 4, 5)
    masks = image[:2] % 3 == 0
    orientations = [(image, masks), (image.flip(-1), masks.flip(-1)), (image.flip(-2), masks.flip(-2)),
                    (image.flip(-1, -2), masks.flip(-1, -2))]
    torch.manual_seed(0)
    seen = set()
    for _ in range(60):
        flipped_image, flipped_masks = random_flips(image, masks)
        matches = [k for k, (i, m) in enumerate(orientations)
                   if torch.equal(flipped_image, i) and torch.equal(flipped_masks, m)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}


def test_warmup_then_cosine_schedule():
    # 100 steps: warm-up over the first 5 (5%), cosine from step 5 to 100.
    assert warmup_cosine(0, 100) == pytest.approx(0.2)
    assert warmup_cosine(4, 100) == pytest.approx(1.0)
    assert warmup_cosine(5, 100) == pytest.approx(1.0)
    assert warmup_cosine(5 + 95 // 2, 100) == pytest.approx(0.5 * (1 + np.cos(np.pi * 47 / 95)))
    assert warmup_cosine(100, 100) == pytest.approx(0.0)


def test_image_texts_add_the_class_prompts_to_single_category_captions():
    pairs = CaptionPairs(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), ["a red circle", "a red circle and a blue square"],
                         [[1], [1, 2]], [torch.ones(1, 4, 4, dtype=torch.bool), torch.ones(2, 4, 4, dtype=torch.bool)])
    texts = image_texts(pairs, {1: "red circle", 2: "blue square"})
    assert texts[0][0] == "a red circle" and len(texts[0]) == 1 + 14
    assert "There is a large red circle in the scene." in texts[0]
    assert texts[1] == ["a red circle and a blue square"]


def test_content_groups_match_images_showing_the_same_categories():
    assert content_groups([[1], [2, 3], [3, 2], [1], [2]]).tolist() == [0, 1, 1, 0, 2]


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


def test_dense_stride_16_trains_through_the_finer_map(world, trained):
    pairs = load_caption_pairs(world, "train")
    torch.manual_seed(0)
    _, losses = train_clip(TINY, pairs, NAMES, epochs=8, batch_size=6, lr=2e-3, weight_decay=0.1, dense_stride=16)
    assert losses[0] != trained[1][0]  # the same initial weights and batches pool another map
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4])


def test_region_weight_scales_the_region_loss_in_the_total(world):
    pairs = load_caption_pairs(world, "train")
    epochs = []
    torch.manual_seed(0)
    train_clip(TINY, pairs, NAMES, epochs=2, batch_size=6, lr=2e-3, weight_decay=0.1, region_weight=3.0,
               log_epoch=lambda metrics, epoch: epochs.append(metrics))
    for metrics in epochs:
        assert metrics["loss"] == pytest.approx(metrics["loss_caption"] + 3.0 * metrics["loss_region"], rel=1e-5)
    with pytest.raises(InputError, match="region_weight"):
        train_clip(TINY, pairs, NAMES, epochs=1, batch_size=6, lr=2e-3, weight_decay=0.1, region_weight=-1.0)


def test_head_epochs_train_only_what_the_segmenter_never_reads(world, trained):
    """clip_pretrain.head_epochs: the same first epochs, then the pooling head, the text tower and the
    temperature learn on while the trunk (weights and batch-norm statistics) stays bit for bit."""
    model, losses = trained
    pairs = load_caption_pairs(world, "train")
    epochs = []
    torch.manual_seed(0)
    tuned, tuned_losses = train_clip(TINY, pairs, NAMES, epochs=8, batch_size=6, lr=2e-3, weight_decay=0.1,
                                     head_epochs=2, head_region_weight=4.0,
                                     log_epoch=lambda metrics, epoch: epochs.append((epoch, metrics)))
    assert tuned_losses[:16] == losses and len(tuned_losses) == 16 + 4
    assert [epoch for epoch, _ in epochs] == list(range(1, 11))
    for _, metrics in epochs[8:]:
        assert metrics["loss"] == pytest.approx(metrics["loss_caption"] + 4.0 * metrics["loss_region"], rel=1e-5)
    before, after = model.state_dict(), tuned.state_dict()
    trunk = [name for name in before if name.startswith("visual.") and not name.startswith("visual.attnpool.")]
    assert any("running_mean" in name for name in trunk)
    assert all(torch.equal(before[name], after[name]) for name in trunk)
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert any(name.startswith("visual.attnpool.") for name in changed)
    assert any(name.startswith("transformer.") for name in changed)  # the text tower
    with pytest.raises(InputError, match="head_region_weight"):
        train_clip(TINY, pairs, NAMES, epochs=1, batch_size=6, lr=2e-3, weight_decay=0.1, head_epochs=1,
                   head_region_weight=-1.0)
    with pytest.raises(InputError, match="head_epochs"):
        train_clip(TINY, pairs, NAMES, epochs=1, batch_size=6, lr=2e-3, weight_decay=0.1, head_epochs=-1)


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


def test_zero_shot_accuracy_pools_each_mask_and_counts_top1_over_the_whole_vocabulary(monkeypatch):
    torch.manual_seed(0)
    clip = FrozenCLIP(TINY)
    names = ["red circle", "blue square", "green circle", "yellow star"]
    text = class_text_embeddings(clip, names).embeddings  # (4, D), unit rows
    # Region i "looks like" class answers[i]; labels agree for 4 of the 5, but region 4 vanished on the grid.
    answers = torch.tensor([0, 3, 2, 1, 2])
    labels = torch.tensor([0, 3, 1, 1, 2])
    seen = []

    def pool_regions(visual, family, dense, masks):
        seen.append((tuple(dense.shape), masks.clone()))
        chosen = answers[:len(masks)]
        return 2.0 * text[chosen][:, None], torch.tensor([[k != 4] for k in range(len(masks))])

    monkeypatch.setattr(clip_pretrain, "pool_regions", pool_regions)
    images = torch.randint(0, 256, (5, 3, 48, 60), dtype=torch.uint8)
    masks = [torch.zeros(1, 48, 60, dtype=torch.bool) for _ in range(5)]
    masks[0][0, :32, :32] = True
    assert zero_shot_accuracy(clip, images, masks, labels, names) == pytest.approx(3 / 5)
    ((dense_shape, regions),) = seen
    assert dense_shape[0] == 5 and dense_shape[-2:] == (2, 2)  # padded to 64 x 64, stride 32
    assert regions.shape == (5, 1, 2, 2) and regions[0, 0].tolist() == [[True, False], [False, False]]
    assert not regions[1:].any()


def test_command_writes_checkpoint_report_and_config(world, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # a file store: no database to set up
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "clip" / "toy_clip.pt"
    params = tmp_path / "params.yaml"
    params.write_text(f"clip:\n  model: {TINY}\n")
    parser = argparse.ArgumentParser()
    pretrain_clip_command.add_arguments(parser)
    args = parser.parse_args(["--params", str(params), "--set", f"data.root={world}", f"clip_pretrain.out={out}",
                              "clip_pretrain.epochs=1", "clip_pretrain.head_epochs=1", "clip_pretrain.batch_size=4"])
    assert pretrain_clip_command.main(args) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["steps"] == 6 and report["train_pairs"] == 12 and report["heldout_images"] == 3
    for top1 in (report["zero_shot_top1"], report["zero_shot_top1_whole_image"]):
        assert top1["novel"] in (0.0, 1.0) and top1["base"] in (0.0, 0.5, 1.0)  # 2 base, 1 novel held-out image
        assert top1["overall"] == pytest.approx((top1["base"] * 2 + top1["novel"]) / 3)
    assert "epochs: 1" in out.with_suffix(".config.yaml").read_text()
    FrozenCLIP(TINY, pretrained=str(out))  # loads like real weights
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy_clip.config.yaml", "toy_clip.json", "toy_clip.pt"]
