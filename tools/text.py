"""How the toolbox writes numbers for people: durations."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """42s, 4m12s, 1h03m."""
    seconds = round(float(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
