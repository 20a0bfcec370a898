"""How well each model's mask-IoU head predicts its masks' IoU (`clipvis bench iou-head`), for the report.

Read from runs/{scale}/{model}/bench/iou_head.json. Shown in index.html as one row per (model, benchmark) beside
Table IV, whose rows (a) and (b) it explains, and listed flat in summary.json
("iou_head/{model}/{benchmark} {column}").
"""

from __future__ import annotations

import html
from pathlib import Path

from clipvis import layout
from clipvis.files import read_json
from clipvis.reports.paper_numbers import Scale

# column title -> where its number lies in the report of one benchmark
COLUMNS = {
    "Spearman, all queries": ("spearman",),
    "mean abs. error, all queries": ("mean_abs_error",),
    "Spearman, confident queries": ("confident", "spearman"),
    "mean abs. error, confident queries": ("confident", "mean_abs_error"),
    "mean predicted IoU, confident": ("confident", "mean_predicted"),
    "mean true IoU, confident": ("confident", "mean_true"),
}


def iou_heads(scale: Scale, runs_dir: str | Path) -> dict[str, dict]:
    """{model: its iou_head.json report} for every model with one, sorted."""
    return {path.parents[1].name: read_json(path)
            for path in layout.find(layout.bench_dir(runs_dir, scale, "*") / layout.IOU_HEAD_FILE)}


def benchmark_rows(report: dict) -> dict[str, dict[str, float | None]]:
    """{benchmark: {column title: number, None where undefined}}."""
    rows = {}
    for benchmark, found in report["benchmarks"].items():
        row = {}
        for title, keys in COLUMNS.items():
            value = found
            for key in keys:
                value = value.get(key)
            row[title] = value
        rows[benchmark] = row
    return rows


def iou_head_values(reports: dict[str, dict]) -> dict[str, float]:
    """The measured numbers flat, as summary.json lists them."""
    return {f"iou_head/{model}/{benchmark} {title}": value
            for model, report in reports.items() for benchmark, row in benchmark_rows(report).items()
            for title, value in row.items() if value is not None}


def render_iou_heads(reports: dict[str, dict]) -> str:
    """An HTML table: one row per (model, benchmark)."""
    head = "".join(f"<th>{html.escape(title)}</th>" for title in COLUMNS)
    rows = []
    for model, report in reports.items():
        head_kind = f"{report['iou_head_input']}, {report['iou_activation']}"
        for benchmark, row in benchmark_rows(report).items():
            cells = "".join('<td class="cell undefined"><span class="ours">—</span></td>' if value is None else
                            f'<td class="cell measured"><span class="ours">{value:.2f}</span></td>'
                            for value in row.values())
            rows.append(f"<tr><td><code>{html.escape(model)}</code></td><td>{html.escape(head_kind)}</td>"
                        f"<td>{html.escape(benchmark)}</td>{cells}</tr>")
    first = next(iter(reports.values()))
    caption = ("Table IV's heads themselves (ours; the paper has no such table, <code>clipvis bench iou-head</code>): "
               "how well each model's mask-IoU head predicts the IoU of its own masks with the ground truth they "
               f"overlap most, over every query of every {first['frame_step']}th frame that shows an object. Spearman: "
               "rank correlation of predicted and true IoU (does the head rank masks by quality; — where the head "
               "predicts one value for every query, as a dead ReLU does); mean absolute error (is it calibrated); "
               f"confident queries: object probability &ge; {first['confident']:g}, the ones the method's score ranks "
               "high. In Table IV's rows (a) and (b) the IoU score multiplies the object score, which can hide the "
               "difference between heads; part (c) ranks by the IoU score alone.")
    return (f'<table class="results" id="iou_heads"><caption>{caption}</caption><thead><tr><th>model</th>'
            f'<th>IoU head (input, activation)</th><th>benchmark</th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')
