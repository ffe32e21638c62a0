"""The board's tables as DataFrames: ranking, paired comparisons, the search, per class, and the
runs that did not complete."""

from __future__ import annotations

import math

import pandas as pd

from bench.leaderboards.collect import Group, chosen_on_grid, is_eval_record, record_loss_label
from bench.leaderboards.compare import (
    ALPHA,
    UNRANKED,
    Comparison,
    clipped,
    rank_rows,
    vs_leader,
)
from bench.leaderboards.text import fmt
from bench.stats import (
    POWER,
)


def main_table(groups: list[Group]) -> pd.DataFrame:
    ranked = rank_rows(groups)
    rows = []
    for rank, (g, mark) in enumerate(zip(ranked, vs_leader(ranked)), 1):
        acc = clipped(g.summary("accuracy"))
        interval = "n/a (1 seed)" if acc.n < 2 else f"[{acc.ci_low * 100:.2f}, {acc.ci_high * 100:.2f}]"
        rows.append({
            "rank": "-" if mark == UNRANKED else rank, "model": g.model,
            "loss": g.loss + (f" ({g.label_suffix})" if g.label_suffix else ""),
            "seeds": acc.n, "test acc %": fmt(acc, 100), "95% CI": interval, "vs leader": mark,
            "macro-F1": fmt(g.summary("macro_f1"), 1, 4), "NLL": fmt(g.summary("nll"), 1, 4),
            "ECE": fmt(g.summary("ece"), 1, 4),
        })
        tta = g.tta_summary()
        if tta is not None:  # --tta runs: reported beside the plain accuracy the board ranks on
            rows[-1]["TTA acc %"] = fmt(clipped(tta), 100)
    return pd.DataFrame(rows).fillna("-")


def paired_table(comparisons: list[Comparison]) -> pd.DataFrame:
    rows = []
    for c in comparisons:
        g, p, p_holm = c.group, c.test, c.p_holm
        rows.append(
            {
                "model": g.model,
                "loss": g.loss,
                "paired seeds": p.n if p.paired else f"unpaired: {p.n} vs {p.n_baseline} (Welch)",
                "Δ acc vs ce (pp)": f"{p.mean_diff * 100:+.2f}",
                "95% CI (pp)": "n/a"
                if math.isnan(p.ci_low)
                else f"[{p.ci_low * 100:+.2f}, {p.ci_high * 100:+.2f}]",
                "p (paired t)": "n/a" if math.isnan(p.p_value) else f"{p.p_value:.3g}",
                "p Holm": "n/a" if math.isnan(p_holm) else f"{p_holm:.3g}",
                f"p equiv. Holm (±{c.margin * 100:g} pp)": "n/a"
                if math.isnan(c.p_equiv_holm)
                else f"{c.p_equiv_holm:.3g}",
                "P(loss > ce)": "n/a" if math.isnan(c.p_better) else f"{c.p_better:.2f}",
                "verdict": c.verdict,
                f"separable at {ALPHA:g}": "n/a"
                if math.isnan(p_holm)
                else ("yes" if p_holm < ALPHA else "no"),
                f"detectable Δ (pp, {POWER:.0%} power)": "n/a"
                if math.isnan(p.detectable)
                else f"{p.detectable * 100:.2f}",
            }
        )
    return pd.DataFrame(rows)


def search_table(groups: list[Group]) -> pd.DataFrame:
    """Per tuned row, how decided its search was: the lr values its studies chose (per seed: the
    spread of re-tuning), the lr span within one standard error of each best trial (a wide one: the
    objective is flat there), how many studies' best was a point of the shared lr grid (the rest:
    a trial the sampler proposed after it), and how many studies ended in ties."""
    rows = []
    for g in sorted((g for g in groups if g.tuning and g.tuning.get("study")),
                    key=lambda g: (g.model, g.loss)):
        tunings = {r["tuning"]["study"]: r["tuning"] for r in g.records}.values()
        chosen = [t["params"]["lr"] for t in tunings if "lr" in t["params"]]
        spans = [t["lr_within_se"][1] / t["lr_within_se"][0] for t in tunings if t.get("lr_within_se")]
        rows.append(
            {
                "model": g.model,
                "loss": g.loss,
                "studies": len(tunings),
                "chosen lr": chosen_lr_text(chosen),
                "lr within 1 SE of the best (median factor)": "n/a"
                if not spans
                else f"x{float(pd.Series(spans).median()):.1f}",
                "best on the shared lr grid": grid_wins(tunings),
                "studies with ties at the best": sum(t.get("tied_with_best", 1) > 1 for t in tunings),
                "studies all tied": sum(bool(t.get("all_tied")) for t in tunings),
            }
        )
    return pd.DataFrame(rows)


def chosen_lr_text(chosen: list[float]) -> str:
    """The lr a row's studies chose: '0.022–0.0317 (x1.4)', or '0.0224 (every study)'."""
    if not chosen:
        return ""
    low, high = f"{min(chosen):.3g}", f"{max(chosen):.3g}"
    if high == low:
        return low + (" (every study)" if len(chosen) > 1 else "")
    return f"{low}–{high} (x{max(chosen) / min(chosen):.1f})"


def grid_wins(tunings) -> str:
    """'k of n': the studies whose chosen lr is a point of their shared lr grid; 'n/a' without a grid."""
    on_grid = [x for x in map(chosen_on_grid, tunings) if x is not None]
    return f"{sum(on_grid)} of {len(on_grid)}" if on_grid else "n/a"


def per_class_table(groups: list[Group]) -> pd.DataFrame:
    class_names = groups[0].records[0]["dataset"]["class_names"]
    rows = []
    for g in sorted(groups, key=lambda g: g.summary("accuracy").mean, reverse=True):
        row = {"model": g.model, "loss": g.loss}
        for name in class_names:
            values = [r["metrics"]["test"]["per_class"][name]["accuracy"] for r in g.records]
            row[name] = f"{100 * sum(values) / len(values):.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def incomplete_table(records: list[dict], dataset: str) -> pd.DataFrame:
    rows = [
        {
            "run": r["run_id"],
            "model": r["config"]["model"],
            "loss": record_loss_label(r),
            "seed": r["config"]["seed"],
            "status": r["status"],
            "reason": r.get("reason", ""),
        }
        for r in records
        if r["status"] != "completed" and r["dataset"]["name"] == dataset and is_eval_record(r)
    ]
    return pd.DataFrame(rows)
