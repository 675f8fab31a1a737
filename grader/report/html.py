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
    one_line,
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
    finite = [p for _, points in parsed for p in points if p is not None]
    chart: dict[str, Any] = {
        "title": one_line(title, 200),
        "xlabel": one_line(xlabel, 100),
        "ylabel": one_line(ylabel, 100),
        "width": str(width),
        "height": str(height),
        "lines": [],
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
    x0, x1, xstep = nice_ticks(min(p[0] for p in finite), max(p[0] for p in finite))
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

    chart["xticks"] = ticks(x0, x1, xstep, sx)
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
    for i, (label, points) in enumerate(parsed):
        segments: list[list[tuple[float, float]]] = [[]]
        for point in points:
            if point is None:
                if segments[-1]:
                    segments.append([])
            else:
                segments[-1].append(point)
        segments = [s for s in segments if s]
        chart["lines"].append(
            {
                "label": label,
                "color": _PALETTE[i % len(_PALETTE)],
                "dash": _DASHES[i % len(_DASHES)],
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
    chart["desc"] = "; ".join(descriptions) + "."
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


def figures_view(figures: Any) -> dict[str, list[Any]]:
    """Split figures into charts (values with ``"series"``) and key/value rows (the rest)."""
    charts: list[dict[str, Any]] = []
    rows: list[dict[str, str]] = []
    if not isinstance(figures, Mapping):
        return {"charts": charts, "rows": rows}
    for key, value in figures.items():
        name = one_line(key, 200)
        if isinstance(value, Mapping) and "series" in value:
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


def _check_view(check: CheckResult, number: str) -> dict[str, Any]:
    return {
        "number": number,
        "status": check.status,
        "label": status_label(check.status),
        "points": fmt_points(check.points),
        "max_points": fmt_points(check.max_points),
        "title": one_line(check.title, 300),
        "message": trim(clean_text(check.message).strip(), _MESSAGE_CHARS),
        "details": _block(check.details),
        "output": _block(check.output),
        "seconds": f"{check.seconds:.2f}" if check.seconds else "",
        "hidden": bool(check.hidden),
        "hooks": [one_line(h, 100) for h in check.hooks],
        # a student opening the report wants the explanation of a failure at once
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
    exercises = []
    for i, exercise in enumerate(report.exercises):
        checks = [_check_view(c, check_number(i, j)) for j, c in enumerate(exercise.checks)]
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
                "figures": figures_view(exercise.figures),
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
                "path": one_line(p.path, 1000),
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
