"""What bounds the toy experiment (`clipvis bench toy`, in the pipeline for the ablation model), for the report.

Read from runs/{scale}/{model}/bench/toy_diagnostics.json. Shown in index.html as one row per benchmark, and
listed flat in summary.json ("diagnostics/{model}/{benchmark} {column}", percentages and AP x 100).
"""

from __future__ import annotations

import html
from pathlib import Path

from clipvis import layout
from clipvis.files import read_json
from clipvis.reports.paper_numbers import Scale

SWITCH_VARIANTS = ("adjacent", "default")  # slot switches shown: adjacent matching and the method's top-K
# column title -> where its number lies in the report of one benchmark
COLUMNS = {
    "visible to the CLIP grid %": ("clip_grid", "share"),
    "tracks visible to the CLIP grid %": ("clip_grid", "tracks_share"),
    "GT-mask top-1 % overall": ("gt_mask_classification", "overall"),
    "GT-mask top-1 % base": ("gt_mask_classification", "base"),
    "GT-mask top-1 % novel": ("gt_mask_classification", "novel"),
    "GT-mask top-1 % of objects over 6 % of the frame": ("gt_mask_classification", "by_area", "0.06-1"),
    "GT-mask errors in shape alone %": ("gt_mask_classification", "errors", "shape"),
    "AP": ("segmenter", "AP"),
    "oracle-class AP": ("segmenter", "oracle_class_AP"),
    "objects found per frame %": ("segmenter", "frames", "found"),
    "tracks found %": ("segmenter", "tracks", "found"),
    **{f"own-track top-1 % {group}": ("segmenter", "tracks", "top1_of_found", group)
       for group in ("overall", "base", "novel")},
    **{f"slot switches % {variant}": ("segmenter", "slot_switch_rate", variant) for variant in SWITCH_VARIANTS},
}


def diagnostics(scale: Scale, runs_dir: str | Path) -> dict[str, dict]:
    """{model: its diagnostics report} for every model with one, sorted."""
    return {path.parents[1].name: read_json(path)
            for path in layout.find(layout.bench_dir(runs_dir, scale, "*") / layout.TOY_DIAGNOSTICS_FILE)}


def benchmark_rows(report: dict) -> dict[str, dict[str, float | None]]:
    """{benchmark: {column title: percentage or AP x 100, None where not measured}}."""
    rows = {}
    for benchmark in report["clip_grid"]:
        row = {}
        for title, (section, *keys) in COLUMNS.items():
            value = report.get(section, {}).get(benchmark)
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            row[title] = None if value is None else 100 * value
        rows[benchmark] = row
    return rows


def diagnostics_values(reports: dict[str, dict]) -> dict[str, float]:
    """The measured numbers flat, as summary.json lists them."""
    return {f"diagnostics/{model}/{benchmark} {title}": round(value, 3)
            for model, report in reports.items() for benchmark, row in benchmark_rows(report).items()
            for title, value in row.items() if value is not None}


def render_diagnostics(model: str, report: dict) -> str:
    """An HTML table (one row per benchmark) and a line on the training loss."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in COLUMNS)
    rows = []
    for benchmark, row in benchmark_rows(report).items():
        cells = "".join('<td class="cell undefined"><span class="ours">—</span></td>' if value is None else
                        f'<td class="cell measured"><span class="ours">{value:.1f}</span></td>' for value in row.values())
        rows.append(f"<tr><td>{html.escape(benchmark)}</td>{cells}</tr>")
    caption = (f"What bounds the toy experiment (<code>clipvis bench toy</code>, model {html.escape(model)}, frames "
               f"every {report['frame_step']}, tested at a short side of {report['infer_size'][0]} pixels): ground-truth "
               "objects whose mask survives at the CLIP stride; "
               "top-1 of CLIP pooled over ground-truth masks (a vanished mask counts as wrong), also for the objects "
               "that show over 6 % of the frame, and the share of its errors that get the colour right and the "
               "shape wrong; AP and oracle-class "
               "AP (each track labelled with its best-overlapping ground truth's class); ground-truth objects found, frame "
               "by frame, by a predicted mask (IoU &ge; 0.5); ground-truth tracks found by a "
               "predicted track (video IoU &ge; 0.5) and, of those, the share whose best-scored finder has their class "
               "(own-track top-1); slot switches.")
    table = (f'<table class="results" id="diagnostics"><caption>{caption}</caption><thead><tr><th>benchmark</th>'
             f'{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    training = report.get("training")
    if not training:
        return table
    trend = "still falling" if training["still_falling"] else "no longer falling"
    return table + (f'<p class="notes">Training loss over the last tenth of {training["iterations"]} iterations: '
                    f'{training["final_loss"]:.3f} (the tenth before: {training["previous_loss"]:.3f}), {trend}.</p>')
