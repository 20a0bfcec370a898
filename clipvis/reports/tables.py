"""Tables I–VI with our measurements beside the paper's numbers, rendered as Markdown, LaTeX and HTML.

Every cell reads "ours / paper". Ours comes from the run files and nothing else:

- score columns: runs/{scale}/{model}/score/{benchmark}/{variant}/metrics.json (AP x 100, one decimal);
  for benchmarks without public ground truth, runs/{scale}/{model}/infer/{benchmark}/{variant}/submission.zip
  makes the cell "server" (linked to the zip);
- complexity columns: runs/{scale}/{model}/bench/complexity.json (GFLOPs per frame, FPS);
- matching columns: runs/{scale}/{model}/infer/{benchmark}/{variant}/matching.json (slot switch rate x 100).

A file that is not there makes the cell "missing"; nothing is ever filled in. A run whose detections all
scored 0 (metrics.json's counts) gets a note under its table: its AP measures an arbitrary order.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clipvis import layout
from clipvis.errors import InputError
from clipvis.files import read_json, write_text
from clipvis.reports.paper_numbers import TABLES, Column, PaperTable, Scale

MISSING = "missing"
SERVER = "server"
NOT_AT_TOY = "n/a at toy scale"
UNDEFINED = "undefined"
DASH = "—"

LEGEND = (f"Each cell: ours / paper. Ours: AP x 100 (one decimal) from our run files; {MISSING}: the run has not "
          f"been made; {SERVER}: no public ground truth, the predictions are zipped for the official server "
          f"(linked); {NOT_AT_TOY}: no toy benchmark stands for this dataset; {UNDEFINED}: no ground truth in "
          f"that category group; {DASH}: not ours to measure (another method or a row without a model at this "
          f"scale), or not reported by the paper.")
SCALE_NOTES = {
    "toy": ("Toy scale: toy_lvvis stands for LV-VIS val and toy_ovis for OVIS; the paper's numbers, from the real "
            "datasets, are beside ours for orientation, not as targets."),
    "paper": "Paper scale: the real datasets and CLIP weights.",
}

Status = Literal["measured", "missing", "server", "n/a", "not ours", "undefined"]


@dataclass(frozen=True)
class Cell:
    ours: str  # what is shown for our measurement
    paper: str  # the paper's number as printed, or DASH
    status: Status
    value: float | None = None  # our number, unrounded (AP x 100, GFLOPs per frame, FPS)
    link: Path | None = None  # the submission zip of a server cell


@dataclass(frozen=True)
class TableRow:
    labels: tuple[str, ...]
    run: str  # "model · variant", "" for rows that are not ours at this scale
    cells: tuple[Cell, ...]


@dataclass(frozen=True)
class TableGroup:
    title: str
    rows: tuple[TableRow, ...]


@dataclass(frozen=True)
class Table:
    key: str
    title: str
    label_headers: tuple[str, ...]
    column_groups: tuple[str, ...]  # per numeric column
    column_titles: tuple[str, ...]
    groups: tuple[TableGroup, ...]
    notes: tuple[str, ...]


# ------------------------------------------------------------------------------------ measuring


def score_path(runs_dir: Path, scale: Scale, model: str, benchmark: str, variant: str) -> Path:
    return layout.variant_score_dir(runs_dir, scale, model, benchmark, variant) / layout.METRICS_FILE


def submission_path(runs_dir: Path, scale: Scale, model: str, benchmark: str, variant: str) -> Path:
    return layout.variant_infer_dir(runs_dir, scale, model, benchmark, variant) / layout.SUBMISSION_FILE


def matching_path(runs_dir: Path, scale: Scale, model: str, benchmark: str, variant: str) -> Path:
    return layout.variant_infer_dir(runs_dir, scale, model, benchmark, variant) / layout.MATCHING_FILE


def complexity_path(runs_dir: Path, scale: Scale, model: str) -> Path:
    return layout.bench_dir(runs_dir, scale, model) / layout.COMPLEXITY_FILE


def measure(runs_dir: Path, scale: Scale, model: str, variant: str, column: Column) -> Cell:
    """Our cell for one (model, variant) and column, paper side left blank (DASH)."""
    if column.source == "complexity":
        path = complexity_path(runs_dir, scale, model)
        if not path.exists():
            return Cell(MISSING, DASH, "missing")
        return _number_cell(_read_number(path, (column.metric,)), column.metric)
    benchmark = column.benchmark_at(scale)
    if benchmark is None:
        return Cell(NOT_AT_TOY, DASH, "n/a")
    if column.source == "matching":
        path = matching_path(runs_dir, scale, model, benchmark, variant)
        if not path.exists():
            return Cell(MISSING, DASH, "missing")
        value = _read_number(path, (column.metric,))
        return _number_cell(None if value is None else 100 * value, column.metric)
    if not _has_public_gt(benchmark):
        zip_path = submission_path(runs_dir, scale, model, benchmark, variant)
        return Cell(SERVER, DASH, "server", link=zip_path) if zip_path.exists() else Cell(MISSING, DASH, "missing")
    path = score_path(runs_dir, scale, model, benchmark, variant)
    if not path.exists():
        return Cell(MISSING, DASH, "missing")
    value = _read_number(path, ("metrics", column.metric))
    return _number_cell(None if value is None else 100 * value, column.metric)


def _read_number(path: Path, keys: tuple[str, ...]) -> float | None:
    """The number (or null) at `keys` in a JSON file; a missing key or a non-number is an InputError."""
    value = read_json(path)
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise InputError(path, ".".join(keys[: depth + 1]), "missing")
        value = value[key]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise InputError(path, ".".join(keys), f"expected a number or null, got {value!r}")
    return value


def _number_cell(value: float | None, metric: str) -> Cell:
    if value is None:
        return Cell(UNDEFINED, DASH, "undefined")
    return Cell(format_number(value, metric), DASH, "measured", value=float(value))


def format_number(value: float, metric: str) -> str:
    """AP-like and FPS numbers with one decimal; GFLOPs as the paper prints them ("244.1G"),
    with three significant digits below 10 G (toy models)."""
    if metric == "gflops_per_frame":
        return f"{value:.1f}G" if value >= 10 else f"{value:.3g}G"
    return f"{value:.1f}"


def _has_public_gt(benchmark: str) -> bool:
    from clipvis.data.registry import get_benchmark

    return get_benchmark(benchmark).has_public_gt


# ------------------------------------------------------------------------------------ building


def build_tables(scale: Scale, runs_dir: str | Path) -> list[Table]:
    """Tables I–VI at `scale`, each cell measured from `runs_dir` with the paper's number beside it."""
    return [build_table(paper_table, scale, Path(runs_dir)) for paper_table in TABLES]


def build_table(paper_table: PaperTable, scale: Scale, runs_dir: Path) -> Table:
    groups = []
    for group in paper_table.groups:
        rows = []
        for row in group.rows:
            model = row.models.get(scale)
            cells = []
            for column, paper in zip(paper_table.columns, row.paper, strict=True):
                ours = measure(runs_dir, scale, model, row.variant, column) if model else Cell(DASH, DASH, "not ours")
                paper_text = DASH if paper is None else format_number(paper, column.metric)
                cells.append(Cell(ours.ours, paper_text, ours.status, ours.value, ours.link))
            rows.append(TableRow(row.labels, f"{model} · {row.variant}" if model else "", tuple(cells)))
        groups.append(TableGroup(group.title, tuple(rows)))
    notes = (LEGEND, SCALE_NOTES[scale], *_released_weights_note(scale, runs_dir), *paper_table.notes,
             *_complexity_notes(paper_table, scale, runs_dir), *_zero_score_notes(paper_table, scale, runs_dir))
    return Table(paper_table.key, paper_table.title, paper_table.label_headers,
                 tuple(column.group for column in paper_table.columns),
                 tuple(column.title for column in paper_table.columns), tuple(groups), notes)


def measured_values(tables: list[Table]) -> dict[str, float]:
    """Every measured cell as a flat {"table2/default · woc_no_tkm/LV-VIS AP": value} (for `dvc metrics`)."""
    values = {}
    for table in tables:
        for group in table.groups:
            for row in group.rows:
                for column_group, title, cell in zip(table.column_groups, table.column_titles, row.cells):
                    if cell.status == "measured":
                        values[f"{table.key}/{row.run}/{column_group} {title}".strip()] = round(cell.value, 3)
    return values


def _released_weights_note(scale: Scale, runs_dir: Path) -> list[str]:
    """Which models ran on the authors' released checkpoints (imported by the pipeline, not trained here)."""
    imported = sorted(path.parent.parent.name for path in (Path(runs_dir) / scale).glob("*/released/model.pt"))
    if not imported:
        return []
    return [f"Weights: the authors' released checkpoints, imported with `clipvis import-checkpoint` and not "
            f"trained here ({', '.join(imported)})."]


def _complexity_notes(paper_table: PaperTable, scale: Scale, runs_dir: Path) -> list[str]:
    """Where our FLOPs/FPS were measured (device, frame size), one note per measured model."""
    if not any(column.source == "complexity" for column in paper_table.columns):
        return []
    notes = []
    for group in paper_table.groups:
        for row in group.rows:
            model = row.models.get(scale)
            path = complexity_path(runs_dir, scale, model) if model else None
            if path is not None and path.exists():
                info = read_json(path)
                notes.append(f"Ours, {model}: measured on {info.get('device', '?')}, frame size "
                             f"{info.get('frame_size', '?')}.")
    return notes


def _zero_score_notes(paper_table: PaperTable, scale: Scale, runs_dir: Path) -> list[str]:
    """One note per scored (model, variant, benchmark) of the table whose detections all scored exactly 0
    (metrics.json's counts): its AP measures an arbitrary order, not the method's ranking."""
    benchmarks = sorted({column.benchmark_at(scale) for column in paper_table.columns
                         if column.source == "score"} - {None})
    runs = dict.fromkeys((row.models[scale], row.variant) for group in paper_table.groups for row in group.rows
                         if scale in row.models)  # in table order, each once
    notes = []
    for (model, variant), benchmark in ((run, benchmark) for run in runs for benchmark in benchmarks):
        path = score_path(runs_dir, scale, model, benchmark, variant)
        counts = read_json(path).get("counts", {}) if path.exists() else {}
        predictions = counts.get("predictions")
        if predictions and counts.get("predictions_scored_zero") == predictions:
            notes.append(f"Ours, {model} · {variant} on {benchmark}: all {predictions} detections scored 0, so its "
                         f"AP ranks them in an arbitrary order. The usual cause: a ReLU mask-IoU head that died in "
                         f"training (its output negative for every input, it predicts IoU 0 for every query and "
                         f"gets no gradient again; `clipvis train` warns of it).")
    return notes


# ------------------------------------------------------------------------------------ rendering


def render_markdown(table: Table, link_base: Path) -> str:
    headers = [*table.label_headers, "our run (model · variant)",
               *(f"{group} {title}".strip() for group, title in zip(table.column_groups, table.column_titles))]
    lines = [f"### {table.title}", "", "| " + " | ".join(headers) + " |",
             "|" + "---|" * len(table.label_headers) + "---|" + "---:|" * len(table.column_titles)]
    for group in table.groups:
        if group.title:
            lines.append(f"| **{group.title}** |" + " |" * (len(headers) - 1))
        for row in group.rows:
            cells = [_markdown_cell(cell, link_base) for cell in row.cells]
            lines.append("| " + " | ".join([*row.labels, f"`{row.run}`" if row.run else "", *cells]) + " |")
    lines += ["", *(f"- {note}" for note in table.notes), ""]
    return "\n".join(lines)


def _markdown_cell(cell: Cell, link_base: Path) -> str:
    ours = f"[{cell.ours}]({_relative(cell.link, link_base)})" if cell.link else cell.ours
    return f"{ours} / {cell.paper}"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "✓": r"\checkmark", "×": r"$\times$", "—": "--", "·": r"$\cdot$"}


def _latex(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(char, char) for char in text)


def render_latex(table: Table, link_base: Path) -> str:
    labels, numbers = len(table.label_headers) + 1, len(table.column_titles)
    lines = [r"% Needs \usepackage{booktabs,amssymb,hyperref}. Each cell: ours / paper.",
             r"\begin{table*}[t]", r"\centering", rf"\caption{{{_latex(table.title)}}}", rf"\label{{tab:{table.key}}}",
             r"\begin{tabular}{" + "l" * labels + "r" * numbers + "}", r"\toprule"]
    spans = _spans(table.column_groups)
    if any(group for group, _ in spans):
        heads, rules, start = [], [], labels + 1
        for group, width in spans:
            heads.append(rf"\multicolumn{{{width}}}{{c}}{{{_latex(group)}}}")
            if group:
                rules.append(rf"\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        lines += [" & " * labels + " & ".join(heads) + r" \\", " ".join(rules)]
    headers = [*table.label_headers, "our run", *table.column_titles]
    lines += [" & ".join(_latex(header) for header in headers) + r" \\", r"\midrule"]
    for group in table.groups:
        if group.title:
            lines.append(rf"\multicolumn{{{labels + numbers}}}{{l}}{{\emph{{{_latex(group.title)}}}}} \\")
        for row in group.rows:
            cells = [_latex_cell(cell, link_base) for cell in row.cells]
            run = rf"\texttt{{{_latex(row.run)}}}" if row.run else ""
            lines.append(" & ".join([*map(_latex, row.labels), run, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [rf"\par\footnotesize {_latex(note)}" for note in table.notes]
    lines += [r"\end{table*}", ""]
    return "\n".join(lines)


def _latex_cell(cell: Cell, link_base: Path) -> str:
    ours = _latex(cell.ours)
    if cell.link:
        ours = rf"\href{{{_relative(cell.link, link_base)}}}{{{ours}}}"
    return f"{ours} / {_latex(cell.paper)}"


def render_html(table: Table, link_base: Path) -> str:
    """A <table> fragment (with caption and notes) for embedding; styles are the page's."""
    labels = len(table.label_headers) + 1
    spans = _spans(table.column_groups)
    lines = [f'<table class="results" id="{table.key}">', f"<caption>{html.escape(table.title)}</caption>",
             "<thead>"]
    if any(group for group, _ in spans):
        heads = "".join(f'<th colspan="{width}">{html.escape(group)}</th>' for group, width in spans)
        lines.append(f'<tr><th colspan="{labels}"></th>{heads}</tr>')
    headers = [*table.label_headers, "our run (model · variant)", *table.column_titles]
    lines += ["<tr>" + "".join(f"<th>{html.escape(header)}</th>" for header in headers) + "</tr>", "</thead>",
              "<tbody>"]
    for group in table.groups:
        if group.title:
            lines.append(f'<tr class="group"><th colspan="{labels + len(table.column_titles)}">'
                         f"{html.escape(group.title)}</th></tr>")
        for row in group.rows:
            label_cells = "".join(f"<td>{html.escape(label)}</td>" for label in row.labels)
            run = f"<td><code>{html.escape(row.run)}</code></td>"
            cells = "".join(_html_cell(cell, link_base) for cell in row.cells)
            lines.append(f"<tr>{label_cells}{run}{cells}</tr>")
    lines += ["</tbody>", "</table>", '<ul class="notes">', *(f"<li>{html.escape(note)}</li>" for note in table.notes),
              "</ul>", ""]
    return "\n".join(lines)


def _html_cell(cell: Cell, link_base: Path) -> str:
    ours = html.escape(cell.ours)
    if cell.link:
        ours = f'<a href="{html.escape(str(_relative(cell.link, link_base)))}">{ours}</a>'
    return (f'<td class="cell {_CSS_CLASSES[cell.status]}"><span class="ours">{ours}</span>'
            f' / <span class="paper">{html.escape(cell.paper)}</span></td>')


_CSS_CLASSES = {"measured": "measured", "missing": "missing", "server": "server", "n/a": "na",
                "not ours": "not-ours", "undefined": "undefined"}


def _spans(groups: tuple[str, ...]) -> list[tuple[str, int]]:
    """Consecutive equal column groups as (group, width)."""
    spans: list[tuple[str, int]] = []
    for group in groups:
        if spans and spans[-1][0] == group:
            spans[-1] = (group, spans[-1][1] + 1)
        else:
            spans.append((group, 1))
    return spans


def _relative(path: Path, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


RENDERERS = {"md": render_markdown, "tex": render_latex, "html": render_html}


def write_tables(tables: list[Table], out_dir: str | Path) -> list[Path]:
    """table1.md, table1.tex, table1.html, ... in `out_dir` (links relative to it), each written atomically."""
    out_dir = Path(out_dir)
    written = []
    for table in tables:
        for suffix, render in RENDERERS.items():
            path = out_dir / f"{table.key}.{suffix}"
            write_text(path, render(table, out_dir))
            written.append(path)
    return written
