"""`clipvis tables`: tables from a fake runs/ tree, the T x K heatmap, training curves from MLflow and
index.html rendered in headless Chromium."""

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipvis.config import load_config, save_config
from clipvis.errors import InputError
from clipvis.files import read_yaml
from clipvis.commands import tables as command
from clipvis.reports import paper_numbers, plots
from clipvis.tracking import training_history
from clipvis.reports.tables import (DASH, MISSING, NOT_AT_TOY, SERVER, UNDEFINED, build_tables, render_markdown,
                                    write_tables)

CHROMIUM = "/usr/bin/chromium"  # installed by `make system-deps` (root and apt); without them the test skips


def put_metrics(runs, scale, model, benchmark, variant, counts=None, **metrics):
    path = runs / scale / model / "score" / benchmark / variant / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"flavour": "lvvis", "metrics": metrics, **({"counts": counts} if counts else {})}))


def put_file(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def toy_runs(tmp_path):
    runs = tmp_path / "runs"
    put_metrics(runs, "toy", "default", "toy_lvvis", "default", AP=0.12349, APn=0.0501, APb=0.2)
    put_metrics(runs, "toy", "default", "toy_ovis", "default", AP=0.2, APn=None)
    put_metrics(runs, "toy", "default", "toy_lvvis", "T9_K3", AP=0.30, APn=0.31)
    put_metrics(runs, "toy", "default", "toy_lvvis", "T5_K1", AP=0.25, APn=None)
    put_metrics(runs, "toy", "iou_relu", "toy_lvvis", "default", AP=0.111, APn=0.0)
    put_file(runs / "toy" / "default" / "infer" / "toy_lvvis" / "T5_K1" / "matching.json",
             json.dumps({"object_slots": 400, "switches": 6, "switch_rate": 0.015}).encode())
    put_file(runs / "toy" / "default" / "bench" / "complexity.json",
             json.dumps({"gflops_per_frame": 0.12345, "fps": 7.26, "device": "cpu (2 threads)",
                         "frame_size": [128, 160]}).encode())
    return runs


def table(tables, key):
    return next(t for t in tables if t.key == key)


def row_cells(table_, run):
    """{column title with group: cell} of the row measured by `run` ("model · variant")."""
    row = next(r for g in table_.groups for r in g.rows if r.run == run)
    names = [f"{g} {t}".strip() for g, t in zip(table_.column_groups, table_.column_titles)]
    return dict(zip(names, row.cells))


def test_paper_numbers_have_a_number_or_dash_per_column_and_known_variants():
    variants = read_yaml("params/variants.yaml")
    for paper_table in paper_numbers.TABLES:
        for group in paper_table.groups:
            for row in group.rows:
                assert len(row.paper) == len(paper_table.columns), (paper_table.key, row.labels)
                assert len(row.labels) == len(paper_table.label_headers), (paper_table.key, row.labels)
                if row.models:
                    assert row.variant in variants, row.variant
    ours = {r.labels: r for g in paper_numbers.TABLE1.groups for r in g.rows}
    assert ours[("CLIP-VIS (ours)", "LVIS", "ConvNeXt-B")].paper[:2] == (32.2, 40.2)  # the abstract's numbers
    assert ours[("OV2Seg", "LVIS", "SwinB")].paper[:2] == (21.1, 16.3)
    assert ours[("OV2Seg", "LVIS", "R50")].paper[4] == 11.2  # OVIS
    assert paper_numbers.TK_PAPER[(9, 3)] == (19.5, 24.2, 14.1, 5.2, 7.7)
    assert len(paper_numbers.TK_PAPER) == 13


def test_toy_tables_show_measured_missing_and_not_at_toy_cells(toy_runs):
    tables = build_tables("toy", toy_runs)
    assert [t.key for t in tables] == [f"table{i}" for i in range(1, 7)]

    main = row_cells(table(tables, "table1"), "default · default")
    assert (main["LV-VIS val AP"].ours, main["LV-VIS val AP"].paper) == ("12.3", "19.5")
    assert (main["LV-VIS val APn"].ours, main["LV-VIS val APn"].paper) == ("5.0", "24.2")
    assert (main["OVIS AP"].ours, main["OVIS AP"].paper) == ("20.0", "14.1")
    assert main["LV-VIS test AP"].ours == NOT_AT_TOY and main["LV-VIS test AP"].paper == "14.6"
    assert main["BURST APu"].ours == NOT_AT_TOY
    # Other methods: the paper's number only; the ConvNeXt row has no toy model.
    ov2seg = next(r for g in table(tables, "table1").groups for r in g.rows if r.labels == ("OV2Seg", "LVIS", "R50"))
    assert (ov2seg.run, ov2seg.cells[0].ours, ov2seg.cells[0].paper) == ("", DASH, "14.2")
    assert ov2seg.cells[2].paper == "11.4" and ov2seg.cells[10].paper == "2.4"

    baseline = row_cells(table(tables, "table2"), "default · no_woc_no_tkm")
    assert (baseline["LV-VIS AP"].ours, baseline["LV-VIS AP"].paper) == (MISSING, "9.2")
    assert baseline["LV-VIS AP"].status == "missing" and baseline["LV-VIS AP"].value is None

    grid = row_cells(table(tables, "table5"), "default · T5_K1")
    assert (grid["LV-VIS AP"].ours, grid["LV-VIS AP"].paper, grid["LV-VIS APn"].ours) == ("25.0", "18.6", UNDEFINED)
    assert (grid["LV-VIS slot switches %"].ours, grid["LV-VIS slot switches %"].paper) == ("1.5", DASH)
    assert row_cells(table(tables, "table5"), "default · T9_K3")["LV-VIS slot switches %"].ours == MISSING

    relu = row_cells(table(tables, "table4"), "iou_relu · default")
    assert (relu["LV-VIS AP"].ours, relu["LV-VIS APn"].ours, relu["LV-VIS AP"].paper) == ("11.1", "0.0", "18.8")

    cost = row_cells(table(tables, "table6"), "default · default")
    assert [(c.ours, c.paper) for c in cost.values()] == [("12.3", "19.5"), ("0.123G", "244.1G"), ("7.3", "31.4")]
    assert any("cpu (2 threads)" in note for note in table(tables, "table6").notes)


def test_a_run_whose_detections_all_scored_zero_gets_a_note(toy_runs):
    put_metrics(toy_runs, "toy", "iou_relu", "toy_lvvis", "default", AP=0.01, APn=0.0,
                counts={"predictions": 50, "predictions_scored_zero": 50})
    put_metrics(toy_runs, "toy", "iou_pooled", "toy_lvvis", "default", AP=0.3, APn=0.2,
                counts={"predictions": 50, "predictions_scored_zero": 49})
    notes = [note for note in table(build_tables("toy", toy_runs), "table4").notes if "scored 0" in note]
    assert len(notes) == 1
    assert "iou_relu · default on toy_lvvis: all 50 detections scored 0" in notes[0] and "ReLU" in notes[0]
    # Runs without the count (metrics.json files of older scorers) or with any non-zero score get none.
    assert not [note for tab in build_tables("toy", toy_runs) if tab.key != "table4" for note in tab.notes
                if "scored 0" in note]


def test_paper_tables_link_server_zips_and_never_fill_in(tmp_path):
    runs = tmp_path / "runs"
    put_metrics(runs, "paper", "r50_lvis", "lvvis_val", "default", AP=0.195, APn=0.242)
    zip_path = put_file(runs / "paper" / "r50_lvis" / "infer" / "lvvis_test" / "default" / "submission.zip")
    tables = build_tables("paper", runs)
    main = row_cells(table(tables, "table1"), "r50_lvis · default")
    assert (main["LV-VIS val AP"].ours, main["LV-VIS val APn"].ours) == ("19.5", "24.2")
    assert main["LV-VIS test AP"].ours == SERVER and main["LV-VIS test AP"].link == zip_path
    assert main["YTVIS2019 AP"].ours == MISSING  # no zip yet: missing, not server
    assert main["BURST AP"].ours == MISSING  # public ground truth but no metrics.json
    coco = row_cells(table(tables, "table1"), "r50_coco_ytvis19 · default")
    assert all(cell.ours == MISSING for cell in coco.values())

    out = tmp_path / "reports" / "tables"
    markdown = render_markdown(table(tables, "table1"), out)
    assert "[server](../../runs/paper/r50_lvis/infer/lvvis_test/default/submission.zip) / 14.6" in markdown
    assert "| 19.5 / 19.5 | 24.2 / 24.2 |" in markdown


def test_a_metrics_file_without_the_metric_is_an_input_error(tmp_path):
    runs = tmp_path / "runs"
    put_metrics(runs, "toy", "default", "toy_lvvis", "default", AP=0.1)  # no APn
    with pytest.raises(InputError, match=r"metrics.json: metrics.APn: missing"):
        build_tables("toy", runs)


def test_write_tables_writes_every_format(toy_runs, tmp_path):
    out = tmp_path / "reports" / "tables"
    written = write_tables(build_tables("toy", toy_runs), out)
    assert sorted(p.name for p in written) == sorted(f"table{i}.{ext}" for i in range(1, 7)
                                                     for ext in ("md", "tex", "html"))
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # no temporary files left
    markdown = (out / "table1.md").read_text()
    assert "| 12.3 / 19.5 | 5.0 / 24.2 | n/a at toy scale / 14.6 |" in markdown
    latex = (out / "table2.tex").read_text()
    assert r"\multicolumn{2}{c}{LV-VIS}" in latex and r"\texttt{default $\cdot$ no\_woc\_no\_tkm}" in latex
    assert r"$\times$ & $\times$" in latex and "missing / 9.2" in latex
    assert sum(line.endswith(r"\\") for line in latex.splitlines()) == 2 + 3  # two header rows, three rows
    page = (out / "table6.html").read_text()
    assert '<td class="cell measured"><span class="ours">0.123G</span> / <span class="paper">244.1G</span></td>' in page


def test_tk_heatmap_grid_and_png_size(toy_runs, tmp_path):
    grid = plots.tk_grid("toy", toy_runs)
    assert grid.memories == [3, 5, 7, 9, 11] and grid.topks == [1, 3, 5, 7]
    assert grid.ours[3, 1] == pytest.approx(30.0) and grid.ours[1, 0] == pytest.approx(25.0)
    assert np.isnan(grid.ours).sum() == 20 - 2
    assert grid.in_grid.sum() == 13 and not grid.in_grid[0, 1]  # T=3, K=3 is not in the paper's grid
    assert grid.paper[4, 2] == 19.4

    path = plots.plot_tk_heatmap(grid, "toy_lvvis", tmp_path / "plots" / "heatmap.png")
    with Image.open(path) as image:
        assert image.size == plots.heatmap_size_px(5, 4)
    assert plots.heatmap_size_px(5, 4)[1] > plots.heatmap_size_px(4, 4)[1]


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's artifact folder, if any, lands here
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    return tmp_path / "m.db"


def log_training(cfg, losses_by_step):
    from clipvis.tracking import stage_run

    with stage_run(cfg, "train", run_name="train") as mlflow:
        for step, losses in losses_by_step.items():
            mlflow.log_metrics(losses, step=step)


def test_training_history_joins_resumed_runs_of_the_same_config(toy_runs, mlflow_store):
    cfg = load_config()
    save_config(cfg, toy_runs / "toy" / "default" / "train" / "config.yaml")
    log_training(cfg, {10: {"total": 4.0, "loss_mask": 1.0, "lr": 0.1}, 20: {"total": 3.0, "loss_mask": 0.9}})
    log_training(cfg, {20: {"total": 2.5, "loss_mask": 0.8}, 30: {"total": 2.0, "loss_mask": 0.7}})  # resumed
    log_training(load_config(None, ["train.lr=0.5"]), {10: {"total": 99.0}})  # other config

    from mlflow.tracking import MlflowClient

    expected = {"total": {10: 4.0, 20: 2.5, 30: 2.0}, "loss_mask": {10: 1.0, 20: 0.8, 30: 0.7}}
    config_file = toy_runs / "toy" / "default" / "train" / "config.yaml"
    assert training_history(MlflowClient(), read_yaml(config_file), "toy") == expected
    # the same training asked for with another test-time setting (a DVC experiment on matching.topk)
    save_config(load_config(None, ["matching.topk=1", "infer.frames_per_chunk=2"]), config_file)
    assert training_history(MlflowClient(), read_yaml(config_file), "toy") == expected


@pytest.mark.system
def test_tables_command_writes_index_html_that_chromium_renders(toy_runs, mlflow_store, tiny_world, tmp_path):
    cfg = load_config()
    save_config(cfg, toy_runs / "toy" / "default" / "train" / "config.yaml")
    log_training(cfg, {step: {"total": 5.0 / step, "loss_dice": 2.0 / step, "loss_iou": 0.5 / step}
                       for step in range(10, 110, 10)})
    frames = [Image.fromarray(np.full((40, 60, 3), (40 * i, 120, 200 - 40 * i), dtype=np.uint8)) for i in range(4)]
    gif = toy_runs / "toy" / "default" / "qualitative" / "video_1.gif"
    gif.parent.mkdir(parents=True)
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=200, loop=0)
    videos = put_matching_results(toy_runs, tiny_world)
    put_file(toy_runs / "toy" / "default" / "eval_images" / "toy_lvis_val" / "metrics.json",
             json.dumps({"metrics": {"AP": 0.1533, "AP50": 0.2277, "AP75": 0.1615, "APb": 0.1578, "APn": None}}).encode())
    put_file(toy_runs / "toy" / "clip" / "toy_clip.json", json.dumps({
        "model": "clipvis_toy_rn", "zero_shot_top1": {"overall": 0.9467, "base": 0.95, "novel": 0.94},
        "zero_shot_top1_whole_image": {"overall": 0.25, "base": 0.3}, "train_seconds": 512.3}).encode())
    put_file(toy_runs / "toy" / "clip" / "other.json", b'{"not": "a pretraining report"}')
    put_file(toy_runs / "toy" / "default" / "bench" / "toy_diagnostics.json", json.dumps({
        "frame_step": 4, "infer_size": [240, 400],
        "clip_grid": {"toy_lvvis": {"share": 0.9612}, "toy_ovis": {"share": 0.95}},
        "gt_mask_classification": {"toy_lvvis": {"overall": 0.8, "base": 0.85, "novel": 0.7},
                                   "toy_ovis": {"overall": 0.75, "base": 0.8, "novel": None}},
        "segmenter": {"toy_lvvis": {"AP": 0.5, "oracle_class_AP": 0.6,
                                    "slot_switch_rate": {"adjacent": 0.03, "default": 0.025},
                                    "tracks": {"tracks": 40, "found": 0.9,
                                               "top1_of_found": {"overall": 0.7, "base": 0.75, "novel": 0.6}}}},
        "training": {"iterations": 3000, "final_loss": 4.2, "previous_loss": 4.5, "still_falling": True}}).encode())
    for model, head, spearman in (("default", "sigmoid", 0.634), ("iou_relu", "relu", None)):
        confident = {"queries": 40, "spearman": spearman, "mean_abs_error": 0.15, "mean_predicted": 0.9, "mean_true": 0.78}
        put_file(toy_runs / "toy" / model / "bench" / "iou_head.json", json.dumps({
            "iou_head_input": "query", "iou_activation": head, "frame_step": 4, "confident": 0.5, "benchmarks": {
                "toy_lvvis": {"queries": 400, "spearman": spearman, "mean_abs_error": 0.291, "mean_predicted": 0.4,
                              "mean_true": 0.3, "confident": confident}}}).encode())
    put_file(toy_runs / "toy" / "default" / "matching_test" / "toy_ovis" / "matching_test.json", json.dumps({
        "benchmark": "toy_ovis", "noise_levels": [0.0, 1.0], "rows": [
            {"variant": "network order", "noise": 0.0, "identity_recovery": 0.8, "AP": 0.3},
            {"variant": "adjacent", "noise": 0.0, "identity_recovery": 0.9876, "AP": 0.35},
            {"variant": "adjacent", "noise": 1.0, "identity_recovery": None, "AP": 0.2}],
        "handovers": {"pairs": 700, "handovers": 7, "handover_rate": 0.01, "followed_rate": 0.0, "cosine_kept": 0.99,
                      "cosine_handover_new_owner": 0.65, "cosine_handover_old_query": 0.98},
        "object_shown": 0.5}).encode())
    samples = tmp_path / "samples.png"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (64, 1, 3))).save(samples)

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    reports = tmp_path / "reports"
    args = parser.parse_args(["--scale", "toy", "--runs", str(toy_runs), "--out", str(reports),
                              "--data", str(tiny_world), "--samples", str(samples)])
    assert command.main(args) == 0

    index = reports / "index.html"
    page = index.read_text()
    for src in ["plots/table5_tk_heatmap.png", "plots/train_default.png", "toy_world_samples.png",
                "qualitative/default/video_1.gif", f"qualitative/matching_{videos[1]['id']}.gif"]:
        assert f'src="{src}"' in page and (reports / src).is_file(), src
    assert "12.3</span> / <span class=\"paper\">19.5" in page and "ours / paper" in page
    assert (reports / "tables" / "table5.tex").is_file()
    assert "<h2>Image-level AP</h2>" in page and "<td>toy_lvis_val</td>" in page and ">15.3<" in page
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["images/default/toy_lvis_val AP"] == 15.33 and "images/default/toy_lvis_val APn" not in summary
    assert summary["table1/default · default/LV-VIS val AP"] == 12.349
    assert "<h2>Toy CLIP</h2>" in page and ">94.7<" in page and ">none<" in page and "<code>other</code>" not in page
    assert summary["clip/toy_clip zero-shot object masks novel"] == 94.0
    assert summary["clip/toy_clip zero-shot whole images base"] == 30.0
    assert "clip/toy_clip zero-shot whole images novel" not in summary
    assert "<h2>Diagnostics of the toy experiment</h2>" in page and ">96.1<" in page and "still falling" in page
    assert "tested at a short side of 240 pixels" in page
    assert summary["diagnostics/default/toy_lvvis visible to the CLIP grid %"] == 96.12
    assert summary["diagnostics/default/toy_lvvis slot switches % adjacent"] == 3.0
    assert summary["diagnostics/default/toy_lvvis own-track top-1 % novel"] == 60.0
    assert "diagnostics/default/toy_ovis GT-mask top-1 % novel" not in summary
    assert "diagnostics/default/toy_ovis AP" not in summary
    assert 'id="matching_test"' in page and ">98.8<" in page and ">undefined<" in page
    # the mask-IoU heads' quality sits under Table IV, which compares them; a dead head has no rank correlation
    assert page.index('id="table4"') < page.index('id="iou_heads"') < page.index('id="table5"')
    assert "<td>query, relu</td><td>toy_lvvis</td>" in page and ">0.63<" in page and ">—<" in page
    assert summary["iou_head/default/toy_lvvis Spearman, all queries"] == 0.634
    assert summary["iou_head/iou_relu/toy_lvvis mean abs. error, confident queries"] == 0.15
    assert "iou_head/iou_relu/toy_lvvis Spearman, all queries" not in summary
    assert summary["matching_test/default/toy_ovis/adjacent noise 0 identity %"] == 98.76
    assert summary["matching_test/default/toy_ovis/adjacent noise 1 AP"] == 20.0
    assert "| `network order` | 80.0 | 30.0 |  |  |" in (reports / "tables" / "matching_test.md").read_text()
    assert "7 of 700 adjacent-frame pairs" in page and "cosine 0.65 with the new owner" in page
    assert summary["matching_test/default/toy_ovis/handovers handover %"] == 1.0

    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip("Chromium is not installed, and installing it (`make system-deps`) needs root and apt-get")
        pytest.fail("Chromium is missing: `make system-deps` installs it (`make test` runs it first)")
    screenshot = tmp_path / "screenshot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chromium'}", f"--screenshot={screenshot}",
                    "--window-size=1200,1600", index.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 20  # text, tables and images, not a blank page
    assert (pixels < 128).mean() > 0.01  # enough dark ink (text) on the page


def box_track(height, width, length, x0, x1):
    """A box mask in every frame, as compressed RLE records."""
    import pycocotools.mask as mask_api

    mask = np.zeros((height, width), dtype=np.uint8, order="F")
    mask[height // 4: 3 * height // 4, x0:x1] = 1
    rle = mask_api.encode(mask)
    return [{"size": [height, width], "counts": rle["counts"].decode("ascii")}] * length


def put_matching_results(runs, data_root):
    """Results of the default and adjacent variants on toy_lvvis: the same box track, except in the second
    video, where adjacent matching switches identity halfway through. Returns the videos."""
    from clipvis.reports.qualitative import results_path
    from clipvis.video.benchmark import benchmark_videos

    videos = benchmark_videos(data_root / "toy" / "toy_lvvis" / "annotations.json")
    results = {"default": [], "adjacent": []}
    for number, video in enumerate(videos):
        h, w, n = video["height"], video["width"], len(video["file_names"])
        left, right = box_track(h, w, n, 0, w // 3), box_track(h, w, n, 2 * w // 3, w)
        switched = left[: n // 2] + right[n // 2:]
        results["default"] += [{"video_id": video["id"], "category_id": 1, "score": 0.9, "segmentations": left}]
        results["adjacent"] += [{"video_id": video["id"], "category_id": 1, "score": 0.9,
                                 "segmentations": switched if number == 1 else left}]
    for variant, records in results.items():
        put_file(results_path(runs, "toy", "default", "toy_lvvis", variant), json.dumps(records).encode())
    return videos


def test_matching_gifs_compare_the_variants_on_videos_where_they_differ(tiny_world, tmp_path):
    from clipvis.reports.qualitative import PANEL_WIDTH, write_matching_gifs

    runs, out = tmp_path / "runs", tmp_path / "reports" / "qualitative"
    assert write_matching_gifs("toy", runs, tiny_world, out) == []  # no results yet
    videos = put_matching_results(runs, tiny_world)

    written = write_matching_gifs("toy", runs, tiny_world, out, videos=1)
    assert written == [out / f"matching_{videos[1]['id']}.gif"]
    with Image.open(written[0]) as gif:
        assert gif.n_frames == len(videos[1]["file_names"])
        assert gif.size[0] == 2 * PANEL_WIDTH  # two panels, each scaled to the same width


def test_measured_values_list_only_measured_cells_flat(toy_runs):
    from clipvis.reports.tables import measured_values

    values = measured_values(build_tables("toy", toy_runs))
    assert values["table1/default · default/LV-VIS val AP"] == 12.349
    assert values["table5/default · T5_K1/LV-VIS AP"] == 25.0
    assert not any("no_woc_no_tkm" in key for key in values)  # missing runs are not listed
