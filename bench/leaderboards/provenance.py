"""Where and how a board's records were made: hardware, versions, commits, budgets, machine time."""

from __future__ import annotations

import platform
from datetime import datetime, timezone

from bench.leaderboards.collect import is_eval_record, is_per_seed
from bench.leaderboards.text import plural


def provenance(records: list[dict], ran: list[dict], command: str,
               by_model: list[tuple[str, str]] = ()) -> list[str]:
    """Where and how the table's `records` were made; `ran` is every run behind it, tuning
    trials and runs that did not complete included, for the machine time; `by_model`: the
    settings each model's rows share and other models' do not ('precision=bf16')."""
    def values(path: tuple[str, str]) -> str:
        found = sorted({str(r.get(path[0], {}).get(path[1])) for r in records})
        return ", ".join(found)

    lines = [
        "## Provenance",
        f"- hardware: {values(('env', 'device_name'))} ({values(('env', 'device'))}, "
        f"{values(('env', 'cpu_count'))} cores)",
        f"- python {values(('env', 'python'))}; torch {values(('env', 'torch'))}; torchvision "
        f"{values(('env', 'torchvision'))}; timm {values(('env', 'timm'))}",
        f"- bench git commit(s): {values(('env', 'git_commit'))}",
        f"- runs finished between {min(r.get('finished', '') for r in records)} and "
        f"{max(r.get('finished', '') for r in records)}; table made "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.system()}",
    ]
    budgets: dict[tuple[bool, str], set[int]] = {}  # (per seed?, budget) -> tuning seeds
    for r in records:
        if (t := r.get("tuning")) and t.get("study"):
            budget = (f"{t['trials']} trials of {t['epochs']} epochs"
                      + (f" on {t['limit_train']} training images" if t.get("limit_train") else "")
                      + f", objective {t['objective']}, pruner {t.get('pruner', 'hyperband')}")
            budgets.setdefault((is_per_seed(r), budget), set()).add(t["seed"])
    for per_seed in sorted({mode for mode, _ in budgets}):
        each = "; ".join(f"{budget} (tuning seed{'' if len(seeds) == 1 else 's'} "
                         f"{', '.join(map(str, sorted(seeds)))})"
                         for (mode, budget), seeds in sorted(budgets.items()) if mode == per_seed)
        lines.append("- tuned per seed: each eval seed ran its own study on its own validation split (test "
                     f"never seen) and used its best values on that seed only; budget per study: {each}"
                     if per_seed else
                     "- tuned per row on the validation split (test never seen), then the best values "
                     f"unchanged on every seed; budget per row: {each}")
    if by_model:
        lines.append("- settings that differ between models, the same for every row of a model: "
                     + "; ".join(f"{model} {settings}" for model, settings in by_model))
    evals = [r for r in ran if is_eval_record(r)]
    return lines + [compute_line(evals, [r for r in ran if not is_eval_record(r)]),
                    f"- reproduce: `{command}`"]


def compute_time(records: list[dict]) -> tuple[float, int]:
    """Hours the runs took, and how many of them predate whole-run timing: for those, only
    start-up and training epochs are known (validation and test time are missing)."""
    seconds, partial = 0.0, 0
    for r in records:
        timing = r.get("timing", {})
        if "wall_seconds" in timing:
            seconds += timing["wall_seconds"]
        else:
            partial += 1
            seconds += timing.get("setup_seconds", 0.0) + sum(e.get("seconds", 0.0) for e in r.get("history",
                                                                                                   []))
    return seconds / 3600, partial


def compute_line(evals: list[dict], trials: list[dict]) -> str:
    """Machine time of the eval runs and tuning trials behind a table, whatever became of them."""
    parts, partial = [], 0
    for what, records in (("eval run", evals), ("tuning trial", trials)):
        if records:
            hours, untimed = compute_time(records)
            parts.append(f"{plural(len(records), what)} {hours:.2f} h")
            partial += untimed
    note = (f" (for {plural(partial, 'record')} made before bench timed whole runs: start-up and training "
            "epochs only, without validation and test)") if partial else ""
    return "- compute: " + ", ".join(parts) + ": each record's wall time, summed over resumes" + note
