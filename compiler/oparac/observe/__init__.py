"""Observability: summaries, reports, DOT graphs, timelines, traces and plan diffs."""
