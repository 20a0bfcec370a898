import argparse
import contextlib
import json

import av
import numpy as np
import pytest
import torch
from PIL import Image

from clipvis.config import load_config, read_variants
from clipvis.errors import InputError
from clipvis.model.clipvis_model import CLIPVIS
from clipvis.model.checkpoint import save_checkpoint
from clipvis.commands import infer as infer_command
from clipvis.video import benchmark
from clipvis.commands import segment as segment_command
from clipvis.video import inference
from clipvis.reports import overlays
from clipvis.reports.overlays import write_mp4
from conftest import FakeMlflow

PARAMS = """
clip:
  model: clipvis_toy_rn
  pretrained: {clip}
  text_cache: {cache}
data:
  root: {root}
model: {{hidden_dim: 32, mask_dim: 32, num_queries: 10, heads: 4, enc_layers: 1, dec_layers: 3,
         dec_ffn_dim: 64, enc_ffn_dim: 64}}
infer: {{min_size: 48, frames_per_chunk: 2, device: cpu}}
scoring: {{detections_per_video: 5}}
"""
CATEGORIES = [{"id": 1, "name": "cat", "partition": 0}, {"id": 2, "name": "dog", "partition": 2},
              {"id": 5, "name": "red ball", "partition": 1}]


def frame_pixels(seed, height=64, width=80):
    """A dark frame with a bright rectangle at a seeded place."""
    rng = np.random.default_rng(seed)
    frame = np.full((height, width, 3), 30, dtype=np.uint8)
    top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
    frame[top:top + 24, left:left + 30] = rng.integers(120, 256, size=3)
    return frame


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A toy benchmark of two 3-frame videos, a random toy CLIP saved as a weights file, params and a checkpoint."""
    base = tmp_path_factory.mktemp("world")
    root = base / "data"
    bench = root / "toy" / "toy_lvvis"
    videos = []
    for video_id in (1, 2):
        names = []
        for t in range(3):
            name = f"v{video_id}/{t:05d}.png"
            (bench / "JPEGImages" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame_pixels(10 * video_id + t)).save(bench / "JPEGImages" / name)
            names.append(name)
        videos.append({"id": video_id, "height": 64, "width": 80, "length": 3, "file_names": names})
    (bench / "annotations.json").write_text(json.dumps({"videos": videos, "annotations": [],
                                                        "categories": CATEGORIES}))
    (root / "toy" / "categories.json").write_text(json.dumps({"categories": CATEGORIES}))

    torch.manual_seed(0)
    clip_path = base / "toy_clip.pt"
    params = base / "params.yaml"
    params.write_text(PARAMS.format(clip=clip_path, cache=base / "text_cache", root=root))
    cfg = load_config(params, ["clip.pretrained=null"])
    model = CLIPVIS.from_config(cfg.model, cfg.clip)
    torch.save(model.clip.clip.state_dict(), clip_path)
    checkpoint = base / "model_final.pt"
    save_checkpoint(checkpoint, model, cfg)
    return {"base": base, "root": root, "params": params, "checkpoint": checkpoint}


def parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def run_infer(world, out, overrides=(), tracking=False):
    cfg = load_config(world["params"], list(overrides))
    return benchmark.infer_benchmark(cfg, "toy_lvvis", world["checkpoint"], out, tracking=tracking)[""]


def kill_after_the_first_video(monkeypatch):
    """The next inference dies (KeyboardInterrupt) when it starts its second video."""
    original = inference.stream_video_variants
    done = []

    def killed_after_first_video(*args, **kwargs):
        if done:
            raise KeyboardInterrupt
        done.append(args[4])
        return original(*args, **kwargs)

    monkeypatch.setattr(inference, "stream_video_variants", killed_after_first_video)
    return original


def test_infer_resumes_after_a_kill(world, tmp_path, monkeypatch):
    uninterrupted = json.loads(run_infer(world, tmp_path / "full").read_text())
    assert [r["video_id"] for r in uninterrupted] == [1] * 5 + [2] * 5
    assert {r["category_id"] for r in uninterrupted} <= {1, 2, 5}
    assert all(len(r["segmentations"]) == 3 for r in uninterrupted)

    out = tmp_path / "resumed"
    original = kill_after_the_first_video(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_infer(world, out)
    assert (out / "progress" / "1.jsonl").exists() and not (out / "progress" / "2.jsonl").exists()
    assert not (out / "results.json").exists()

    resumed, logged = [], {}
    monkeypatch.setattr(inference, "stream_video_variants", lambda *a, **k: resumed.append(a[4]) or original(*a, **k))
    monkeypatch.setattr(benchmark, "stage_run", lambda cfg, stage, **k: contextlib.nullcontext(FakeMlflow(logged)))
    assert infer_command.main(parse(infer_command, [
        "--params", world["params"], "--benchmark", "toy_lvvis", "--checkpoint", world["checkpoint"],
        "--out", out])) == 0
    assert resumed == [2]
    assert logged["frames"] == 3 and logged["videos"] == 1 and logged["fps"] > 0
    assert json.loads((out / "results.json").read_text()) == uninterrupted
    assert (out / "config.yaml").exists()
    matching = json.loads((out / "matching.json").read_text())  # summed over both videos, as uninterrupted
    assert matching == json.loads((tmp_path / "full" / "matching.json").read_text())
    assert matching["object_slots"] > 0 and 0 <= matching["switches"] <= matching["object_slots"]
    assert logged["slot_switch_rate"] == matching["switch_rate"] == matching["switches"] / matching["object_slots"]

    calls = []
    monkeypatch.setattr(inference, "stream_video_variants", lambda *a, **k: calls.append(a[4]) or original(*a, **k))
    run_infer(world, out, ["matching.topk=2"])  # other settings: the old progress is not reused
    assert calls == [1, 2]


def test_variants_in_one_pass_equal_separate_runs_and_servers_get_a_zip(world, tmp_path, monkeypatch):
    variants_file = tmp_path / "variants.yaml"
    variants_file.write_text("default: []\nadjacent: [matching.strategy=adjacent]\nno_woc: [scoring.weighted=false]\n")
    out = tmp_path / "variants"
    assert infer_command.main(parse(infer_command, [
        "--params", world["params"], "--benchmark", "toy_lvvis", "--checkpoint", world["checkpoint"], "--out", out,
        "--variants", "default", "adjacent", "no_woc", "--variants-file", variants_file])) == 0
    assert json.loads((out / "variants.json").read_text())["variants"] == ["default", "adjacent", "no_woc"]
    for name, overrides in [("default", []), ("adjacent", ["matching.strategy=adjacent"]),
                            ("no_woc", ["scoring.weighted=false"])]:
        alone = json.loads(run_infer(world, tmp_path / f"alone_{name}", overrides).read_text())
        assert json.loads((out / name / "results.json").read_text()) == alone
    assert not (out / "default" / "submission.zip").exists()  # toy_lvvis has public ground truth

    with pytest.raises(InputError, match="unknown variant"):
        read_variants(variants_file, ["nope"])


def test_infer_refuses_a_checkpoint_of_another_decoder_depth(world, tmp_path):
    with pytest.raises(InputError, match=r"model.dec_layers 3 \(config: 4\).*--set model.dec_layers=3"):
        run_infer(world, tmp_path / "out", ["model.dec_layers=4"])


def test_segment_writes_results_and_overlays(world, tmp_path):
    video = tmp_path / "input.mp4"
    write_mp4(video, [frame_pixels(t) for t in range(4)], fps=4)
    out = tmp_path / "out"
    assert segment_command.main(parse(segment_command, [
        video, "--vocab", "cat, dog", "--checkpoint", world["checkpoint"], "--params", world["params"],
        "--min-score", "0", "--out", out])) == 0

    results = json.loads((out / "results.json").read_text())
    assert len(results) == 5  # detections_per_video
    assert {r["category_name"] for r in results} <= {"cat", "dog"}
    assert all(r["category_name"] == ["cat", "dog"][r["category_id"] - 1] for r in results)
    assert all(len(r["segmentations"]) == 4 and r["segmentations"][0]["size"] == [64, 80] for r in results)

    with av.open(str(out / "overlay.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    scale = overlays.draw_scale(64)  # small frames are enlarged for drawing
    assert len(decoded) == 4 and decoded[0].shape == (64 * scale, 80 * scale, 3)
    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (80 * scale, 64 * scale)
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width == 4 * overlays.SHEET_MAX_WIDTH and sheet.height > 64


def test_segment_errors(world, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(frame_pixels(0)).save(folder / "0.png")
    with pytest.raises(InputError, match="empty vocabulary"):
        segment_command.main(parse(segment_command, [folder, "--vocab", " , ", "--out", tmp_path / "o"]))
    (tmp_path / "broken.webm").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="broken.webm"):
        segment_command.main(parse(segment_command, [tmp_path / "broken.webm", "--vocab", "cat", "--out",
                                                     tmp_path / "o"]))
    with pytest.raises(InputError, match="dec_layers"):
        segment_command.main(parse(segment_command, [
            folder, "--vocab", "cat", "--checkpoint", world["checkpoint"], "--params", world["params"],
            "--set", "model.dec_layers=5", "--out", tmp_path / "o"]))


def other_checkpoint(world):
    """The world's checkpoint with other (random) decoder weights: same network, other results."""
    path = world["base"] / "other_model.pt"
    if not path.exists():
        cfg = load_config(world["params"])
        torch.manual_seed(5)
        save_checkpoint(path, CLIPVIS.from_config(cfg.model, cfg.clip), cfg)
    return path


def test_a_second_checkpoint_on_the_same_out_redoes_every_video(world, tmp_path, monkeypatch):
    """Progress records carry what made them: videos of one checkpoint are never mixed into another's results."""
    cfg = load_config(world["params"])
    out = tmp_path / "out"
    original = kill_after_the_first_video(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        benchmark.infer_benchmark(cfg, "toy_lvvis", world["checkpoint"], out, tracking=False)
    monkeypatch.setattr(inference, "stream_video_variants", original)
    mixed = json.loads(benchmark.infer_benchmark(cfg, "toy_lvvis", other_checkpoint(world), out,
                                                     tracking=False)[""].read_text())
    alone = json.loads(benchmark.infer_benchmark(cfg, "toy_lvvis", other_checkpoint(world), tmp_path / "alone",
                                                     tracking=False)[""].read_text())
    assert mixed == alone


def test_a_second_writer_on_the_same_out_stops_at_once(world, tmp_path, capsys):
    from clipvis import cli
    from clipvis.files import output_lock

    out = tmp_path / "out"
    with output_lock(out):
        code = cli.main(["infer", "--params", str(world["params"]), "--benchmark", "toy_lvvis", "--checkpoint",
                         str(world["checkpoint"]), "--out", str(out)])
    assert code == 2
    error = capsys.readouterr().err
    assert "another clipvis run is writing here (pid" in error and error.count("\n") == 1
    assert not (out / "results.json").exists()


@pytest.mark.parametrize("damage", ["", "{\"records\": [", "[]", "{\"settings\": \"x\"}", "last record cut"])
def test_a_damaged_progress_file_is_redone(world, tmp_path, damage, monkeypatch):
    out = tmp_path / "out"
    uninterrupted = run_infer(world, out).read_text()
    progress = out / "progress" / "2.jsonl"
    lines = progress.read_text().splitlines(keepends=True)
    assert len(lines) == 6  # the header and 5 records
    progress.write_text("".join(lines)[:-30] if damage == "last record cut" else damage)
    (out / "results.json").unlink()
    calls = []
    original = inference.stream_video_variants
    monkeypatch.setattr(inference, "stream_video_variants", lambda *a, **k: calls.append(a[4]) or original(*a, **k))
    assert run_infer(world, out).read_text() == uninterrupted
    assert calls == [2]


def test_file_names_must_stay_inside_the_image_folder(world, tmp_path):
    annotations = json.loads((world["root"] / "toy" / "toy_lvvis" / "annotations.json").read_text())
    for name in ("../../../etc/passwd", "/etc/passwd"):
        annotations["videos"][1]["file_names"][0] = name
        path = tmp_path / "annotations.json"
        path.write_text(json.dumps(annotations))
        with pytest.raises(InputError, match=r"videos\[1\].file_names\[0\]: .* is not a path inside the image folder"):
            benchmark.benchmark_videos(path)
