"""The board's figures (PNG, seaborn): heatmap, learning curves, confusion matrix, the lr search."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.leaderboards.collect import Group
from bench.leaderboards.text import slug
from bench.stats import (
    summarize,
)


def t_band(values) -> tuple[float, float]:
    """The tables' 95% t-interval over seeds as the curves' band (seaborn's default bootstraps: random,
    and too narrow for 3-5 seeds); one seed has no band."""
    s = summarize(values)
    return (s.mean, s.mean) if s.n < 2 else (s.ci_low, s.ci_high)


def plots(groups: list[Group], out: Path, name: str) -> dict[str, str]:
    """Heatmap model x loss, learning curves by loss, confusion matrix of the best run (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    files = {}
    grid = pd.DataFrame(
        [{"model": g.model, "loss": g.loss, "acc": 100 * g.summary("accuracy").mean} for g in groups]
    ).pivot_table(index="model", columns="loss", values="acc")
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * grid.shape[1], 1.2 + 0.6 * grid.shape[0]))
    # an absolute scale, chance to 100%: a relative one makes 0.15 pp look like the largest contrast
    sns.heatmap(grid, annot=True, fmt=".1f", cmap="viridis", ax=ax, vmin=100 * groups[0].chance, vmax=100,
                cbar_kws={"label": "test accuracy % (chance to 100)"})
    ax.set_title(f"{name}: mean test accuracy (%)")
    files["heatmap"] = f"{slug(name)}-heatmap.png"
    fig.savefig(out / files["heatmap"], dpi=110, bbox_inches="tight")
    plt.close(fig)

    curves = pd.DataFrame([  # val macro-F1 joined the history later: older records show accuracy only
        {"model": g.model, "loss": g.loss, "epoch": h["epoch"], "metric": metric, "%": 100 * h[key]}
        for g in groups for r in g.records for h in r["history"]
        for metric, key in (("val accuracy", "val_acc"), ("val macro-F1", "val_macro_f1")) if key in h
    ])
    facet = sns.relplot(data=curves, x="epoch", y="%", hue="loss", col="model", row="metric", kind="line",
                        height=2.6, aspect=1.4, errorbar=t_band, facet_kws={"sharey": False})
    facet.set_titles("{col_name}: {row_name}")
    # long tuned labels
    sns.move_legend(facet, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=1, frameon=False)
    facet.figure.subplots_adjust(right=0.97)  # give back the width kept for the legend on the right
    facet.figure.suptitle(f"{name}: validation accuracy and macro-F1 by epoch (mean, 95% band over seeds)",
                          y=1.03)
    files["curves"] = f"{slug(name)}-curves.png"
    facet.figure.savefig(out / files["curves"], dpi=110, bbox_inches="tight")
    plt.close(facet.figure)

    best_group = max(groups, key=lambda g: g.summary("accuracy").mean)
    best = max(best_group.records, key=lambda r: r["metrics"]["test"]["accuracy"])
    names = best["dataset"]["class_names"]
    cm = pd.DataFrame(best["metrics"]["test"]["confusion_matrix"], index=names, columns=names)
    fig, ax = plt.subplots(figsize=(1.5 + 0.55 * len(names), 1.0 + 0.5 * len(names)))
    sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax)
    ax.set(xlabel="predicted", ylabel="true",
           title=f"best run: {best_group.model} x {best_group.loss}, seed {best['config']['seed']}")
    files["confusion"] = f"{slug(name)}-confusion.png"
    fig.savefig(out / files["confusion"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    return files


def search_points(groups: list[Group], trials: list[dict]) -> pd.DataFrame:
    """Every tuning trial behind the table's rows: its lr, its objective at its last epoch, the
    loss it tuned for (its name, or its row's label where a model has two rows of one loss), and
    whether the pruner stopped it."""
    label_of = {r["tuning"]["study"]: (g.model, g.loss) for g in groups for r in g.records
                if (r.get("tuning") or {}).get("study")}
    # One colour per loss name, the same in every panel, unless a model has two rows of one loss
    # (two fixed label smoothings, say): then every row keeps its own label.
    name_of = {(g.model, g.loss): g.records[0]["config"]["loss"] for g in groups}
    if len({(model, name) for (model, _), name in name_of.items()}) < len(name_of):
        name_of = {key: key[1] for key in name_of}
    objective = next((g.tuning["objective"] for g in groups if g.tuning and g.tuning.get("objective")),
                     "val_acc")
    rows = []
    for r in trials:
        study = r.get("trial", {}).get("study")
        if study not in label_of or not r.get("history"):
            continue
        value = r["history"][-1][objective]
        model, label = label_of[study]
        rows.append(
            {
                "model": model,
                "loss": name_of[(model, label)],
                "lr": r["config"]["lr"],
                "objective": objective,
                "value": 100 * value if objective == "val_acc" else value,
                "trial": "pruned"
                if r["status"] == "pruned"
                else "completed"
                if r["status"] == "completed"
                else r["status"],
            }
        )
    return pd.DataFrame(rows)


def search_plot(points: pd.DataFrame, out: Path, name: str) -> str | None:
    """Per model, every tuning trial's objective against its lr, a colour per loss, pruned
    trials marked: whether each loss's optimum was bracketed by the search."""
    if points.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import seaborn as sns

    objective = points["objective"].iloc[0]
    facet = sns.relplot(data=points, x="lr", y="value", hue="loss", hue_order=sorted(points["loss"].unique()),
                        style="trial", col="model",
                        kind="scatter",
                        height=3.0, aspect=1.3, facet_kws={"sharey": False},
                        markers={"completed": "o", "pruned": "X",
                        "diverged": "s", "failed": "s", "interrupted": "s"}, s=40, alpha=0.8)
    facet.set(xscale="log")
    facet.set_axis_labels("learning rate (log)",
                          "val accuracy % at the trial's last epoch" if objective == "val_acc"
                          else f"{objective} at the trial's last epoch")
    sns.move_legend(facet, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=1, frameon=False)
    facet.figure.suptitle(f"{name}: the lr search, every tuning trial (pruned trials stopped early)", y=1.03)
    file = f"{slug(name)}-search.png"
    facet.figure.savefig(out / file, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(facet.figure)
    return file
