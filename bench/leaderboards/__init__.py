"""Leaderboards from run records: ranked tables with intervals, paired tests against ce, verdicts
and answers, per-class accuracy, figures, and the provenance a reviewer needs to rerun them.

A room per job: `collect` (records into rows), `compare` (tests and verdicts), `answers` (the
answer in words), `tables`, `longtail`, `figures`, `provenance`, `formats` (the summary JSON and
CSV), `write` (the boards, per dataset); `text` holds the small formatting helpers.
"""

from bench.leaderboards.write import write_leaderboards

__all__ = ["write_leaderboards"]
