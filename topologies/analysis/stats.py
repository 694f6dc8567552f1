"""The analysis room's statistics: the project's one percentile (agents/stats.py, where the
agents and the lab can reach it too)."""

from agents.stats import mean, median, percentile, percentile_or_none

__all__ = ["mean", "median", "percentile", "percentile_or_none"]
