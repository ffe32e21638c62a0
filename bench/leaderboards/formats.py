"""The board as numbers: the summary JSON (README numbers are read from it) and flat CSV tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.leaderboards.collect import Group, chosen_on_grid, is_eval_record
from bench.leaderboards.compare import (
    ALPHA,
    UNRANKED,
    Comparison,
    clipped,
    leader_p_values,
    rank_rows,
    vs_leader,
)
from bench.leaderboards.provenance import compute_time
from bench.leaderboards.text import _number
from bench.stats import (
    POWER,
)

METRICS = ("accuracy", "macro_f1", "nll", "ece")


def _stats(s) -> dict:
    return {"mean": s.mean, "std": s.std, "n": s.n, "ci_low": _number(s.ci_low),
            "ci_high": _number(s.ci_high)}


def summary(dataset: str, groups: list[Group], comparisons: list[Comparison], answer_lines: list[str],
            ran: list[dict], margin: float) -> dict:
    """The board as numbers (NaN as null): each row, each comparison with ce and its verdict, the
    answer, and the compute behind it; README numbers are read from here, never typed."""
    def stats_of(g: Group, metric: str) -> dict:
        return _stats(clipped(g.summary(metric)) if metric in ("accuracy", "macro_f1") else g.summary(metric))

    ranked = rank_rows(groups)
    rows = []
    for rank, (g, mark, p) in enumerate(zip(ranked, vs_leader(ranked), leader_p_values(ranked)), 1):
        lrs = [r["config"]["lr"] for r in g.records]
        tta = g.tta_summary()
        rows.append({
            "rank": None if mark == UNRANKED else rank, "model": g.model, "loss": g.loss,
            "loss_name": g.records[0]["config"]["loss"],
            "seeds": g.seeds, "vs_leader": mark, "p_holm_vs_leader": _number(p), "learned": g.learned,
            "tuning_mode": (g.tuning.get("mode", "single") if g.tuning and g.tuning.get("study") else None),
            "search_tied": g.search_tied, "lr_min": min(lrs), "lr_max": max(lrs),
            "warnings": sorted({w for r in g.records for w in r.get("warnings", [])}),
            "tuned": [{"seed": r["config"]["seed"], **(r.get("tuning") or {}).get("params", {}),
                       "lr_within_se": (r.get("tuning") or {}).get("lr_within_se"),
                       "on_lr_grid": chosen_on_grid(r.get("tuning"))} for r in g.records]
            if g.tuning else None,
            **{metric: stats_of(g, metric) for metric in METRICS},
            "tta_accuracy": _stats(clipped(tta)) if tta else None,
        })
    evals, trials = [r for r in ran if is_eval_record(r)], [r for r in ran if not is_eval_record(r)]
    best = {}
    for model in sorted({g.model for g in groups}):
        top = rank_rows([g for g in groups if g.model == model])[0]
        best[model] = {"loss": top.loss, "accuracy_mean": top.summary("accuracy").mean,
                       "seeds": len(top.seeds),
                       "learned": top.learned}
    return {
        "dataset": dataset, "alpha": ALPHA, "margin": margin, "power": POWER,
        "rows": rows,
        "comparisons_vs_ce": [{
            "model": c.group.model, "loss": c.group.loss, "paired": c.test.paired,
            "paired_seeds": c.test.n if c.test.paired else 0, "n": c.test.n,
            "n_baseline": c.test.n_baseline or c.test.n,
            "delta": c.test.mean_diff,
            "ci_low": _number(c.test.ci_low), "ci_high": _number(c.test.ci_high),
            "p": _number(c.test.p_value),
            "p_holm": _number(c.p_holm), "p_equiv_holm": _number(c.p_equiv_holm),
            "p_better": _number(c.p_better),
            "detectable": _number(c.test.detectable), "verdict": c.verdict,
        } for c in comparisons],
        "answer": {"best_per_model": best, "lines": answer_lines,
                   "no_winner": not any(g.learned for g in groups)},
        "compute": {"eval_runs": len(evals), "eval_hours": compute_time(evals)[0],
                    "tuning_trials": len(trials), "tuning_hours": compute_time(trials)[0]},
    }


def numeric_tables(board: dict, groups: list[Group]) -> dict[str, pd.DataFrame]:
    """The summary flattened for CSV: `main` (a row per configuration: mean, std, n and interval of
    each metric, p vs the leader), `paired_vs_ce` (delta, interval, p, p_holm, equivalence p,
    P(beats ce), verdict, detectable difference) and `per_class` (mean accuracy per class)."""
    main = pd.DataFrame([
        {"rank": r["rank"], "model": r["model"], "loss": r["loss"], "n": r["accuracy"]["n"],
         **{f"{m}_{k}": r[m][k] for m in METRICS for k in ("mean", "std", "ci_low", "ci_high")},
         "p_holm_vs_leader": r["p_holm_vs_leader"]}
        for r in board["rows"]])
    class_names = groups[0].records[0]["dataset"]["class_names"]
    per_class = pd.DataFrame([
        {"model": g.model, "loss": g.loss, **{
            name: float(np.mean([r["metrics"]["test"]["per_class"][name]["accuracy"] for r in g.records]))
            for name in class_names}}
        for g in rank_rows(groups)])
    return {"main": main, "paired_vs_ce": pd.DataFrame(board["comparisons_vs_ce"]), "per_class": per_class}
