"""Self-contained HTML report.

The report is turned into plain view data first (:func:`build_context`, all
numbers formatted, charts reduced to coordinates), then rendered by the
templates in :func:`templates_dir`. Every text from the report may come from
student code; the templates rely on autoescaping and never mark report data
safe. Chart SVG is drawn by the templates from coordinates formatted here.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import jinja2

import grader
from grader import hookimpl
from grader.config import RunConfig
from grader.report import write_text_atomic
from grader.report.formatting import (
    check_number,
    clean_text,
    count_phrase,
    fmt_percent,
    fmt_points,
    hint_first,
    one_line,
    split_diagnosis,
    status_counts,
    status_label,
    trim,
)
from grader.results import ERROR, FAILED, CheckResult, GradingReport

REPORT_NAME = "report.html"

# caps keep a runaway print loop from producing a report no browser can open
_MESSAGE_CHARS = 2_000
_BLOCK_CHARS = 50_000
_FIGURE_TEXT_CHARS = 300
_CHART_POINTS = 1_000

#: Okabe-Ito colours (distinguishable with colour-vision deficiencies), paired
#: with dash patterns so that lines differ without colour too.
_PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
_DASHES = ("", "7 4", "2 3", "9 3 2 3", "4 2", "1 2")
#: the student's line: solid, wide, the first colour; the reference's: drawn last, thin and dashed in the text
#: colour, so that where the two coincide (a passing check) both stay visible, the reference inside the student's
_STUDENT_STYLE = {"color": _PALETTE[0], "dash": _DASHES[0], "width": "3.5"}
_REFERENCE_STYLE = {"color": "#1f2328", "dash": "6 4", "width": "1.5"}
_LINE_WIDTH = "2"
#: an x axis of at most this many whole numbers (epochs, steps) gets a tick at each
_ALL_INTEGER_TICKS = 12


def templates_dir() -> Path:
    """Folder of the report templates: inside the package when installed, else the checkout's."""
    package = Path(grader.__file__).resolve().parent
    for candidate in (package / "templates", package.parent / "templates"):
        if (candidate / "report.html").is_file():
            return candidate
    raise FileNotFoundError(
        f"report templates not found in {package / 'templates'} or {package.parent / 'templates'}"
    )


@functools.lru_cache(maxsize=None)
def environment() -> jinja2.Environment:
    """The one Jinja environment of the HTML report."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["points"] = fmt_points
    return env


# --------------------------------------------------------------------------
# Charts: numbers in, coordinates out
# --------------------------------------------------------------------------


def _finite(value: Any) -> Optional[float]:
    if isinstance(value, (str, bytes)):
        return None  # numbers only; "1e3" in a figure is a label, not data
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def nice_ticks(lo: float, hi: float, count: int = 5) -> tuple[float, float, float]:
    """``(start, stop, step)`` with a 1-2-2.5-5 step covering ``[lo, hi]`` in about ``count`` steps."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        step = factor * magnitude
        if (hi - lo) / step <= count:
            break
    start = math.floor(lo / step + 1e-9) * step
    stop = math.ceil(hi / step - 1e-9) * step
    return start, stop, step


def exact_ticks(lo: float, hi: float, count: int = 6) -> tuple[float, float, list[float]]:
    """``(lo, hi, ticks)`` for an axis that spans exactly ``[lo, hi]``: an x axis starts where its data starts.

    Epochs counted from 1 show 1 first, not a padded 0 no epoch ever had: whole-number ranges of a few values
    get a tick at each, longer ones nice ticks plus their first value.
    """
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        start, stop, step = nice_ticks(lo, hi, count)
        return start, stop, [start + i * step for i in range(int(round((stop - start) / step)) + 1)]
    whole = float(lo).is_integer() and float(hi).is_integer()
    if whole and hi - lo <= _ALL_INTEGER_TICKS:
        return lo, hi, [lo + i for i in range(int(hi - lo) + 1)]
    _, _, step = nice_ticks(lo, hi, count)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = [first + i * step for i in range(int(math.floor((hi - first) / step + 1e-9)) + 1)]
    if whole and (not ticks or ticks[0] - lo >= 0.6 * step):
        ticks.insert(0, lo)
    return lo, hi, ticks


def _tick_label(value: float, step: float) -> str:
    if abs(value) < step * 1e-9:
        value = 0.0
    if abs(value) >= 1e6 or (value and abs(value) < 1e-4):
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step / 10.0 ** math.floor(math.log10(step) + 1e-9), 6) == 2.5:
        decimals += 1
    return f"{value:.{decimals}f}"


def _num(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _as_list(values: Any) -> Optional[list[Any]]:
    # arrays and tensors slip into figures now and then; plot them rather than drop them
    if hasattr(values, "tolist") and not isinstance(values, (str, bytes)):
        values = values.tolist()
    return list(values) if isinstance(values, (list, tuple, range)) else None


def _series_points(entry: Mapping[str, Any]) -> list[Optional[tuple[float, float]]]:
    """Finite (x, y) pairs; ``None`` marks a gap where a value was missing or not finite."""
    ys, xs = _as_list(entry.get("y")), _as_list(entry.get("x"))
    if ys is None:
        return []
    if xs is None:
        xs = list(range(len(ys)))
    points: list[Optional[tuple[float, float]]] = []
    for x, y in zip(xs, ys):
        fx, fy = _finite(x), _finite(y)
        points.append((fx, fy) if fx is not None and fy is not None else None)
    if len(points) > _CHART_POINTS:
        stride = math.ceil(len(points) / _CHART_POINTS)
        points = points[::stride]
    return points


def series_role(entry: Mapping[str, Any]) -> str:
    """``"student"``, ``"reference"`` or ``""``: from the series' ``role``, else from its label ("yours", "reference")."""
    role = entry.get("role")
    if role in ("student", "reference"):
        return str(role)
    label = entry.get("label")
    label = label.strip().lower() if isinstance(label, str) else ""
    if label.startswith("reference"):
        return "reference"
    if label == "yours" or label.startswith(("yours ", "your ")):
        return "student"
    return ""


def line_chart(
    series: Any,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 560,
    height: int = 260,
) -> dict[str, Any]:
    """View data for an SVG line chart of ``[{"label", "x", "y"}, ...]``.

    Coordinates and tick labels are strings formatted here from numbers; labels
    and titles stay plain strings for the template to escape.
    """
    entries = [e for e in series if isinstance(e, Mapping)] if isinstance(series, (list, tuple)) else []
    parsed = [(clean_text(e.get("label", f"series {i + 1}")), _series_points(e)) for i, e in enumerate(entries)]
    roles = [series_role(e) for e in entries]
    finite = [p for _, points in parsed for p in points if p is not None]
    chart: dict[str, Any] = {
        "title": one_line(title, 200),
        "xlabel": one_line(xlabel, 100),
        "ylabel": one_line(ylabel, 100),
        "width": str(width),
        "height": str(height),
        "lines": [],
        "drawn": [],
        "xticks": [],
        "yticks": [],
        "empty": not finite,
        "desc": "",
    }
    if not finite:
        chart["desc"] = "No finite data to plot."
        return chart

    left, right, top, bottom = 64, 16, 12, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    x0, x1, xticks = exact_ticks(min(p[0] for p in finite), max(p[0] for p in finite))
    y0, y1, ystep = nice_ticks(min(p[1] for p in finite), max(p[1] for p in finite))
    if not all(math.isfinite(v) for v in (x0, x1, y0, y1)) or x1 == x0 or y1 == y0:
        chart.update(empty=True, desc="Values too large to plot.")
        return chart

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (y1 - y) / (y1 - y0) * plot_h

    def ticks(lo: float, hi: float, step: float, to_px: Any) -> list[dict[str, str]]:
        n = int(round((hi - lo) / step))
        return [{"pos": _num(to_px(lo + i * step)), "label": _tick_label(lo + i * step, step)} for i in range(n + 1)]

    xstep = min((b - a for a, b in zip(xticks, xticks[1:])), default=1.0) or 1.0
    chart["xticks"] = [{"pos": _num(sx(x)), "label": _tick_label(x, xstep)} for x in xticks]
    chart["yticks"] = ticks(y0, y1, ystep, sy)
    chart["plot"] = {
        "left": _num(left),
        "right": _num(left + plot_w),
        "top": _num(top),
        "bottom": _num(top + plot_h),
        "xmid": _num(left + plot_w / 2),
        "ymid": _num(top + plot_h / 2),
        "xlabel_y": _num(height - 6),
        "xtick_y": _num(top + plot_h + 16),
        "tick_end": _num(top + plot_h + 4),
        "ytick_x": _num(left - 6),
        "ylabel_x": _num(14),
    }
    descriptions = []
    # the other lines take the palette in turn, after the student's colour when the student has a line
    others = 1 if "student" in roles else 0
    for (label, points), role in zip(parsed, roles):
        segments: list[list[tuple[float, float]]] = [[]]
        for point in points:
            if point is None:
                if segments[-1]:
                    segments.append([])
            else:
                segments[-1].append(point)
        segments = [s for s in segments if s]
        reference = role == "reference"
        if reference:
            style = dict(_REFERENCE_STYLE)
        elif role == "student":
            style = dict(_STUDENT_STYLE)
        else:
            style = {"color": _PALETTE[others % len(_PALETTE)], "dash": _DASHES[others % len(_DASHES)],
                     "width": _LINE_WIDTH}
            others += 1
        chart["lines"].append(
            {
                "label": label,
                **style,
                "reference": reference,
                "polylines": [" ".join(f"{_num(sx(x))},{_num(sy(y))}" for x, y in s) for s in segments if len(s) > 1],
                "dots": [{"cx": _num(sx(s[0][0])), "cy": _num(sy(s[0][1]))} for s in segments if len(s) == 1],
            }
        )
        ys = [p[1] for s in segments for p in s]
        if ys:
            descriptions.append(
                f"{one_line(label, 80)}: {len(ys)} points, y from {min(ys):.4g} to {max(ys):.4g}"
            )
        else:
            descriptions.append(f"{one_line(label, 80)}: no finite points")
    axes = [f"{name} axis: {label}" for name, label in (("x", chart["xlabel"]), ("y", chart["ylabel"])) if label]
    chart["desc"] = "; ".join(axes + descriptions) + "."
    # drawn in this order: the reference last, on top of the line it may hide (the legend keeps the given order)
    chart["drawn"] = [line for line in chart["lines"] if not line["reference"]] + [
        line for line in chart["lines"] if line["reference"]]
    return chart


# --------------------------------------------------------------------------
# View data
# --------------------------------------------------------------------------


def _figure_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return one_line(value, _FIGURE_TEXT_CHARS)
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return one_line(text, _FIGURE_TEXT_CHARS)


def _chart_key(value: Any) -> str:
    """The same chart's data, however it reached the report (the same object, or read back from JSON)."""
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def figures_view(figures: Any, drawn: Optional[set[str]] = None) -> dict[str, list[Any]]:
    """Split figures into charts (values with ``"series"``) and key/value rows (the rest).

    A chart whose data is in ``drawn`` (a check of the exercise draws it already) is left out: one chart per data.
    """
    charts: list[dict[str, Any]] = []
    rows: list[dict[str, str]] = []
    if not isinstance(figures, Mapping):
        return {"charts": charts, "rows": rows}
    for key, value in figures.items():
        name = one_line(key, 200)
        if isinstance(value, Mapping) and "series" in value:
            if drawn is not None and _chart_key(value) in drawn:
                continue
            charts.append(
                line_chart(
                    value["series"],
                    title=str(value.get("title") or name),
                    xlabel=str(value.get("xlabel") or ""),
                    ylabel=str(value.get("ylabel") or ""),
                )
            )
        else:
            rows.append({"key": name, "value": _figure_text(value)})
    return {"charts": charts, "rows": rows}


def _block(text: str) -> str:
    text = clean_text(text).rstrip()
    if len(text) > _BLOCK_CHARS:
        return text[:_BLOCK_CHARS] + f"\n… ({len(text) - _BLOCK_CHARS} more characters not shown)"
    return text


def anchor(number: str) -> str:
    """The id of a check's row, e.g. ``check-1.5``: a check saying "same cause as" links to it."""
    return f"check-{number}"


def diagnosis_view(message: str) -> dict[str, str]:
    """The parts of a diagnosis, to show the fix on its own line: ``{"mistake", "fix"}``, or the whole as mistake."""
    mistake, fix = split_diagnosis(message)
    return {"mistake": mistake, "fix": fix}


def cause_view(message: str, carrier_id: str, carriers: Mapping[str, Mapping[str, str]]) -> Optional[dict[str, str]]:
    """A "same cause as <check id> (...)" message split around the id, which the report shows as a link.

    ``None`` when the check named is not in the report (nothing to link to).
    """
    carrier = carriers.get(carrier_id)
    if carrier is None:
        return None
    before, found, after = message.partition(carrier_id) if carrier_id else ("", "", "")
    if not found:  # worded otherwise: the message as it is, then the link
        before, after = message.rstrip() + " (see ", ")"
    return {"before": before, "after": after, "href": "#" + carrier["anchor"], "text": f"check {carrier['number']}",
            "title": carrier["title"]}


#: how a diagnosed check's details begin (grader/judge/diagnosis.py); the report heads them with these words
_SAW = "What the check saw: "


def _observation(details: str) -> str:
    return details[len(_SAW):] if details.startswith(_SAW) else details


def _check_view(check: CheckResult, number: str, carriers: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    message = trim(clean_text(hint_first(check.message)).strip(), _MESSAGE_CHARS)
    return {
        "number": number,
        "anchor": anchor(number),
        "status": check.status,
        "label": status_label(check.status),
        "points": fmt_points(check.points),
        "max_points": fmt_points(check.max_points),
        "title": one_line(check.title, 300),
        "message": message,
        # a recognised mistake is the first thing a student reads; the check's own observation stays below it
        "diagnosis": diagnosis_view(message) if check.misconception and not check.same_cause_as else None,
        "cause": cause_view(message, check.same_cause_as, carriers) if check.same_cause_as else None,
        "details": _block(_observation(check.details) if check.misconception or check.same_cause_as else check.details),
        "output": _block(check.output),
        "seconds": f"{check.seconds:.2f}" if check.seconds else "",
        "hidden": bool(check.hidden),
        "hooks": [one_line(h, 100) for h in check.hooks],
        # a student opening the report wants the explanation of a failure, and its figures, at once
        "open": check.status in (FAILED, ERROR),
        "figures": figures_view(check.figures),
    }


def _counts_view(statuses: Sequence[str]) -> list[dict[str, Any]]:
    return [
        {"status": s, "label": status_label(s), "phrase": count_phrase(s, n)}
        for s, n in status_counts(statuses)
    ]


def _bar(points: float, max_points: float) -> str:
    try:
        value = 100.0 * float(points) / float(max_points) if max_points else 0.0
    except (TypeError, ValueError):
        value = 0.0
    value = min(max(value if math.isfinite(value) else 0.0, 0.0), 100.0)
    return f"{value:.1f}"


def build_context(report: GradingReport) -> dict[str, Any]:
    """Everything the templates show, as plain strings, numbers, lists and dicts."""
    carriers = {
        c.check_id: {"number": check_number(i, j), "anchor": anchor(check_number(i, j)), "title": one_line(c.title, 300)}
        for i, exercise in enumerate(report.exercises) for j, c in enumerate(exercise.checks)
    }
    exercises = []
    for i, exercise in enumerate(report.exercises):
        checks = [_check_view(c, check_number(i, j), carriers) for j, c in enumerate(exercise.checks)]
        # the engine gathers the checks' charts for the exercise too: each is drawn once, with its check
        drawn = {_chart_key(v) for c in exercise.checks if isinstance(c.figures, Mapping)
                 for v in c.figures.values() if isinstance(v, Mapping) and "series" in v}
        exercises.append(
            {
                "anchor": f"exercise-{i + 1}",
                "number": str(i + 1),
                "name": one_line(exercise.name, 200),
                "title": one_line(exercise.title, 300),
                "points": fmt_points(exercise.points),
                "max_points": fmt_points(exercise.max_points),
                "percent": fmt_percent(exercise.points, exercise.max_points),
                "bar": _bar(exercise.points, exercise.max_points),
                "counts": _counts_view([c.status for c in exercise.checks]),
                "checks": checks,
                "figures": figures_view(exercise.figures, drawn),
            }
        )
    return {
        "submission": one_line(report.submission, 1000),
        "version": one_line(report.grader_version, 50),
        "configuration": one_line(report.configuration, 1000),
        "seconds": fmt_points(report.seconds) if report.seconds else "",
        "points": fmt_points(report.points),
        "max_points": fmt_points(report.max_points),
        "percent": fmt_percent(report.points, report.max_points),
        "bar": _bar(report.points, report.max_points),
        "counts": _counts_view([c.status for c in report.all_checks()]),
        "problems": [
            {
                "path": one_line(p.where, 1000),
                "message": trim(clean_text(p.message).strip(), _MESSAGE_CHARS),
                "severity": "warning" if p.severity == "warning" else "error",
            }
            for p in report.problems
        ],
        "notices": [trim(clean_text(n).strip(), _MESSAGE_CHARS) for n in report.notices],
        "implemented": [
            {"hook": one_line(hook, 200), "path": one_line(path, 1000)}
            for hook, path in sorted(report.implemented.items(), key=lambda kv: str(kv[0]))
        ],
        "corpus": figures_view(report.corpus)["rows"],
        "exercises": exercises,
    }


# --------------------------------------------------------------------------
# Rendering and the plugin
# --------------------------------------------------------------------------


def render_html(report: GradingReport) -> str:
    """The report as one self-contained HTML page."""
    return environment().get_template("report.html").render(**build_context(report))


def write_html(report: GradingReport, out_dir: Path | str) -> Path:
    """Write ``out_dir/report.html`` (creating ``out_dir``) and return its path; the file is whole or absent."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out / REPORT_NAME, render_html(report))


@hookimpl
def grader_report(report: GradingReport, config: RunConfig) -> None:
    """Write report.html into ``config.out_dir`` when one is set."""
    if config.out_dir is not None:
        write_html(report, config.out_dir)
