#!/usr/bin/env bash
# Rerun the published leaderboards: every experiment file under leaderboards/ is run as a grid
# (finished runs are skipped, so an interrupted publish resumes) and its tables are rebuilt
# beside it. Expects ../shared/datasets (see each experiment file's data_root). Boards made on a
# GPU (folders ending in -gpu) are left alone: run on a CPU they would mix CPU runs into them; their
# README gives the command for a GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
for experiment in leaderboards/*/experiment.toml; do
  dir=$(dirname "$experiment")
  [[ $dir == *-gpu ]] && continue
  bench grid "$experiment" --quiet
  bench leaderboard "$dir/runs" --out "$dir"
done
