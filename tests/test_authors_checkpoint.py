"""The authors' released checkpoints: key mapping, import/export round trips, errors, and imported or
trained checkpoints used without --params."""

import argparse
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from clipvis import cli
from clipvis.commands import export_checkpoint as export_command
from clipvis.commands import import_checkpoint as import_command
from clipvis.config import load_config
from clipvis.errors import InputError
from clipvis.model import authors_layout
from clipvis.model.authors_layout import CLIP_PREFIX, LOSS_BUFFER, authors_key, export_checkpoint, import_checkpoint
from clipvis.model.checkpoint import (CHECKPOINT_CLIP, build_model, config_for_checkpoint, load_checkpoint,
                                      save_checkpoint)
from clipvis.model.clip_encoder import uses_quick_gelu
from conftest import TINY_MODEL

KEY_LISTS = Path(__file__).parent / "data"
R50_PARAMS = "params/paper/r50_lvis.yaml"


def authors_keys(name: str) -> dict[str, list[int]]:
    """Every key and shape of the authors' video checkpoints (R50, ConvNeXt-B), as listed from their files."""
    return json.loads((KEY_LISTS / f"authors_{name}_checkpoint_keys.json").read_text())


def parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def r50(tmp_path_factory):
    """A paper-size R50 segmenter with random weights, as a clipvis checkpoint and in the authors' layout."""
    base = tmp_path_factory.mktemp("r50")
    cfg = load_config(R50_PARAMS, ["clip.pretrained=null"])
    torch.manual_seed(0)
    model = build_model(cfg)
    ours = base / "ours.pt"
    save_checkpoint(ours, model, cfg, iteration=7)
    exported = base / "clipvis_lvis_r50_7.pth"
    export_checkpoint(ours, exported)
    return {"base": base, "ours": ours, "exported": exported, "clip": model.clip.clip.state_dict()}


@pytest.mark.parametrize("name", ["r50", "convnext_b"])
def test_every_key_of_the_authors_checkpoints_has_a_home(name):
    keys = authors_keys(name)
    assert len(keys) == {"r50": 738, "convnext_b": 742}[name]
    for key in keys:
        if key.startswith(CLIP_PREFIX) or key == LOSS_BUFFER:
            continue
        ours = authors_layout.ours_key(key)
        assert ours is not None and authors_key(ours) == key, key
    renamed = {authors_layout.ours_key(key) for key in keys}
    assert "pixel_decoder.lateral_conv.1.weight" in renamed and "pixel_decoder.output_conv.0.weight" in renamed
    assert "pixel_decoder.encoder.5.self_attn.value_proj.weight" in renamed and "pixel_decoder.level_embed" in renamed


def test_paper_r50_exports_exactly_the_authors_keys_and_imports_back(r50):
    exported = torch.load(r50["exported"], weights_only=True)
    keys = authors_keys("r50")
    assert {key: list(tensor.shape) for key, tensor in exported["model"].items()} == keys
    assert exported["iteration"] == 7 and torch.equal(exported["model"][LOSS_BUFFER], torch.tensor([1.0, 0.4]))

    imported = r50["base"] / "imported.pt"
    cfg = import_checkpoint(r50["exported"], load_config(R50_PARAMS), imported, params=R50_PARAMS)
    state = load_checkpoint(imported)
    assert_same_tensors(state["model"], load_checkpoint(r50["ours"])["model"])
    assert_same_tensors(state["clip"], r50["clip"])
    assert state["iteration"] == 7
    # The CLIP of the RN50/openai params was trained with QuickGELU; the checkpoint says so and keeps it.
    assert cfg.clip.pretrained == CHECKPOINT_CLIP and cfg.clip.quick_gelu is True
    assert state["config"]["clip"] == {"model": "RN50", "pretrained": CHECKPOINT_CLIP, "quick_gelu": True,
                                       "text_cache": "runs/text_embeddings", "dense_stride": 32}

    again = r50["base"] / "again.pth"
    export_checkpoint(imported, again)
    assert_same_tensors(torch.load(again, weights_only=True)["model"], exported["model"])


def test_paper_convnext_b_exports_exactly_the_authors_keys(tmp_path):
    cfg = load_config("params/paper/convnext_lvis.yaml", ["clip.pretrained=null"])
    save_checkpoint(tmp_path / "ours.pt", build_model(cfg), cfg)
    export_checkpoint(tmp_path / "ours.pt", tmp_path / "authors.pth")
    exported = torch.load(tmp_path / "authors.pth", weights_only=True, mmap=True)["model"]
    assert {key: list(tensor.shape) for key, tensor in exported.items()} == authors_keys("convnext_b")


def tiny_checkpoint(tiny_config, path):
    torch.manual_seed(1)
    model = build_model(tiny_config)
    save_checkpoint(path, model, tiny_config)
    return model


def test_tiny_round_trip_through_the_commands(tiny_config, tmp_path):
    model = tiny_checkpoint(tiny_config, tmp_path / "ours.pt")
    assert cli.main(["export-checkpoint", str(tmp_path / "ours.pt"), "--out", str(tmp_path / "authors.pth")]) == 0
    assert cli.main(["import-checkpoint", str(tmp_path / "authors.pth"), "--params", "params/toy/default.yaml",
                     "--set", *TINY_MODEL, "--out", str(tmp_path / "back.pt")]) == 0
    back = load_checkpoint(tmp_path / "back.pt")
    assert_same_tensors(back["model"], model.trainable_state_dict())
    assert_same_tensors(back["clip"], model.clip.clip.state_dict())

    # Outputs are never written over inputs or existing files unless asked.
    with pytest.raises(InputError, match="is an input"):
        import_command.main(parse(import_command, [tmp_path / "authors.pth", "--params", "params/toy/default.yaml",
                                                   "--set", *TINY_MODEL, "--out", tmp_path / "authors.pth"]))
    with pytest.raises(InputError, match="--overwrite"):
        export_command.main(parse(export_command, [tmp_path / "back.pt", "--out", tmp_path / "authors.pth"]))
    assert export_command.main(parse(export_command, [tmp_path / "back.pt", "--out", tmp_path / "authors.pth",
                                                      "--overwrite"])) == 0


def test_a_bare_state_dict_is_read_too(tiny_config, tmp_path):
    model = tiny_checkpoint(tiny_config, tmp_path / "ours.pt")
    export_checkpoint(tmp_path / "ours.pt", tmp_path / "authors.pth")
    torch.save(torch.load(tmp_path / "authors.pth", weights_only=True)["model"], tmp_path / "bare.pth")
    import_checkpoint(tmp_path / "bare.pth", tiny_config, tmp_path / "back.pt")
    assert_same_tensors(load_checkpoint(tmp_path / "back.pt")["model"], model.trainable_state_dict())


def write_authors_file(path, model_state, **extra):
    torch.save({"model": model_state, **extra}, path)
    return path


@pytest.fixture
def authors_file(tiny_config, tmp_path):
    tiny_checkpoint(tiny_config, tmp_path / "ours.pt")
    export_checkpoint(tmp_path / "ours.pt", tmp_path / "authors.pth")
    return torch.load(tmp_path / "authors.pth", weights_only=True)["model"]


def test_broken_files_are_one_line_errors(tiny_config, authors_file, tmp_path):
    def importing(path):
        return pytest.raises(InputError, match=str(path).replace(".", r"\."))

    whole = (tmp_path / "authors.pth").read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole[: len(whole) // 2])
    with importing(truncated) as error:
        import_checkpoint(truncated, tiny_config, tmp_path / "out.pt")
    assert "truncated" in str(error.value)

    missing = dict(authors_file)
    del missing["sem_seg_head.predictor.query_feat.weight"]
    with pytest.raises(InputError, match="sem_seg_head.predictor.query_feat.weight: missing"):
        import_checkpoint(write_authors_file(tmp_path / "missing.pth", missing), tiny_config, tmp_path / "out.pt")

    unknown = authors_file | {"sem_seg_head.extra.weight": torch.zeros(2)}
    with pytest.raises(InputError, match="sem_seg_head.extra.weight: unknown key"):
        import_checkpoint(write_authors_file(tmp_path / "unknown.pth", unknown), tiny_config, tmp_path / "out.pt")

    wrong = authors_file | {"sem_seg_head.predictor.query_feat.weight": torch.zeros(3, 32)}
    with pytest.raises(InputError, match=r"query_feat.weight: shape \[3, 32\], the configured model has \[8, 32\]"):
        import_checkpoint(write_authors_file(tmp_path / "shape.pth", wrong), tiny_config, tmp_path / "out.pt")

    no_clip = {key: value for key, value in authors_file.items() if not key.startswith(CLIP_PREFIX)}
    with pytest.raises(InputError, match="no CLIP weights"):
        import_checkpoint(write_authors_file(tmp_path / "noclip.pth", no_clip), tiny_config, tmp_path / "out.pt")

    pickled = tmp_path / "pickled.pth"
    torch.save({"model": authors_file, "trainer": argparse.Namespace(x=1)}, pickled)
    with pytest.raises(InputError, match="objects other than tensors"):
        import_checkpoint(pickled, tiny_config, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_another_decoder_depth_says_which_setting_fits(tiny_config, authors_file, tmp_path):
    tiny_config.model.dec_layers = 5
    with pytest.raises(InputError, match=r"2 decoder layers \(their DEC_LAYERS 3\).*--set model.dec_layers=3"):
        import_checkpoint(tmp_path / "authors.pth", tiny_config, tmp_path / "out.pt")


def test_an_r50_file_with_convnext_params_names_the_params_that_fit(r50, tmp_path):
    with pytest.raises(InputError, match=r"the file's CLIP is RN50, the config's is convnext_base_w_320; use "
                                         r"--params params/paper/r50_lvis.yaml \(or --set clip.model=RN50\)"):
        import_checkpoint(r50["exported"], load_config("params/paper/convnext_lvis.yaml"), tmp_path / "out.pt",
                          params="params/paper/convnext_lvis.yaml")
    with pytest.raises(InputError, match=r"6 decoder layers .*DEC_LAYERS 7.*model.dec_layers=10; use --params "
                                         r"params/paper/r50_lvis.yaml"):
        import_checkpoint(r50["exported"], load_config("params/paper/r50_coco.yaml"), tmp_path / "out.pt",
                          params="params/paper/r50_coco.yaml")


def test_openai_weights_use_quick_gelu_unless_told_otherwise():
    assert uses_quick_gelu("RN50", "openai", None) is True
    assert uses_quick_gelu("convnext_base_w_320", "laion_aesthetic_s13b_b82k", None) is False
    assert uses_quick_gelu("RN50", "openai", False) is False
    assert uses_quick_gelu("clipvis_toy_rn", None, None) is False


def test_imported_clip_is_used_unless_set_otherwise(tiny_config, authors_file, tmp_path):
    import_checkpoint(tmp_path / "authors.pth", tiny_config, tmp_path / "imported.pt")
    cfg, state = config_for_checkpoint(tmp_path / "imported.pt", None, [])
    assert cfg.clip.pretrained == CHECKPOINT_CLIP and cfg.model == tiny_config.model
    model = build_model(cfg, state)
    assert_same_tensors(model.clip.clip.state_dict(), state["clip"])

    other = tmp_path / "other_clip.pt"
    torch.save({key: value + 1 for key, value in state["clip"].items()}, other)
    cfg, state = config_for_checkpoint(tmp_path / "imported.pt", "params/toy/default.yaml",
                                       TINY_MODEL + [f"clip.pretrained={other}"])
    assert cfg.clip.pretrained == str(other)
    assert torch.equal(build_model(cfg, state).clip.clip.logit_scale, state["clip"]["logit_scale"] + 1)


def test_trained_checkpoint_runs_without_params(tiny_config, tmp_path):
    """infer, segment and eval-images read the config a checkpoint carries (today's toy checkpoints
    failed without --params on dec_layers)."""
    tiny_config.clip.text_cache = str(tmp_path / "text")
    tiny_checkpoint(tiny_config, tmp_path / "model_final.pt")
    root = tiny_config.data.root
    frames = Path(root) / "toy" / "toy_lvvis" / "JPEGImages"
    video = sorted(frames.iterdir())[0]
    with_params = ["--params", "params/toy/default.yaml", "--set", *TINY_MODEL, f"data.root={root}",
                   f"clip.text_cache={tmp_path / 'text'}"]
    for name, extra in (("without", []), ("with", with_params)):
        assert cli.main(["segment", str(video), "--vocab", "red star,blue ring", "--checkpoint",
                         str(tmp_path / "model_final.pt"), "--out", str(tmp_path / f"segment_{name}"), *extra]) == 0
    assert (tmp_path / "segment_without" / "results.json").read_text() == \
        (tmp_path / "segment_with" / "results.json").read_text()
    assert load_config(tmp_path / "segment_without" / "config.yaml").model == tiny_config.model

    assert cli.main(["infer", "--benchmark", "toy_lvvis", "--checkpoint", str(tmp_path / "model_final.pt"),
                     "--out", str(tmp_path / "infer")]) == 0
    assert cli.main(["eval-images", "--checkpoint", str(tmp_path / "model_final.pt"), "--out",
                     str(tmp_path / "images")]) == 0
    assert (tmp_path / "infer" / "results.json").is_file() and (tmp_path / "images" / "metrics.json").is_file()


def test_an_image_folder_that_is_not_a_checkpoint(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    with pytest.raises(InputError, match="not a loadable clipvis checkpoint"):
        load_checkpoint(tmp_path / "x.png")
    with pytest.raises(InputError, match="is a folder"):
        load_checkpoint(tmp_path)
