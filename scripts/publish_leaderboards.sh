#!/usr/bin/env bash
# Rerun the published leaderboards: every experiment file under leaderboards/ is run as a grid
# (finished runs are skipped, so an interrupted publish resumes) and its tables are rebuilt
# beside it. Expects ../shared/datasets (see each experiment file's data_root).
set -euo pipefail
cd "$(dirname "$0")/.."
for experiment in leaderboards/*/experiment.toml; do
  dir=$(dirname "$experiment")
  bench grid "$experiment" --quiet
  bench leaderboard "$dir/runs" --out "$dir"
done
