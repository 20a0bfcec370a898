import logging

import pytest
import torch

from clipvis.errors import InputError
from clipvis.model.checkpoint import check_architecture, load_checkpoint
from clipvis.model.clipvis_model import CLIPVIS, pad_target_masks
from clipvis.training.loop import build_criterion, build_optimizer, train, train_step


def trainable(path):
    return load_checkpoint(path)["model"]


def test_resumed_run_equals_uninterrupted_run(tiny_config, tmp_path):
    tiny_config.train.checkpoint_every = 2
    tiny_config.train.lr_steps = [3]
    tiny_config.train.max_iter = 4
    straight = train(tiny_config, tmp_path / "straight", tracking=False)

    tiny_config.train.max_iter = 2  # a run stopped after its checkpoint at iteration 2 ...
    train(tiny_config, tmp_path / "resumed", tracking=False)
    tiny_config.train.max_iter = 4  # ... and continued from it
    resumed = train(tiny_config, tmp_path / "resumed", tracking=False)

    a, b = trainable(straight), trainable(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint_last.pt")["iteration"] == 4
    assert (tmp_path / "resumed" / "config.yaml").exists()


def test_checkpoint_holds_only_tensors_and_config(tiny_config, tmp_path):
    tiny_config.train.max_iter = 1
    final = train(tiny_config, tmp_path / "run", tracking=False)
    state = torch.load(final, weights_only=True)
    assert set(state) == {"model", "iteration", "config"}
    assert not any(k.startswith("clip.") for k in state["model"])


def test_decoder_depth_mismatch_is_a_clear_error(tiny_config, tmp_path):
    tiny_config.train.max_iter = 1
    final = train(tiny_config, tmp_path / "run", tracking=False)
    tiny_config.model.dec_layers = 7
    tiny_config.model.hidden_dim = 64
    with pytest.raises(InputError) as error:
        check_architecture(load_checkpoint(final), tiny_config, final)
    message = str(error.value)
    assert "model.dec_layers 3 (config: 7)" in message and "model.hidden_dim 32 (config: 64)" in message
    assert "--set model.hidden_dim=32 model.dec_layers=3" in message


def test_frozen_clip_is_unchanged_by_training(tiny_config):
    torch.manual_seed(0)
    model = CLIPVIS.from_config(tiny_config.model, tiny_config.clip)
    before = {k: v.clone() for k, v in model.clip.state_dict().items()}
    model.train()
    run_steps(model, tiny_config, steps=2)
    after = model.clip.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running statistics
    assert not any(p.requires_grad for p in model.clip.parameters())


def test_a_dead_relu_iou_head_is_reported(tiny_config, tmp_path, monkeypatch, caplog):
    """A ReLU IoU head whose output is negative for every input gets no gradient again and every detection
    scores 0 (Table IV's ReLU model on one toy world): training says so; a working head raises no warning."""
    tiny_config.train.max_iter = 1
    with caplog.at_level(logging.WARNING, logger="clipvis.training.loop"):
        train(tiny_config, tmp_path / "sigmoid", tracking=False)
    assert "mask-IoU head" not in caplog.text

    build = CLIPVIS.from_config

    def with_dead_head(model_cfg, clip_cfg):
        model = build(model_cfg, clip_cfg)
        last = model.decoder.iou_head.layers[-1]
        torch.nn.init.zeros_(last.weight)
        torch.nn.init.constant_(last.bias, -1.0)
        return model

    monkeypatch.setattr(CLIPVIS, "from_config", with_dead_head)
    tiny_config.model.iou_activation = "relu"
    with caplog.at_level(logging.WARNING, logger="clipvis.training.loop"):
        train(tiny_config, tmp_path / "relu", tracking=False)
    assert "the mask-IoU head predicted 0 for every query of the last batch" in caplog.text
    assert str(tmp_path / "relu") in caplog.text


def run_steps(model, cfg, steps, images=None, masks=None):
    if images is None:
        images, masks = two_images()
    criterion, optimizer = build_criterion(cfg), build_optimizer(model, cfg)
    batch = [{"image": image, "masks": mask} for image, mask in zip(images, masks)]
    for iteration in range(steps):
        losses = train_step(model, model, criterion, optimizer, batch, cfg, iteration, torch.device("cpu"))
    return losses


def two_images():
    """Two 64x64 images: a bright square and a disc on dark noise."""
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(2, 3, 64, 64, generator=generator) * 60).to(torch.uint8)
    masks = torch.zeros(2, 1, 64, 64, dtype=torch.bool)
    masks[0, 0, 12:40, 20:50] = True
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    masks[1, 0] = (yy - 36) ** 2 + (xx - 28) ** 2 < 15**2
    images[0][:, masks[0, 0]] = torch.tensor([230, 40, 40], dtype=torch.uint8)[:, None]
    images[1][:, masks[1, 0]] = torch.tensor([40, 200, 240], dtype=torch.uint8)[:, None]
    return list(images), list(masks)


def test_overfits_two_images(tiny_config):
    torch.manual_seed(0)
    tiny_config.train.lr = 1e-3
    tiny_config.train.grad_clip = 1.0
    model = CLIPVIS.from_config(tiny_config.model, tiny_config.clip)
    model.train()
    images, masks = two_images()
    run_steps(model, tiny_config, steps=200, images=images, masks=masks)

    model.eval()
    with torch.no_grad():
        outputs = model(model.preprocess(images))
    for i in range(2):
        best = outputs["pred_object_logits"][i].softmax(-1)[:, 0].argmax()
        predicted = torch.nn.functional.interpolate(outputs["pred_masks"][i : i + 1, best : best + 1], size=(64, 64),
                                                    mode="bilinear", align_corners=False)[0, 0] > 0
        target = pad_target_masks(masks[i].float(), 64, 64)[0] > 0
        iou = (predicted & target).sum() / (predicted | target).sum()
        assert iou > 0.8, f"image {i}: IoU {iou:.2f}"


def test_a_checkpoint_of_another_config_is_not_resumed(tiny_config, tmp_path):
    tiny_config.train.max_iter = 2
    train(tiny_config, tmp_path / "run", tracking=False)
    (tmp_path / "run" / "model_final.pt").unlink()  # an unfinished run: only checkpoint_last.pt is there
    tiny_config.train.lr = 1e-5  # another run: it must start from iteration 0, not continue the old one
    tiny_config.train.max_iter = 3
    train(tiny_config, tmp_path / "run", tracking=False)
    fresh = train(tiny_config, tmp_path / "fresh", tracking=False)
    a, b = trainable(tmp_path / "run" / "model_final.pt"), trainable(fresh)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_finished_run_is_replaced_only_with_overwrite(tiny_config, tmp_path):
    tiny_config.train.max_iter = 2
    first = trainable(train(tiny_config, tmp_path / "run", tracking=False))
    tiny_config.matching.topk = 5  # a test-time setting: the finished training still counts
    tiny_config.train.max_iter = 3  # a longer run continues it
    train(tiny_config, tmp_path / "run", tracking=False)
    assert load_checkpoint(tmp_path / "run" / "model_final.pt")["iteration"] == 3

    tiny_config.train.lr = 1e-5
    with pytest.raises(InputError, match=r"finished training with other settings \(train.lr\).*--overwrite"):
        train(tiny_config, tmp_path / "run", tracking=False)
    assert load_checkpoint(tmp_path / "run" / "model_final.pt")["config"]["train"]["lr"] != 1e-5
    train(tiny_config, tmp_path / "run", tracking=False, overwrite=True)
    replaced = trainable(tmp_path / "run" / "model_final.pt")
    assert load_checkpoint(tmp_path / "run" / "model_final.pt")["config"]["train"]["lr"] == 1e-5
    assert not all(torch.equal(first[k], replaced[k]) for k in first)


def test_a_run_saved_before_a_config_key_existed_is_still_the_same_run(tiny_config, tmp_path):
    tiny_config.train.max_iter = 2
    final = train(tiny_config, tmp_path / "run", tracking=False)
    for name in ("model_final.pt", "checkpoint_last.pt"):  # as written before train.trainable existed
        state = torch.load(tmp_path / "run" / name, weights_only=True)
        del state["config"]["train"]["trainable"]
        torch.save(state, tmp_path / "run" / name)
    before = trainable(final)
    again = trainable(train(tiny_config, tmp_path / "run", tracking=False))  # neither refused nor retrained
    assert all(torch.equal(before[key], again[key]) for key in before)


def test_a_head_only_training_changes_only_a_fresh_iou_head(tiny_config, tmp_path):
    """Table IV's toy protocol: a variant head (here pooled input, ReLU: another architecture than the
    init's head) trains alone on the frozen model of --init; every other tensor stays the init's."""
    tiny_config.train.max_iter = 2
    init = train(tiny_config, tmp_path / "method", tracking=False)
    tiny_config.model.iou_head_input = "pooled"
    tiny_config.model.iou_activation = "relu"
    tiny_config.train.trainable = "iou_head"
    variant = train(tiny_config, tmp_path / "variant", init=init, tracking=False)

    before, after = trainable(init), trainable(variant)
    head = [key for key in after if key.startswith("decoder.iou_head.")]
    assert head and before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in after if key not in head)
    assert not any(torch.equal(before[key], after[key]) for key in head)


def test_a_head_only_training_needs_init(tiny_config, tmp_path):
    tiny_config.train.trainable = "iou_head"
    with pytest.raises(InputError, match="train.trainable iou_head needs --init"):
        train(tiny_config, tmp_path / "variant", tracking=False)
    assert not (tmp_path / "variant" / "model_final.pt").exists()
