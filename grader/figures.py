"""Figures a verdict carries to the report: numbers safe for JSON, and line-chart series.

A figure is either a short value (a number or a string) or a chart:
``{"series": [{"label", "x", "y", "role"?}, ...], "title", "xlabel", "ylabel"}`` with ``None``
where a value is missing or not finite. Every chart names both axes, with their unit when they
have one ("epoch", "perplexity"): a student reads the chart without the code that drew it.
A series with ``"role": "reference"`` (or labelled "reference") is what the student's (``"role": "student"``,
or labelled "yours") should match: the report draws the student's wide and solid, the reference's last,
thin and dashed, so both stay visible where they coincide.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

#: the roles of a series: the student's, and the one it should match
STUDENT, REFERENCE = "student", "reference"


def finite(value: Any) -> Optional[float]:
    """``value`` if it is a finite float, else None (a gap in a chart)."""
    return value if isinstance(value, float) and math.isfinite(value) else None


def rounded(value: Any, digits: int) -> Any:
    """A finite float rounded for display; anything else as text ("nan", "inf")."""
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else str(value)


def epochs(count: int) -> list[int]:
    """The x values of a per-epoch series: epochs are counted from 1, as the book's training loop prints them."""
    return list(range(1, count + 1))


def perplexity_chart(got: Sequence[float], want: Sequence[float], min_perplexity: Optional[float], title: str,
                     xlabel: str = "epoch", ylabel: str = "perplexity") -> dict:
    """Perplexity per epoch, the student's against the reference's, with the lowest reachable when known."""
    chart: dict[str, Any] = {
        "series": [
            {"label": "yours", "x": epochs(len(got)), "y": [finite(v) for v in got], "role": STUDENT},
            {"label": "reference", "x": epochs(len(want)), "y": list(want), "role": REFERENCE},
        ],
        "title": title,
        "xlabel": xlabel,
        "ylabel": ylabel,
    }
    if min_perplexity:
        chart["series"].append({"label": "lowest possible", "x": [1, max(len(want), 1)], "y": [min_perplexity] * 2})
    return chart
