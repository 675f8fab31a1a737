"""Figures a verdict carries to the report: numbers safe for JSON, and line-chart series.

A figure is either a short value (a number or a string) or a chart:
``{"series": [{"label", "x", "y"}, ...], "title", "xlabel"?, "ylabel"?}`` with ``None``
where a value is missing or not finite.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence


def finite(value: Any) -> Optional[float]:
    """``value`` if it is a finite float, else None (a gap in a chart)."""
    return value if isinstance(value, float) and math.isfinite(value) else None


def rounded(value: Any, digits: int) -> Any:
    """A finite float rounded for display; anything else as text ("nan", "inf")."""
    return round(value, digits) if isinstance(value, float) and math.isfinite(value) else str(value)


def perplexity_chart(got: Sequence[float], want: Sequence[float], min_perplexity: Optional[float], title: str,
                     **axes: str) -> dict:
    """Perplexity per epoch, the student's against the reference's, with the lowest reachable when known."""
    chart: dict[str, Any] = {
        "series": [
            {"label": "yours", "x": list(range(1, len(got) + 1)), "y": [finite(v) for v in got]},
            {"label": "reference", "x": list(range(1, len(want) + 1)), "y": list(want)},
        ],
        "title": title,
        **axes,
    }
    if min_perplexity:
        chart["series"].append({"label": "lowest possible", "x": [1, len(want)], "y": [min_perplexity] * 2})
    return chart
