"""What every benchmark reports of repeated measurements."""

from __future__ import annotations

import statistics


def spread(values: list[float], digits: int = 2) -> dict[str, float]:
    """Min, median and max of ``values``, rounded to ``digits``."""
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }
