"""What moved the numbers: every lever tried on the scoreboard, against the reference on the same held-out conditions.

Each lever was one run of ``benchmarks/scoreboard.py`` (``--seeds 0 1 --skip-cellflow``, one or two threads, with
the lever's ``--calmflow`` / ``--train`` / ``--variants`` arguments, on all or the first few held-out conditions;
the machine shared with other jobs, so the times are only comparable within a lever). The reference rows are the
final scoreboard's own CaLMFlow runs at seeds 0 and 1. Their per-run rows are
collected in ``docs/benchmarks/levers_runs.csv`` with a ``lever`` column naming the setting. This script reads
that file and writes ``docs/benchmarks/levers.md``: per lever, data set and model, the mean over held-out
conditions of the seed means, the mean seed sd of top-100 DE R^2, and the reference row (``REFERENCE``, the
chosen setting) on the same held-out conditions and seeds, so that a lever tried on a subset is compared fairly.

Usage::

    python benchmarks/levers.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

REFERENCE = ("today's defaults (scoreboard runs, seeds 0-1)", "CaLMFlow")
SHOWN = {"r2_de": "r2_de", "pearson_delta_de": "Δr_de", "edistance": "E-distance"}
# What each lever changed, in the arguments of today's CaLMFlowModel / train() (the runs before the
# "3,000 steps" lever trained 4,000 steps, the default of the time).
LEVERS = {
    "start: N=8, control identity flows": "n_time_points=8, control_targets=True (the release before)",
    "+ nearest-context start (N=8)": 'n_time_points=8, control_targets=True, start_shift="nearest_context"',
    "+ nearest-context start (N=4)": 'control_targets=True, start_shift="nearest_context"',
    "+ prompt dropout 0.5 (N=4)": "control_targets=True, prompt_dropout=0.5",
    "N=4, no control identity flows": "today's defaults, 4,000 steps",
    "N=4, no control flows, EMA 0.999": "train(ema_decay=0.999), 4,000 steps",
    "N=4, no control flows, 3,000 steps": "today's defaults (3,000 steps)",
    "today's defaults (scoreboard runs, seeds 0-1)": "none: the scoreboard's own CaLMFlow rows",
    "today's defaults, 6,000 steps": "train(max_steps=6000)",
    "today's defaults + nearest-context start": 'start_shift="nearest_context"',
}


def lever_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (lever, data set, model): its means and the reference's on the same conditions and seeds."""
    per_cond = runs.groupby(["lever", "dataset", "model", "held out"], sort=False)
    means = per_cond[[*SHOWN, "train s"]].mean()
    sds = per_cond["r2_de"].std().fillna(0.0).sort_index()
    rows = []
    for (lever, dataset, model), block in means.groupby(level=["lever", "dataset", "model"], sort=False):
        held = block.index.get_level_values("held out")
        seeds = sorted(set(runs.loc[(runs["lever"] == lever) & (runs["dataset"] == dataset), "seed"]))
        row = {
            "lever": lever,
            "changed": LEVERS.get(lever, ""),
            "dataset": dataset,
            "model": model,
            "conditions": len(held),
            "seeds": len(seeds),
        }
        row |= {name: round(block[m].mean(), 1 if m == "edistance" else 3) for m, name in SHOWN.items()}
        row["r2_de sd"] = round(sds.loc[(lever, dataset, model)].mean(), 3)
        row["train s"] = round(block["train s"].mean())
        ref = runs[
            (runs["lever"] == REFERENCE[0])
            & (runs["model"] == REFERENCE[1])
            & (runs["dataset"] == dataset)
            & runs["held out"].isin(held)
            & runs["seed"].isin(seeds)
        ]
        ref_means = ref.groupby("held out")[list(SHOWN)].mean()
        complete = len(ref_means) == len(held)
        row["reference r2_de / Δr_de / E"] = (
            " / ".join(f"{ref_means[m].mean():.{1 if m == 'edistance' else 3}f}" for m in SHOWN)
            if complete
            else "n.a."
        )
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    runs = pd.read_csv(C.DOCS / "levers_runs.csv", dtype={"held out": str})
    table = lever_table(runs)
    C.write_table(
        "levers",
        "What moved the numbers: the levers tried on the scoreboard",
        table,
        command=C.command_line(),
        notes=(
            f"Reference: {REFERENCE[1]} with the lever '{REFERENCE[0]}' (the chosen setting), on the same held-out "
            "conditions and seeds as the row. r2_de / Δr_de / E-distance: means over the row's held-out conditions "
            "of the seed means (higher, higher, lower is better); r2_de sd: the mean over conditions of the seed sd. "
            "The OT-CFM rows are the CFM baseline within the same run: `OT-CFM` with control identity flows (its default "
            "then), `CFM-noctl` without (its default now). Per-run rows: `docs/benchmarks/levers_runs.csv`."
        ),
    )


if __name__ == "__main__":
    main()
