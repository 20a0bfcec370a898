"""Bad input and faults through the `clipvis` command: one line on stderr naming the file and the field,
exit 2, nothing partial written; inputs and finished outputs never overwritten; repeated --set combined."""

import argparse
import builtins
import errno
import json
import logging
import os
from pathlib import Path

import pytest

from clipvis import cli
from clipvis.config import load_config
from clipvis.data.vocabularies import user_vocabulary
from clipvis.files import atomic_path, read_yaml, remove_stale_temporaries, write_json
from clipvis.model.checkpoint import build_model, save_checkpoint


def fails(capsys, argv, *expected):
    """Run the CLI; it must exit 2 with one line on stderr that contains every expected piece."""
    assert cli.main([str(a) for a in argv]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    for piece in expected:
        assert str(piece) in error, (piece, error)
    return error


@pytest.fixture
def scored(tmp_path):
    """A ground truth with one video and a results file for it."""
    gt = {"videos": [{"id": 1, "height": 2, "width": 2, "length": 1}],
          "categories": [{"id": 1, "name": "cat"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
                           "segmentations": [{"size": [2, 2], "counts": "04"}], "areas": [4]}]}
    results = [{"video_id": 1, "category_id": 1, "score": 0.5, "segmentations": [{"size": [2, 2], "counts": "04"}]}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    return tmp_path


@pytest.fixture
def checkpoint(tiny_config, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, build_model(tiny_config), tiny_config)
    return path


@pytest.fixture
def frames(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(2):
        Image.new("RGB", (64, 48), (30 * t, 90, 200)).save(folder / f"{t}.png")
    return folder


REAL_OPEN = builtins.open


def deny_reading(monkeypatch, denied: Path):
    """Opening `denied` raises PermissionError, as for a file of another user (the tests may run as root)."""

    def guarded_open(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and Path(file) == denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return REAL_OPEN(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr("io.open", guarded_open)


# ------------------------------------------------------------------ silent loss or mixing


def test_score_refuses_to_write_over_its_results(scored, capsys):
    before = (scored / "results.json").read_text()
    fails(capsys, ["score", "--gt", scored / "gt.json", "--results", scored / "results.json", "--out",
                   scored / "results.json"], "results.json", "is an input of this command")
    assert (scored / "results.json").read_text() == before


def test_an_existing_folder_as_the_score_output_leaves_nothing_behind(scored, capsys):
    (scored / "somedir").mkdir()
    fails(capsys, ["score", "--gt", scored / "gt.json", "--results", scored / "results.json", "--out",
                   scored / "somedir"], "somedir", "is a folder")
    assert not (scored / "somedir.per_category.csv").exists() and not any((scored / "somedir").iterdir())


def test_repeated_set_options_are_combined_in_every_command():
    def parsers(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield sub
                    yield from parsers(sub)

    overrides = [action for sub in parsers(cli.build_parser()) for action in sub._actions if action.dest == "overrides"]
    assert len(overrides) == 12  # data, train, finetune, pretrain-clip, infer, segment, eval-images, import,
    # matching-test, bench complexity, bench toy and bench iou-head
    assert all(isinstance(action, argparse._ExtendAction) and action.nargs == "+" for action in overrides)
    args = cli.build_parser().parse_args(["infer", "--benchmark", "b", "--checkpoint", "c", "--out", "o",
                                          "--set", "a.b=1", "c.d=2", "--set", "e.f=3"])
    assert args.overrides == ["a.b=1", "c.d=2", "e.f=3"]


# ------------------------------------------------------------------ unreadable inputs


def test_unreadable_inputs_are_one_line_errors(scored, checkpoint, frames, monkeypatch, capsys, tmp_path):
    deny_reading(monkeypatch, scored / "gt.json")
    fails(capsys, ["score", "--gt", scored / "gt.json", "--results", scored / "results.json", "--out",
                   tmp_path / "m.json"], scored / "gt.json", "permission denied")
    deny_reading(monkeypatch, scored / "results.json")
    fails(capsys, ["score", "--gt", scored / "gt.json", "--results", scored / "results.json", "--out",
                   tmp_path / "m.json"], scored / "results.json", "permission denied")
    deny_reading(monkeypatch, checkpoint)
    fails(capsys, ["segment", frames, "--vocab", "cat", "--checkpoint", checkpoint, "--out", tmp_path / "s"],
          checkpoint, "permission denied")
    params = tmp_path / "params.yaml"
    params.write_text("name: x\n")
    deny_reading(monkeypatch, params)
    fails(capsys, ["train", "--params", params, "--out", tmp_path / "t"], params, "permission denied")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "s").exists() and not (tmp_path / "t").exists()


def test_malformed_inputs_are_one_line_errors(scored, frames, capsys, tmp_path):
    (tmp_path / "binary.json").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    fails(capsys, ["score", "--gt", scored / "gt.json", "--results", tmp_path / "binary.json", "--out",
                   tmp_path / "m.json"], "binary.json", "not UTF-8 text")
    (tmp_path / "deep.json").write_text("[" * 200_000)
    fails(capsys, ["score", "--gt", scored / "gt.json", "--results", tmp_path / "deep.json", "--out",
                   tmp_path / "m.json"], "deep.json", "nested too deeply")
    (tmp_path / "vocab.txt").write_bytes(b"cat\n\xff\xfe\x00dog\n")
    fails(capsys, ["segment", frames, "--vocab-file", tmp_path / "vocab.txt", "--out", tmp_path / "s"],
          "vocab.txt", "not UTF-8")
    infer_dir = tmp_path / "infer"
    infer_dir.mkdir()
    (infer_dir / "variants.json").write_text('["default"]')
    fails(capsys, ["score", "--gt", scored / "gt.json", "--infer-dir", infer_dir, "--out", tmp_path / "o"],
          "variants.json", "variants")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_bad_params_and_overrides_are_one_line_errors(frames, capsys, tmp_path):
    fails(capsys, ["segment", frames, "--vocab", "cat", "--params", tmp_path, "--out", tmp_path / "s"],
          tmp_path, "is a folder")
    base = tmp_path / "base42.yaml"
    base.write_text("_base_: 42\n")
    fails(capsys, ["segment", frames, "--vocab", "cat", "--params", base, "--out", tmp_path / "s"],
          "base42.yaml: _base_: expected a file name or a list of file names, got 42")
    fails(capsys, ["segment", frames, "--vocab", "cat", "--set", "a=[1,", "--out", tmp_path / "s"],
          "--set: a=[1,: malformed value")
    fails(capsys, ["segment", frames, "--vocab", "cat", "--params", "params/toy/default.yaml", "--set", "model=3",
                   "--out", tmp_path / "s"], "--set: model: expected a mapping")
    twice = tmp_path / "twice.yaml"
    twice.write_text("model:\n  heads: 4\n  heads: 8\n")
    fails(capsys, ["segment", frames, "--vocab", "cat", "--params", twice, "--out", tmp_path / "s"],
          "twice.yaml: line 3 column 3", "'heads' is given twice")
    assert not (tmp_path / "s").exists()


def test_an_empty_params_file_warns(tmp_path, caplog):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with caplog.at_level(logging.WARNING, logger="clipvis.config"):
        assert load_config(tmp_path / "empty.yaml").name == "toy"
    assert "empty.yaml is empty" in caplog.text


@pytest.mark.parametrize("overrides, key", [(["model.hidden_dim=48"], "model.hidden_dim: must be a positive multiple "
                                                                       "of 32"),
                                            (["model.hidden_dim=32", "model.heads=5"], "model.heads: must divide")])
def test_impossible_model_shapes_are_config_errors(frames, capsys, tmp_path, overrides, key):
    fails(capsys, ["segment", frames, "--vocab", "cat", "--set", "clip.pretrained=null", *overrides, "--out",
                   tmp_path / "s"], key)


def test_a_checkpoint_of_another_architecture_names_the_keys_and_the_advice_works(checkpoint, frames, capsys,
                                                                                   tmp_path):
    error = fails(capsys, ["segment", frames, "--vocab", "cat", "--checkpoint", checkpoint, "--params",
                           "params/toy/default.yaml", "--set", "clip.pretrained=null", "--out", tmp_path / "s"],
                  "model.hidden_dim 32 (config: 64)", "model.dec_layers 3 (config: 4)")
    advice = error.split("or --set ")[1].split()
    assert cli.main(["segment", str(frames), "--vocab", "cat", "--checkpoint", str(checkpoint), "--params",
                     "params/toy/default.yaml", "--set", "clip.pretrained=null", "infer.min_size=48",
                     f"clip.text_cache={tmp_path / 'text'}", *advice, "--out", str(tmp_path / "s")]) == 0


def test_a_missing_cuda_device_is_a_config_error(frames, capsys, tmp_path):
    fails(capsys, ["segment", frames, "--vocab", "cat", "--set", "clip.pretrained=null", "infer.device=cuda:99",
                   "--out", tmp_path / "s"], "infer.device", "cuda:99")


def test_an_empty_toy_set_is_refused_before_anything_is_written(capsys, tmp_path):
    fails(capsys, ["data", "--benchmark", "toy", "--root", tmp_path / "data", "--set", "toy.val_videos=0"],
          "toy.val_videos: must be at least 1")
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------ outputs that cannot be written


def test_outputs_that_cannot_be_written_are_one_line_errors(scored, frames, capsys, tmp_path):
    (tmp_path / "a_file").write_text("x")
    fails(capsys, ["segment", frames, "--vocab", "cat", "--out", tmp_path / "a_file"], "a_file is a file, not a folder")
    fails(capsys, ["segment", frames, "--vocab", "cat", "--out", tmp_path / "a_file" / "below"], "a_file is a file")
    fails(capsys, ["score", "--gt", scored / "gt.json", "--results", scored / "results.json", "--out",
                   tmp_path / "a_file" / "m.json"], "a_file is a file, not a folder")


def test_disk_full_during_a_write_leaves_no_partial_file(scored, tiny_config, monkeypatch, capsys, tmp_path):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    fails(capsys, ["score", "--gt", scored / "gt.json", "--results", scored / "results.json", "--out",
                   tmp_path / "out" / "m.json"], "no space left on the device")
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").iterdir()]

    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ckpt" / "model.pt", build_model(tiny_config), tiny_config)
    assert list((tmp_path / "ckpt").iterdir()) == []


def test_temporaries_of_killed_writers_are_cleaned(tmp_path):
    dead = tmp_path / ".results.json.999999999.abcd.tmp"  # no such process
    alive = tmp_path / f".results.json.{os.getpid()}.efgh.tmp"  # a write in progress
    dead.write_text("half")
    alive.write_text("half")
    write_json(tmp_path / "results.json", [])
    assert not dead.exists() and alive.exists()
    with atomic_path(tmp_path / "other.json") as tmp:
        assert tmp.name.startswith(f".other.json.{os.getpid()}.") and tmp.suffix == ".tmp"
    remove_stale_temporaries(tmp_path)
    assert alive.exists()


# ------------------------------------------------------------------ also


def test_a_duplicate_vocabulary_entry_is_kept_once(caplog):
    with caplog.at_level(logging.WARNING):
        assert user_vocabulary(["cat", " dog", "cat", "", "cat, kitten"], "--vocab") == ["cat", "dog", "cat, kitten"]
    assert "'cat' is listed twice" in caplog.text


def test_scores_outside_zero_one_are_scored_with_a_warning(scored, caplog, tmp_path):
    results = json.loads((scored / "results.json").read_text())
    results[0]["score"] = 1.7
    (scored / "results.json").write_text(json.dumps(results))
    with caplog.at_level(logging.WARNING):
        assert cli.main(["score", "--gt", str(scored / "gt.json"), "--results", str(scored / "results.json"),
                         "--out", str(tmp_path / "m.json")]) == 0
    assert "1 scores are outside [0, 1]" in caplog.text
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["AP"] == pytest.approx(1.0)


def test_yaml_keys_given_twice_are_refused(tmp_path):
    (tmp_path / "x.yaml").write_text("a: 1\nb: {c: 2, c: 3}\n")
    with pytest.raises(Exception, match="'c' is given twice"):
        read_yaml(tmp_path / "x.yaml")
