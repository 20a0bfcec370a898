"""`clipvis data`, run in process: exit codes, the missing-file report, downloads and the toy world."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import socket
import threading
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from clipvis.cli import main
from clipvis.config import ToyWorldConfig
from clipvis.data import derived
from clipvis.data.registry import BENCHMARKS, TOY_BENCHMARKS, RemoteFile
from clipvis.data.formats import load_video_gt
from clipvis.data.released import RELEASED, RELEASED_BY_MODEL
from clipvis.data.vocabularies import novel_ids, vocabulary

TINY_TOY = ["toy.frame_size=32", "toy.min_frames=2", "toy.max_frames=3", "toy.max_objects=2",
            "toy.train_images=2", "toy.train_videos=1", "toy.val_videos=1", "toy.ovis_videos=1",
            "toy.caption_images=2", "toy.heldout_captions=1"]


def _make(path: Path, is_dir: bool = False) -> None:
    if is_dir:
        path.mkdir(parents=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def test_check_lists_each_missing_file_and_exits_1(tmp_path, capsys):
    assert main(["data", "--benchmark", "lvvis_val", "--root", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"missing  lvvis_val: {tmp_path / 'lvvis/val/val_instances_.json'}\n" in out
    assert f"missing  lvvis_val: {tmp_path / 'lvvis/val/JPEGImages'}/ (folder)\n" in out
    assert f"how to get it (paths under {tmp_path}):" in out and "lvvis/val/val_instances_.json" in out


def test_check_passes_when_files_are_present(tmp_path, capsys):
    _make(tmp_path / "lvvis/val/val_instances_.json")
    _make(tmp_path / "lvvis/val/JPEGImages", is_dir=True)
    _make(tmp_path / "lvvis/test/test_instances.json")
    _make(tmp_path / "lvvis/test/JPEGImages", is_dir=True)
    assert main(["data", "--benchmark", "lvvis_val", "lvvis_test", "--root", str(tmp_path), "--check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "ok       lvvis_val"
    assert lines[1].startswith("ok       lvvis_test (no public ground truth: score on the LV-VIS test server")


def test_root_defaults_to_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPVIS_DATA", str(tmp_path / "env_root"))
    assert main(["data", "--benchmark", "ovis_val", "--check"]) == 1
    assert str(tmp_path / "env_root" / "ovis/annotations_valid.json") in capsys.readouterr().out


def test_all_paper_checks_every_real_benchmark(tmp_path, capsys):
    assert main(["data", "--benchmark", "all-paper", "--root", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    reported = {line.split(":")[0].split()[-1] for line in out.splitlines()
                if line.startswith("missing") and "released weights" not in line}
    assert reported == {name for name in BENCHMARKS if not name.startswith("toy")}
    released = [line for line in out.splitlines() if line.startswith("missing  released weights")]
    assert [line.split()[3] for line in released] == [weights.model for weights in RELEASED]


def test_released_weights_are_reported_with_where_to_put_them(tmp_path, capsys):
    _make(tmp_path / "weights" / "clipvis_lvis_r50_7.pth")
    assert main(["data", "--benchmark", "released-weights", "--root", str(tmp_path), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"ok       released weights r50_lvis: {tmp_path / 'weights/clipvis_lvis_r50_7.pth'}" in out
    assert (f"download {RELEASED_BY_MODEL['convnext_lvis'].url} (listed at the Download column of the README at "
            f"github.com/zwq456/CLIP-VIS) and save it as {tmp_path / 'weights/clipvis_lvis_convnext_b_7.pth'}") in out
    for weights in RELEASED:
        _make(weights.path(tmp_path))
    assert main(["data", "--benchmark", "released-weights", "--root", str(tmp_path), "--check"]) == 0


def test_lvis_without_rare_categories_is_written_from_the_download(tmp_path, capsys):
    lvis = {"images": [{"id": 1}, {"id": 2}],
            "categories": [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "r"},
                           {"id": 3, "name": "c", "frequency": "c"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 1, "category_id": 2},
                            {"id": 3, "image_id": 2, "category_id": 3}, {"id": 4, "image_id": 2, "category_id": 2}]}
    (tmp_path / "lvis").mkdir()
    (tmp_path / "lvis" / "lvis_v1_train.json").write_text(json.dumps(lvis))
    derived.derive(derived.LVIS_NORARE, tmp_path / "lvis" / "lvis_v1_train_norare.json", tmp_path)
    written = json.loads((tmp_path / "lvis" / "lvis_v1_train_norare.json").read_text())
    assert [a["id"] for a in written["annotations"]] == [1, 3]
    assert written["images"] == lvis["images"] and written["categories"] == lvis["categories"]


def test_burst_val_is_converted_when_its_annotations_are_there(tmp_path, capsys):
    from test_burst import burst_files

    annotations = tmp_path / "burst" / "annotations"
    (annotations / "val").mkdir(parents=True)
    (annotations / "info").mkdir()
    all_classes, class_split = burst_files(tmp_path)
    all_classes.rename(annotations / "val" / "all_classes.json")
    class_split.rename(annotations / "info" / "class_split.json")
    assert main(["data", "--benchmark", "burst_val", "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "ok       burst_val\n"
    converted = load_video_gt(tmp_path / "burst" / "val" / "b2y_val.json")
    assert len(converted["videos"]) == 2 and {c["split"] for c in converted["categories"]} == \
        {"common", "uncommon"}


def test_unknown_benchmark_exits_2(tmp_path, capsys):
    assert main(["data", "--benchmark", "lvvis_train", "--root", str(tmp_path), "--check"]) == 2
    assert "unknown benchmark; known:" in capsys.readouterr().err


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def served(tmp_path):
    """A plain HTTP server for the files put in `served.folder`; `served.url(name)` gives their URLs."""
    folder = tmp_path / "served"
    folder.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield SimpleNamespace(folder=folder, url=lambda name: f"http://127.0.0.1:{httpd.server_address[1]}/{name}")
    httpd.shutdown()
    httpd.server_close()


def _with_downloads(monkeypatch, name: str, *remotes: RemoteFile) -> None:
    monkeypatch.setitem(BENCHMARKS, name, dataclasses.replace(BENCHMARKS[name], downloads=remotes))


def test_downloads_and_unpacks_then_checks(served, tmp_path, monkeypatch, capsys):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("annotations/instances_train2017.json", json.dumps({"images": []}))
        z.writestr("train2017/000000000001.jpg", b"jpeg")
    (served.folder / "coco_pack.zip").write_bytes(buffer.getvalue())
    remote = RemoteFile(served.url("coco_pack.zip"), "coco/coco_pack.zip",
                        md5=hashlib.md5(buffer.getvalue()).hexdigest())
    _with_downloads(monkeypatch, "coco_train", remote)
    root = tmp_path / "data"
    assert main(["data", "--benchmark", "coco_train", "--root", str(root)]) == 0
    assert (root / "coco/train2017/000000000001.jpg").read_bytes() == b"jpeg"
    assert "ok       coco_train" in capsys.readouterr().out


def test_unreachable_download_is_reported_and_exits_1(tmp_path, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _with_downloads(monkeypatch, "coco_train", RemoteFile(f"http://127.0.0.1:{port}/a.zip", "coco/a.zip", md5="0" * 32))
    assert main(["data", "--benchmark", "coco_train", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"put it at {tmp_path / 'coco/a.zip'}" in out
    assert f"missing  coco_train: {tmp_path / 'coco/annotations/instances_train2017.json'}" in out


def test_toy_world_is_generated_and_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the sample figure goes to reports/ under the working directory
    root = tmp_path / "data"
    assert main(["data", "--benchmark", "toy", "--root", str(root), "--set", *TINY_TOY]) == 0
    out = capsys.readouterr().out
    assert all(f"ok       {name}" in out for name in TOY_BENCHMARKS)
    defaults = ToyWorldConfig()
    names = vocabulary("toy_lvvis", root)
    assert len(names) == len(defaults.colours) * len(defaults.shapes)  # every colour-shape pair
    assert 0 < len(novel_ids("toy_lvvis", root)) < len(names)
