"""Writing the boards: per dataset, markdown with figures and summary JSON, or CSV, or JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bench.leaderboards.answers import answers, per_seed_note
from bench.leaderboards.collect import (
    find_records,
    group_records,
    is_eval_record,
    superseded,
)
from bench.leaderboards.compare import ALPHA, MARGIN, comparisons_vs_ce, precision_note
from bench.leaderboards.figures import plots, search_plot, search_points
from bench.leaderboards.formats import numeric_tables, summary
from bench.leaderboards.longtail import shot_classes, shots_heading, shots_table
from bench.leaderboards.provenance import provenance
from bench.leaderboards.tables import (
    incomplete_table,
    main_table,
    paired_table,
    per_class_table,
    search_table,
)
from bench.leaderboards.text import markdown, plural, slug

SECTIONS = (
    ("## Paired comparison against cross-entropy (same model, same seeds; Holm-corrected over this table)",
     "paired_vs_ce"),
    ("## The search: what each row's studies chose, and how decided they were (re-tuning spread: the "
     "chosen lr over seeds; a wide span within one standard error of the best: the objective is flat "
     "there; best on the shared lr grid: the studies the sampler's own trials did not improve)",
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

        raise UsageError(f"no run records found under {', '.join(map(str, paths))}; run 'bench run' or "
                         "'bench grid' first")
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
            trials = [r for r in records if r["dataset"]["name"] == dataset and not is_eval_record(r)]
            studies = {r["trial"].get("study") for r in trials}
            tuning = (f" The tuning so far: {plural(len(trials), 'trial run')} in {len(studies)} "
                      f"{'study' if len(studies) == 1 else 'studies'}; the table and the search figure "
                      "come with the first completed eval run." if trials else "")
            failed = incomplete_table(records, dataset)
            path = out / f"leaderboard-{slug(dataset)}.md"
            listed = "" if failed.empty else f"\n## Runs that did not complete\n\n{markdown(failed)}\n"
            path.write_text(f"# {dataset}\n\nNo completed eval runs yet.{tuning}\n{listed}")
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
        # the summary (rows, comparisons with verdicts, answer, compute) and the flat tables
        if fmt_ == "json":
            path = Path(f"{base}.json")
            flat = {k: df.astype(object).where(df.notna(), None).to_dict(orient="records")
                    for k, df in numeric_tables(board, groups).items()}
            path.write_text(json.dumps(board | flat, indent=2, allow_nan=False) + "\n")
            written.append(path)
            continue
        files = plots(groups, out, dataset)
        if search := search_plot(search_points(groups, [r for r in ran if not is_eval_record(r)]), out,
                                 dataset):
            files["search"] = search
        summary_path = out / f"summary-{slug(dataset)}.json"
        # beside the table, not listed
        summary_path.write_text(json.dumps(board, indent=2, allow_nan=False) + "\n")
        dataset_records = [r for g in groups for r in g.records]
        lines = [
            f"# {dataset}: model x loss leaderboard",
            "",
            f"{len(dataset_records)} completed runs in {len(groups)} configurations. Test-split metrics, "
            "mean ± std over seeds, 95% t-interval for the mean accuracy. 'vs leader': a t-test of each "
            "row's test accuracy against the leader's (paired on common seeds), Holm-corrected over the "
            f"table; '≈ leader' where p_Holm ≥ {ALPHA:g}, so the data cannot separate them."
            + (" Rows of a single seed come after those of several and are not tested."
               if len({g.several_seeds for g in groups}) == 2 else ""),
            "",
            markdown(tables["main"]),
            "",
            "## Answer: which loss, and how sure",
            "",
            "Verdicts against plain ce of the same model, on paired seeds: **better** or **worse** where "
            f"the difference is separable (paired t-test, Holm over the table, at {ALPHA:g}); **equivalent "
            f"within ±{margin * 100:g} pp** where a paired equivalence test (TOST, Holm) shows the "
            "difference inside that practical margin; **undecided** otherwise. P(beats ce): the share of "
            "paired seeds on which the loss scored higher (ties count half). "
            + " ".join(note for note in (per_seed_note(groups), precision_note(comparisons)) if note),
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
                      f"({', '.join(sorted({r['tuning']['study'] for r in left_out}))}), which a longer "
                      "tuning replaced with other best values; their records stay in the results "
                      "folder.", ""]
        for alt, key in FIGURES:
            if key in files:
                lines += [f"![{alt}]({files[key]})", ""]
        by_model = sorted({(g.model, g.model_settings) for g in groups if g.model_settings})
        lines += provenance(dataset_records, ran, command, by_model)
        if bad:
            lines += ["", "## Unreadable records (left out)", "", *[f"- {b}" for b in bad]]
        path = Path(f"{base}.md")
        path.write_text("\n".join(lines) + "\n")
        written.append(path)
    return written
