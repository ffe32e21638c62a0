"""Leaderboards from run records: ranked tables with intervals, paired tests against ce,
per-class accuracy, plots, and the provenance a reviewer needs to rerun them."""

from __future__ import annotations

import json
import math
import platform
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import tuned_lr_note
from bench.losses import LOSSES
from bench.record import RECORD_NAME, load_record
from bench.stats import POWER, Summary, compare_by_seed, equivalence_p, holm, probability_better, summarize

METRICS = ("accuracy", "macro_f1", "nll", "ece")
SETTINGS = ("epochs", "batch_size", "lr", "optimizer", "schedule", "warmup_epochs", "weight_decay", "limit_train",
            "limit_test", "image_size", "augment", "precision")
ALPHA = 0.05  # family-wise error rate of a table's Holm-corrected tests
MARGIN = 0.005  # default practical margin: accuracy differences within ±0.5 pp can be called "equivalent"
CHANCE_MARGIN = 0.02  # a row whose accuracy is not clearly 2 pp above chance did not learn


def find_records(paths: list[Path]) -> tuple[list[dict], list[str]]:
    """Valid records under `paths` (files or folders, searched recursively) and the unreadable ones."""
    records, bad = [], []
    for path in paths:
        files = [path] if path.is_file() else sorted(path.rglob(RECORD_NAME))
        for file in files:
            try:
                records.append(load_record(file))
            except (OSError, ValueError) as exc:
                bad.append(f"{file}: {exc}")
    return records, bad


def loss_label(name: str, params: dict, tuned=(), lr: float | None = None) -> str:
    """'focal(gamma=0.5)'; parameters that are off (None, or 0 by default and 0) are left out.

    A tuned row shows its tuned values to 3 digits and its lr: 'focal(gamma=1.39, lr 0.0311)'.
    """
    declared = LOSSES.get(name).params if name in LOSSES else {}
    shown = []
    for key, value in sorted(params.items()):
        default = declared[key].default if key in declared else None
        if value is None or (value == default and default in (0, 0.0, None) and key not in tuned):
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = f"{value:.3g}" if key in tuned else f"{value:g}"
        shown.append(f"{key}={value}")
    if "lr" in tuned and lr is not None:
        shown.append(f"lr {lr:.3g}")
    return f"{name}({', '.join(shown)})" if shown else name


def tuned_keys(record: dict) -> set[str]:
    return set(record.get("tuning", {}).get("params", {}))


def per_seed_loss_label(records: list[dict]) -> str:
    """A per-seed-tuned row: its fixed parameters, then the span of the values its studies chose,
    'focal (tuned per seed: lr 0.0031–0.041, gamma 0.42–2.1)'."""
    config = records[0]["config"]
    tuned = set().union(*(tuned_keys(r) for r in records))
    fixed = {k: v for k, v in config["loss_params"].items() if k not in tuned}
    spans = []
    for key in sorted(tuned, key=lambda k: (k != "lr", k)):
        values = [r["tuning"]["params"][key] for r in records if key in r["tuning"]["params"]]
        spans.append(f"{key} {min(values):.3g}" + (f"–{max(values):.3g}" if max(values) != min(values) else ""))
    label = loss_label(config["loss"], fixed)
    return f"{label} (tuned per seed: {', '.join(spans)})" if spans else label


def is_per_seed(record: dict) -> bool:
    return (record.get("tuning") or {}).get("mode") == "per_seed"


def record_loss_label(record: dict) -> str:
    """A record's loss as its row shows it, with the values its cell tuned."""
    config = record["config"]
    return loss_label(config["loss"], config["loss_params"], tuned_keys(record), config["lr"])


def settings_of(record: dict) -> tuple:
    """Training settings a row is defined by; values its cell tuned (lr, ...) belong to the row's loss."""
    tuned = tuned_keys(record)
    return tuple((k, None if k in tuned else record["config"].get(k)) for k in SETTINGS)


def is_eval_record(record: dict) -> bool:
    """Tuning trials (they carry `trial`, and no test metrics) never enter a table."""
    return "trial" not in record


class Group:
    """The seeds of one (dataset, model, loss with its parameters, training settings)."""

    def __init__(self, records: list[dict]) -> None:
        self.records = sorted(records, key=lambda r: r["config"]["seed"])
        first = self.records[0]
        config = first["config"]
        self.dataset = first["dataset"]["name"]
        self.model = config["model"]
        self.tuning = first.get("tuning")
        self.per_seed = is_per_seed(first)
        self.loss = per_seed_loss_label(self.records) if self.per_seed else record_loss_label(first)
        self.is_baseline = config["loss"] == "ce" and not any(
            v not in (None, 0, 0.0) for v in config["loss_params"].values())
        self.settings = settings_of(first)
        self.seeds = [r["config"]["seed"] for r in self.records]
        self.several_seeds = len(self.seeds) >= 2  # a mean to rank and test; one run may be a lucky one
        self.label_suffix = ""

    @property
    def chance(self) -> float:
        return 1 / len(self.records[0]["dataset"]["class_names"])

    @property
    def learned(self) -> bool:
        """Clearly above chance: the 95% interval's low end (the mean, for one seed) more than
        CHANCE_MARGIN above 1 / classes."""
        acc = self.summary("accuracy")
        low = acc.mean if acc.n < 2 else acc.ci_low
        return bool(low > self.chance + CHANCE_MARGIN)

    @property
    def search_tied(self) -> bool:
        """Every tuning trial of its studies scored the same: the search chose nothing."""
        return bool(self.tuning) and all((r.get("tuning") or {}).get("all_tied") for r in self.records)

    def values(self, metric: str) -> list[float]:
        return [r["metrics"]["test"][metric] for r in self.records]

    def summary(self, metric: str) -> Summary:
        return summarize(self.values(metric))

    def by_seed(self, metric: str) -> dict[int, float]:
        return dict(zip(self.seeds, self.values(metric)))


def superseded(records: list[dict]) -> list[dict]:
    """Eval records whose cell was tuned further afterwards (its study, same budget, more trials)
    and got other best values: the records of the study's longest tuning are the cell's rows."""
    tuned = [((r["dataset"]["name"], r["tuning"]["study"]), r) for r in records
             if r.get("tuning", {}).get("study") and is_eval_record(r)]
    latest = {key: r["tuning"] for key, r in sorted(tuned, key=lambda kr: kr[1]["tuning"]["trials"])}
    return [r for key, r in tuned if r["tuning"]["params"] != latest[key]["params"]]


def group_records(records: list[dict]) -> dict[str, list[Group]]:
    """Completed eval records grouped per dataset (its variant included), then per configuration."""
    buckets: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        if r["status"] == "completed" and is_eval_record(r) and "test" in r["metrics"]:
            if is_per_seed(r):  # one row per cell: its seeds' studies chose their own values
                fixed = {k: v for k, v in r["config"]["loss_params"].items() if k not in tuned_keys(r)}
                key = (r["dataset"]["name"], r["config"]["model"], r["config"]["loss"],
                       json.dumps(fixed, sort_keys=True), settings_of(r), r["tuning"]["cell"])
            else:
                key = (r["dataset"]["name"], r["config"]["model"], r["config"]["loss"],
                       json.dumps(r["config"]["loss_params"], sort_keys=True), settings_of(r),
                       r.get("tuning", {}).get("study"), r["config"]["lr"])
            buckets[key].append(r)
    per_dataset: dict[str, list[Group]] = defaultdict(list)
    for recs in buckets.values():
        # one record per seed: a rerun of the same seed keeps the newest
        newest = {r["config"]["seed"]: r for r in sorted(recs, key=lambda r: r.get("finished", ""))}
        group = Group(list(newest.values()))
        per_dataset[group.dataset].append(group)
    for groups in per_dataset.values():
        varying = [i for i, name in enumerate(SETTINGS) if len({g.settings[i][1] for g in groups}) > 1]
        for g in groups:
            g.label_suffix = " ".join(f"{SETTINGS[i]}={g.settings[i][1]}" for i in varying
                                      if g.settings[i][1] is not None)
    return dict(per_dataset)


def fmt(s: Summary, scale: float = 1.0, digits: int = 2) -> str:
    if s.n < 2:
        return f"{s.mean * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f} ± {s.std * scale:.{digits}f}"


UNRANKED = "1 seed: not ranked"


def leader_p_values(ranked: list[Group]) -> list[float]:
    """Holm-adjusted p of each row against the leader (NaN for the leader and untested rows)."""
    leader = ranked[0].by_seed("accuracy")
    tests = [compare_by_seed(g.by_seed("accuracy"), leader) for g in ranked[1:]]
    adjusted = holm([t.p_value for t in tests])
    untested = [ranked[0].several_seeds and not g.several_seeds for g in ranked[1:]]
    return [math.nan] + [math.nan if skip else p for p, skip in zip(adjusted, untested)]


def vs_leader(ranked: list[Group]) -> list[str]:
    """Each row against the leader: a t-test on test accuracy (paired on common seeds, else Welch),
    Holm-corrected over the table; '≈ leader' where the data cannot separate them at ALPHA. A
    one-seed row under a leader of several seeds is not tested (it comes last, see rank_rows)."""
    adjusted = leader_p_values(ranked)[1:]
    marks = ["leader"]
    for g, p in zip(ranked[1:], adjusted):
        if ranked[0].several_seeds and not g.several_seeds:
            marks.append(UNRANKED)
        elif math.isnan(p):
            marks.append("≈ leader (no test)")
        else:
            marks.append(f"{'≈ leader' if p >= ALPHA else 'below'} (p_Holm {p:.2g})")
    return marks


def rank_rows(groups: list[Group]) -> list[Group]:
    """By mean test accuracy, rows of several seeds first: a single run can be a lucky one, and
    the leader is what every other row is tested against."""
    return sorted(groups, key=lambda g: (g.several_seeds, g.summary("accuracy").mean), reverse=True)


def main_table(groups: list[Group]) -> pd.DataFrame:
    ranked = rank_rows(groups)
    rows = []
    for rank, (g, mark) in enumerate(zip(ranked, vs_leader(ranked)), 1):
        acc = clipped(g.summary("accuracy"))
        interval = "n/a (1 seed)" if acc.n < 2 else f"[{acc.ci_low * 100:.2f}, {acc.ci_high * 100:.2f}]"
        rows.append({
            "rank": "-" if mark == UNRANKED else rank, "model": g.model, "loss": g.loss + (f" ({g.label_suffix})" if g.label_suffix else ""),
            "seeds": acc.n, "test acc %": fmt(acc, 100), "95% CI": interval, "vs leader": mark,
            "macro-F1": fmt(g.summary("macro_f1"), 1, 4), "NLL": fmt(g.summary("nll"), 1, 4),
            "ECE": fmt(g.summary("ece"), 1, 4),
        })
    return pd.DataFrame(rows)


def clipped(s: Summary, low: float = 0.0, high: float = 1.0) -> Summary:
    """A bounded metric's interval cut to its range (an accuracy's t-interval can pass 0 or 100%)."""
    if s.n < 2:
        return s
    return Summary(s.mean, s.std, s.n, max(low, s.ci_low), min(high, s.ci_high))


@dataclass(frozen=True)
class Comparison:
    """One loss against plain ce of the same model and settings, on their common seeds."""

    group: Group
    base: Group
    test: object  # stats.Paired
    p_holm: float  # difference test, Holm over the table
    p_equiv_holm: float  # TOST within ±margin, Holm over the table
    p_better: float  # P(loss > ce) on a paired run
    margin: float

    @property
    def verdict(self) -> str:
        """better / worse (separable), equivalent (within ±margin, shown by TOST), undecided, or no test."""
        if math.isnan(self.p_holm) and math.isnan(self.p_equiv_holm):
            return "no test"
        if self.p_equiv_holm < ALPHA:
            return f"equivalent within ±{self.margin * 100:g} pp"
        if self.p_holm < ALPHA:
            return "better" if self.test.mean_diff > 0 else "worse"
        return "undecided"


def comparisons_vs_ce(groups: list[Group], margin: float = MARGIN) -> list[Comparison]:
    """Every non-ce entry with a plain-ce baseline of the same model and settings; both the
    difference tests and the equivalence tests are Holm-corrected over the whole table."""
    baselines = {(g.model, g.settings): g for g in groups if g.is_baseline}
    pairs = []
    for g in sorted(groups, key=lambda g: (g.model, g.loss)):
        base = baselines.get((g.model, g.settings))
        if base is None or g is base or not set(g.seeds) & set(base.seeds):
            continue
        mine, theirs = g.by_seed("accuracy"), base.by_seed("accuracy")
        common = sorted(set(mine) & set(theirs))
        a, b = [mine[s] for s in common], [theirs[s] for s in common]
        better = probability_better(a, b) if len(common) >= 2 else math.nan  # one pair is no probability
        pairs.append((g, base, compare_by_seed(mine, theirs), equivalence_p(a, b, margin), better))
    adjusted = holm([t.p_value for _, _, t, _, _ in pairs])
    equivalent = holm([e for _, _, _, e, _ in pairs])
    return [Comparison(g, base, t, p, e_holm, better, margin)
            for (g, base, t, _, better), p, e_holm in zip(pairs, adjusted, equivalent)]


def paired_table(comparisons: list[Comparison]) -> pd.DataFrame:
    rows = []
    for c in comparisons:
        g, p, p_holm = c.group, c.test, c.p_holm
        rows.append({
            "model": g.model, "loss": g.loss,
            "paired seeds": p.n if p.paired else f"unpaired: {p.n} vs {p.n_baseline} (Welch)",
            "Δ acc vs ce (pp)": f"{p.mean_diff * 100:+.2f}",
            "95% CI (pp)": "n/a" if math.isnan(p.ci_low) else f"[{p.ci_low * 100:+.2f}, {p.ci_high * 100:+.2f}]",
            "p (paired t)": "n/a" if math.isnan(p.p_value) else f"{p.p_value:.3g}",
            "p Holm": "n/a" if math.isnan(p_holm) else f"{p_holm:.3g}",
            f"p equiv. Holm (±{c.margin * 100:g} pp)": "n/a" if math.isnan(c.p_equiv_holm) else f"{c.p_equiv_holm:.3g}",
            "P(loss > ce)": "n/a" if math.isnan(c.p_better) else f"{c.p_better:.2f}",
            "verdict": c.verdict,
            f"separable at {ALPHA:g}": "n/a" if math.isnan(p_holm) else ("yes" if p_holm < ALPHA else "no"),
            f"detectable Δ (pp, {POWER:.0%} power)": "n/a" if math.isnan(p.detectable) else f"{p.detectable * 100:.2f}",
        })
    return pd.DataFrame(rows)


NO_TEST = "no test: too few paired seeds"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def separable(p_holm: float) -> str:
    return "separable" if p_holm < ALPHA else "not separable"


def sensitivity(test, p_holm: float) -> str:
    """What 'not separable' can still hide: the difference the paired test would have found."""
    if math.isnan(test.detectable) or math.isnan(p_holm) or p_holm < ALPHA:
        return ""
    return (f" (with {test.n} paired seeds this test finds a true difference of ±{test.detectable * 100:.2f} pp "
            f"{POWER:.0%} of the time, before correction)")


def answers(groups: list[Group], comparisons: list[Comparison], shots: Shots | None = None) -> list[str]:
    """Per model: the best loss, whether the data separate it from plain ce after Holm, each loss's
    verdict against ce with P(loss > ce), and (on a long tail) the few-shot gain. A model whose
    runs did not learn, or whose searches all tied, names no winner."""
    tests = {id(c.group): c for c in comparisons}
    lines = []
    if not any(g.learned for g in groups):
        chance = groups[0].chance
        lines.append(f"- **No winner:** every configuration is within {CHANCE_MARGIN * 100:g} pp of chance "
                     f"({chance * 100:.0f}% on {round(1 / chance)} classes), so these runs did not learn and rank "
                     "nothing; train longer or on more images.")
    for model in sorted({g.model for g in groups}):
        mine = rank_rows([g for g in groups if g.model == model])
        best, acc = mine[0], mine[0].summary("accuracy")
        if not any(g.learned for g in mine):
            lines.append(f"- **{model}**: no winner: every loss is at chance level "
                         f"(best {acc.mean * 100:.2f}% against {best.chance * 100:.0f}% chance)")
            continue
        head = f"- **{model}**: best **{best.loss}**, {acc.mean * 100:.2f}% over {plural(acc.n, 'seed')}"
        if best.is_baseline:
            rest = [g for g in mine[1:] if id(g) in tests]
            if rest:
                c = tests[id(rest[0])]
                t, p = c.test, c.p_holm
                head += (f"; plain ce leads, the next best {rest[0].loss} is {t.mean_diff * 100:+.2f} pp "
                         f"({NO_TEST if math.isnan(p) else f'p_Holm {p:.2g}: {separable(p)} from ce'})")
                head += sensitivity(t, p)
        elif id(best) in tests:
            c = tests[id(best)]
            t, p = c.test, c.p_holm
            head += f"; vs ce {t.mean_diff * 100:+.2f} pp" + (
                f" ({NO_TEST})" if math.isnan(p) else f", p_Holm {p:.2g}: **{separable(p)} from ce** at {ALPHA:g}")
            head += sensitivity(t, p)
        else:
            head += "; no plain-ce baseline on the same seeds to test against"
        verdicts = [tests[id(g)] for g in mine if id(g) in tests]
        if verdicts:
            head += (f"; against ce (margin ±{verdicts[0].margin * 100:g} pp): " + ", ".join(
                f"{c.group.loss} **{c.verdict}**" + ("" if math.isnan(c.p_better) else f" (P(beats ce) {c.p_better:.2f})")
                for c in verdicts))
        if shots and id(best) in tests:
            base = tests[id(best)].base
            few = shots.classes["few"]
            gain = summarize(shot_accuracy(best, few)).mean - summarize(shot_accuracy(base, few)).mean
            head += f"; few-shot accuracy {gain * 100:+.2f} pp vs ce"
        for g in mine:
            if g.search_tied:
                head += f"; for {g.loss} every tuning trial tied: its search chose nothing"
        for g in mine:  # a row whose tuned lr sat at the edge of its range may be better than it looks
            notes = {tuned_lr_note(r.get("tuning")) for r in g.records} - {""}
            if notes:
                head += f"; for {g.loss} the " + "; ".join(sorted(notes))
        lines.append(head)
    return lines


def search_table(groups: list[Group]) -> pd.DataFrame:
    """Per tuned row, how decided its search was: the lr values its studies chose (per seed: the
    spread of re-tuning), the lr span within one standard error of each best trial (a wide one: the
    objective is flat there), and how many studies ended in ties."""
    rows = []
    for g in sorted((g for g in groups if g.tuning and g.tuning.get("study")), key=lambda g: (g.model, g.loss)):
        tunings = {r["tuning"]["study"]: r["tuning"] for r in g.records}.values()
        chosen = [t["params"]["lr"] for t in tunings if "lr" in t["params"]]
        spans = [t["lr_within_se"][1] / t["lr_within_se"][0] for t in tunings if t.get("lr_within_se")]
        rows.append({
            "model": g.model, "loss": g.loss, "studies": len(tunings),
            "chosen lr": "" if not chosen else f"{min(chosen):.3g}" + (
                f"–{max(chosen):.3g} (x{max(chosen) / min(chosen):.1f})" if len(chosen) > 1 else ""),
            "lr within 1 SE of the best (median factor)": "n/a" if not spans else f"x{float(pd.Series(spans).median()):.1f}",
            "studies with ties at the best": sum(t.get("tied_with_best", 1) > 1 for t in tunings),
            "studies all tied": sum(bool(t.get("all_tied")) for t in tunings),
        })
    return pd.DataFrame(rows)


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


@dataclass(frozen=True)
class Shots:
    """A long-tailed training split's classes in thirds by training count (C/3 rounded at each end)."""

    classes: dict[str, list[str]]  # many / medium / few -> class names
    ranges: dict[str, tuple[int, int]]  # -> (fewest, most) training images


def shot_classes(groups: list[Group]) -> Shots | None:
    """The many / medium / few-shot split, or None when the training split is balanced."""
    first = groups[0].records[0]["dataset"]
    counts = first.get("train_class_counts")
    if first.get("imbalance") is None or not counts:
        return None
    ranked = sorted(zip(first["class_names"], counts), key=lambda nc: -nc[1])
    k = round(len(ranked) / 3)
    parts = {"many": ranked[:k], "medium": ranked[k:len(ranked) - k], "few": ranked[len(ranked) - k:]}
    return Shots({shot: [name for name, _ in m] for shot, m in parts.items()},
                 {shot: (min(n for _, n in m), max(n for _, n in m)) for shot, m in parts.items() if m})


def shot_accuracy(group: Group, classes: list[str]) -> list[float]:
    """Per seed: mean test accuracy over `classes` (the test split is balanced)."""
    return [sum(r["metrics"]["test"]["per_class"][c]["accuracy"] for c in classes) / len(classes) for r in group.records]


def shots_table(groups: list[Group], shots: Shots) -> pd.DataFrame:
    baselines = {(g.model, g.settings): g for g in groups if g.is_baseline}
    rows = []
    for g in sorted(groups, key=lambda g: (g.model, -g.summary("accuracy").mean)):
        row = {"model": g.model, "loss": g.loss}
        for shot in ("many", "medium", "few"):
            row[f"{shot}-shot acc %"] = fmt(summarize(shot_accuracy(g, shots.classes[shot])), 100)
        base = baselines.get((g.model, g.settings))
        if base is not None and base is not g:
            few = shots.classes["few"]
            test = compare_by_seed(dict(zip(g.seeds, shot_accuracy(g, few))), dict(zip(base.seeds, shot_accuracy(base, few))))
            row["few-shot Δ vs ce (pp)"] = f"{test.mean_diff * 100:+.2f}"
        else:
            row["few-shot Δ vs ce (pp)"] = ""
        row["macro-F1"] = fmt(g.summary("macro_f1"), 1, 4)
        row["ECE"] = fmt(g.summary("ece"), 1, 4)
        rows.append(row)
    return pd.DataFrame(rows)


def shots_heading(shots: Shots) -> str:
    ranges = ", ".join(f"{shot} {len(shots.classes[shot])} classes with {lo:,}–{hi:,} training images"
                       for shot, (lo, hi) in shots.ranges.items())
    return ("## Long tail: test accuracy by training-class frequency (%, mean ± std over seeds)\n\n"
            f"Classes split in thirds by training count: {ranges}. The test split is balanced.")


def incomplete_table(records: list[dict], dataset: str) -> pd.DataFrame:
    rows = [
        {"run": r["run_id"], "model": r["config"]["model"],
         "loss": record_loss_label(r),
         "seed": r["config"]["seed"], "status": r["status"], "reason": r.get("reason", "")}
        for r in records if r["status"] != "completed" and r["dataset"]["name"] == dataset and is_eval_record(r)
    ]
    return pd.DataFrame(rows)


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)


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
    sns.move_legend(facet, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=1, frameon=False)  # long tuned labels
    facet.figure.subplots_adjust(right=0.97)  # give back the width kept for the legend on the right
    facet.figure.suptitle(f"{name}: validation accuracy and macro-F1 by epoch (mean, 95% band over seeds)", y=1.03)
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
    row (loss) it tuned for, and whether the pruner stopped it."""
    label_of = {r["tuning"]["study"]: (g.model, g.loss) for g in groups for r in g.records
                if (r.get("tuning") or {}).get("study")}
    objective = next((g.tuning["objective"] for g in groups if g.tuning and g.tuning.get("objective")), "val_acc")
    rows = []
    for r in trials:
        study = r.get("trial", {}).get("study")
        if study not in label_of or not r.get("history"):
            continue
        value = r["history"][-1][objective]
        model, loss = label_of[study]
        rows.append({"model": model, "loss": loss, "lr": r["config"]["lr"], "objective": objective,
                     "value": 100 * value if objective == "val_acc" else value,
                     "trial": "pruned" if r["status"] == "pruned" else "completed" if r["status"] == "completed"
                     else r["status"]})
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
    facet = sns.relplot(data=points, x="lr", y="value", hue="loss", style="trial", col="model", kind="scatter",
                        height=3.0, aspect=1.3, facet_kws={"sharey": False}, markers={"completed": "o", "pruned": "X",
                        "diverged": "s", "failed": "s", "interrupted": "s"}, s=40, alpha=0.8)
    facet.set(xscale="log")
    facet.set_axis_labels("learning rate (log)", "val accuracy % at the trial's last epoch" if objective == "val_acc"
                          else f"{objective} at the trial's last epoch")
    sns.move_legend(facet, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=1, frameon=False)
    facet.figure.suptitle(f"{name}: the lr search, every tuning trial (pruned trials stopped early)", y=1.03)
    file = f"{slug(name)}-search.png"
    facet.figure.savefig(out / file, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(facet.figure)
    return file


def markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, tablefmt="github", disable_numparse=True) if len(df) else "_none_"


def provenance(records: list[dict], ran: list[dict], command: str) -> list[str]:
    """Where and how the table's `records` were made; `ran` is every run behind it, tuning
    trials and runs that did not complete included, for the machine time."""
    def values(path: tuple[str, str]) -> str:
        found = sorted({str(r.get(path[0], {}).get(path[1])) for r in records})
        return ", ".join(found)

    lines = [
        "## Provenance",
        f"- hardware: {values(('env', 'device_name'))} ({values(('env', 'device'))}, "
        f"{values(('env', 'cpu_count'))} cores)",
        f"- python {values(('env', 'python'))}; torch {values(('env', 'torch'))}; "
        f"torchvision {values(('env', 'torchvision'))}; timm {values(('env', 'timm'))}",
        f"- bench git commit(s): {values(('env', 'git_commit'))}",
        f"- runs finished between {min(r.get('finished', '') for r in records)} and "
        f"{max(r.get('finished', '') for r in records)}; table made {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC "
        f"on {platform.system()}",
    ]
    budgets = sorted({
        f"{t['trials']} trials of {t['epochs']} epochs" + (f" on {t['limit_train']} training images" if t.get("limit_train") else "")
        + f", objective {t['objective']}, pruner {t.get('pruner', 'hyperband')}, tuning seed {t['seed']}"
        for r in records if (t := r.get("tuning")) and t.get("study")
    })
    if budgets:
        lines.append("- tuned per row on the validation split (test never seen), then the best values unchanged "
                     "on every seed; tuning budget per row: " + "; ".join(budgets))
    evals = [r for r in ran if is_eval_record(r)]
    return lines + [compute_line(evals, [r for r in ran if not is_eval_record(r)]), f"- reproduce: `{command}`"]


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
            seconds += timing.get("setup_seconds", 0.0) + sum(e.get("seconds", 0.0) for e in r.get("history", []))
    return seconds / 3600, partial


def compute_line(evals: list[dict], trials: list[dict]) -> str:
    """Machine time of the eval runs and tuning trials behind a table, whatever became of them."""
    parts, partial = [], 0
    for what, records in (("eval run", evals), ("tuning trial", trials)):
        if records:
            hours, untimed = compute_time(records)
            parts.append(f"{plural(len(records), what)} {hours:.2f} h")
            partial += untimed
    note = (f" (for {plural(partial, 'record')} made before bench timed whole runs: start-up and training epochs "
            "only, without validation and test)") if partial else ""
    return "- compute: " + ", ".join(parts) + ": each record's wall time, summed over resumes" + note


def _number(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def per_seed_note(groups: list[Group]) -> str:
    modes = {(g.tuning or {}).get("mode") for g in groups if g.tuning}
    if modes == {"per_seed"}:
        return ("Each seed tuned its own values in its own study (its own tuning seed and train/val partition), "
                "so these tests include the search's own luck.")
    if "single" in modes or None in modes:
        return ("One study per row chose the values every seed uses: the tests do not see that search's luck, "
                "which can move a whole row.")
    return ""


def summary(dataset: str, groups: list[Group], comparisons: list[Comparison], answer_lines: list[str],
            ran: list[dict], margin: float) -> dict:
    """The board as numbers (NaN as null): each row, each comparison with ce and its verdict, the
    answer, and the compute behind it; README numbers are read from here, never typed."""
    def stats_of(g: Group, metric: str) -> dict:
        s = clipped(g.summary(metric)) if metric in ("accuracy", "macro_f1") else g.summary(metric)
        return {"mean": s.mean, "std": s.std, "n": s.n, "ci_low": _number(s.ci_low), "ci_high": _number(s.ci_high)}

    ranked = rank_rows(groups)
    rows = []
    for rank, (g, mark, p) in enumerate(zip(ranked, vs_leader(ranked), leader_p_values(ranked)), 1):
        lrs = [r["config"]["lr"] for r in g.records]
        rows.append({
            "rank": None if mark == UNRANKED else rank, "model": g.model, "loss": g.loss, "loss_name": g.records[0]["config"]["loss"],
            "seeds": g.seeds, "vs_leader": mark, "p_holm_vs_leader": _number(p), "learned": g.learned,
            "tuning_mode": (g.tuning.get("mode", "single") if g.tuning and g.tuning.get("study") else None),
            "search_tied": g.search_tied, "lr_min": min(lrs), "lr_max": max(lrs),
            "warnings": sorted({w for r in g.records for w in r.get("warnings", [])}),
            "tuned": [{"seed": r["config"]["seed"], **(r.get("tuning") or {}).get("params", {}),
                       "lr_within_se": (r.get("tuning") or {}).get("lr_within_se")} for r in g.records]
            if g.tuning else None,
            **{metric: stats_of(g, metric) for metric in METRICS},
        })
    evals, trials = [r for r in ran if is_eval_record(r)], [r for r in ran if not is_eval_record(r)]
    best = {}
    for model in sorted({g.model for g in groups}):
        top = rank_rows([g for g in groups if g.model == model])[0]
        best[model] = {"loss": top.loss, "accuracy_mean": top.summary("accuracy").mean, "seeds": len(top.seeds),
                       "learned": top.learned}
    return {
        "dataset": dataset, "alpha": ALPHA, "margin": margin, "power": POWER,
        "rows": rows,
        "comparisons_vs_ce": [{
            "model": c.group.model, "loss": c.group.loss, "paired": c.test.paired,
            "paired_seeds": c.test.n if c.test.paired else 0, "n": c.test.n, "n_baseline": c.test.n_baseline or c.test.n,
            "delta": c.test.mean_diff,
            "ci_low": _number(c.test.ci_low), "ci_high": _number(c.test.ci_high), "p": _number(c.test.p_value),
            "p_holm": _number(c.p_holm), "p_equiv_holm": _number(c.p_equiv_holm), "p_better": _number(c.p_better),
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


SECTIONS = (
    ("## Paired comparison against cross-entropy (same model, same seeds; Holm-corrected over this table)",
     "paired_vs_ce"),
    ("## The search: what each row's studies chose, and how decided they were (re-tuning spread: the "
     "chosen lr over seeds; a wide span within one standard error of the best: the objective is flat there)",
     "search"),
    ("## Per-class test accuracy (%, mean over seeds)", "per_class"),
    ("## Runs that did not complete", "incomplete"),
)
FIGURES = (("mean test accuracy", "heatmap"), ("learning curves", "curves"),
           ("confusion matrix of the best run", "confusion"), ("the lr search: every tuning trial", "search"))


def write_leaderboards(paths: list[Path], out: Path, fmt_: str = "markdown", command: str = "",
                       margin: float = MARGIN) -> list[Path]:
    """Tables per dataset under `out`: markdown (with figures), csv or json; markdown also writes
    `summary-<dataset>.json`, the board as numbers. `margin`: the practical margin of accuracy
    (a fraction) within which a loss may be called equivalent to ce."""
    records, bad = find_records(paths)
    if not records:
        from bench.errors import UsageError

        raise UsageError(f"no run records found under {', '.join(map(str, paths))}; run 'bench run' or 'bench grid' first")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    every_record = records  # the superseded ones too: they took machine time
    stale = superseded(records)
    stale_ids = {id(r) for r in stale}
    records = [r for r in records if id(r) not in stale_ids]
    grouped = group_records(records)
    for dataset in sorted({r["dataset"]["name"] for r in records}):
        groups = grouped.get(dataset)
        if not groups:  # nothing completed: still list what failed, never drop it silently
            path = out / f"leaderboard-{slug(dataset)}.md"
            path.write_text(f"# {dataset}\n\nNo completed runs.\n\n{markdown(incomplete_table(records, dataset))}\n")
            written.append(path)
            continue
        comparisons = comparisons_vs_ce(groups, margin)
        shots = shot_classes(groups)
        ran = [r for r in every_record if r["dataset"]["name"] == dataset]
        answer_lines = answers(groups, comparisons, shots)
        board = summary(dataset, groups, comparisons, answer_lines, ran, margin)
        tables = {"main": main_table(groups), "paired_vs_ce": paired_table(comparisons),
                  "per_class": per_class_table(groups), "incomplete": incomplete_table(records, dataset)}
        if any(g.tuning and g.tuning.get("lr_grid") is not None for g in groups):
            tables["search"] = search_table(groups)
        if shots:
            tables["shots"] = shots_table(groups, shots)
        base = out / f"leaderboard-{slug(dataset)}"
        if fmt_ == "csv":  # numbers as numbers: one row per configuration, one per comparison with ce
            for key, df in numeric_tables(board, groups).items():
                df.to_csv(f"{base}-{key}.csv", index=False)
                written.append(Path(f"{base}-{key}.csv"))
            continue
        if fmt_ == "json":  # the summary (rows, comparisons with verdicts, answer, compute) and the flat tables
            path = Path(f"{base}.json")
            flat = {k: df.astype(object).where(df.notna(), None).to_dict(orient="records")
                    for k, df in numeric_tables(board, groups).items()}
            path.write_text(json.dumps(board | flat, indent=2, allow_nan=False) + "\n")
            written.append(path)
            continue
        files = plots(groups, out, dataset)
        if search := search_plot(search_points(groups, [r for r in ran if not is_eval_record(r)]), out, dataset):
            files["search"] = search
        summary_path = out / f"summary-{slug(dataset)}.json"
        summary_path.write_text(json.dumps(board, indent=2, allow_nan=False) + "\n")  # beside the table, not listed
        dataset_records = [r for g in groups for r in g.records]
        lines = [
            f"# {dataset}: model x loss leaderboard",
            "",
            f"{len(dataset_records)} completed runs in {len(groups)} configurations. Test-split metrics, mean ± std "
            "over seeds, 95% t-interval for the mean accuracy. 'vs leader': a t-test of each row's test accuracy "
            "against the leader's (paired on common seeds), Holm-corrected over the table; '≈ leader' where "
            f"p_Holm ≥ {ALPHA:g}, so the data cannot separate them."
            + (" Rows of a single seed come after those of several and are not tested."
               if len({g.several_seeds for g in groups}) == 2 else ""),
            "",
            markdown(tables["main"]),
            "",
            "## Answer: which loss, and how sure",
            "",
            f"Verdicts against plain ce of the same model, on paired seeds: **better** or **worse** where the "
            f"difference is separable (paired t-test, Holm over the table, at {ALPHA:g}); **equivalent within "
            f"±{margin * 100:g} pp** where a paired equivalence test (TOST, Holm) shows the difference inside that "
            "practical margin; **undecided** otherwise. P(beats ce): the share of paired seeds on which the loss "
            "scored higher (ties count half). " + per_seed_note(groups),
            "",
            *answer_lines,
            "",
        ]
        warned = sorted({w for g in groups for r in g.records for w in r.get("warnings", [])})
        if warned:
            lines += ["## Warnings from the data (in the runs' records)", "", *[f"- {w}" for w in warned], ""]
        if shots:
            lines += [shots_heading(shots), "", markdown(tables["shots"]), ""]
        for heading, key in SECTIONS:
            if key in tables:
                lines += [heading, "", markdown(tables[key]), ""]
        left_out = [r for r in stale if r["dataset"]["name"] == dataset]
        if left_out:
            lines += [f"Left out: {len(left_out)} eval runs of an earlier, shorter tuning of the same cell "
                      f"({', '.join(sorted({r['tuning']['study'] for r in left_out}))}), which a longer tuning "
                      "replaced with other best values; their records stay in the results folder.", ""]
        for alt, key in FIGURES:
            if key in files:
                lines += [f"![{alt}]({files[key]})", ""]
        lines += provenance(dataset_records, ran, command)
        if bad:
            lines += ["", "## Unreadable records (left out)", "", *[f"- {b}" for b in bad]]
        path = Path(f"{base}.md")
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written
