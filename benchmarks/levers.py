"""What moved the numbers: every lever tried on the scoreboard, against the reference on the same held-out conditions.

Each lever was one run of ``benchmarks/scoreboard.py`` (``--seeds 0 1`` or ``0 1 2``, ``--skip-cellflow``, one or
two threads, with the lever's ``--calmflow`` / ``--train`` / ``--variants`` arguments, on all or the first few
held-out conditions; the machine shared with other jobs, so the times are only comparable within a lever). The
reference rows are a scoreboard's own CaLMFlow runs at seeds 0 and 1: the one before the compose work for the
levers of that time, today's for the compose levers (:data:`LEVERS` says which). Their per-run rows are collected
in ``docs/benchmarks/levers_runs.csv`` with a ``lever`` column naming the setting. This script reads that file and
writes ``docs/benchmarks/levers.md``: per lever, data set and model, the mean over held-out conditions of the seed
means, the mean seed sd of top-100 DE R^2, and the reference row on the same held-out conditions and seeds, so that
a lever tried on a subset is compared fairly.

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

#: the model whose reference rows a lever is compared with
REFERENCE_MODEL = "CaLMFlow"
#: the reference levers: the chosen settings of their time, the scoreboard's own CaLMFlow runs at seeds 0 and 1
BEFORE = "defaults before the compose work (scoreboard runs, seeds 0-1)"
TODAY = "today's defaults (scoreboard runs, seeds 0-1)"
SHOWN = {
    "r2_de": "r2_de",
    "pearson_delta_de": "Δr_de",
    "pearson_interaction_de": "interaction r",
    "edistance": "E-distance",
}
# What each lever changed, and the reference it is read against. The levers before the compose work are in the
# arguments of that time's CaLMFlowModel / train() (those before the "3,000 steps" lever trained 4,000 steps).
LEVERS = {
    "start: N=8, control identity flows": (
        "n_time_points=8, control_targets=True (the release before)",
        BEFORE,
    ),
    "+ nearest-context start (N=8)": (
        'n_time_points=8, control_targets=True, start_shift="nearest_context"',
        BEFORE,
    ),
    "+ nearest-context start (N=4)": ('control_targets=True, start_shift="nearest_context"', BEFORE),
    "+ prompt dropout 0.5 (N=4)": ("control_targets=True, prompt_dropout=0.5", BEFORE),
    "N=4, no control identity flows": ("the defaults of then, 4,000 steps", BEFORE),
    "N=4, no control flows, EMA 0.999": ("train(ema_decay=0.999), 4,000 steps", BEFORE),
    "N=4, no control flows, 3,000 steps": ("the defaults of then (3,000 steps)", BEFORE),
    BEFORE: ("none: that scoreboard's own CaLMFlow rows (no condition encoder, no prior)", BEFORE),
    "defaults before the compose work, 6,000 steps": ("train(max_steps=6000)", BEFORE),
    "defaults before the compose work + nearest-context start": ('start_shift="nearest_context"', BEFORE),
    "compose: encoder + additive prior, CVAE head, random minibatches": (
        "condition encoder, start_shift='additive', variational='cvae', datasplitter conditions_per_batch=None",
        TODAY,
    ),
    "compose: + 4 conditions per minibatch": (
        "the same, conditions_per_batch=4",
        TODAY,
    ),
    "compose: + 1 condition per minibatch": ("the same, conditions_per_batch=1 (kept)", TODAY),
    "compose: + deterministic head with a head start": (
        "variational='auto' (kept; 'none' with a head start); words of no training prompt still read",
        TODAY,
    ),
    "compose: condition encoder, no prior": ("start_shift='none' (so variational='cvae')", TODAY),
    "compose work in progress on Kang (CVAE head, no prior there)": (
        "condition encoder; Kang has no combination, so no head start",
        TODAY,
    ),
    "compose: deterministic head without a head start": (
        "variational='none' on Kang (no prior there)",
        TODAY,
    ),
    TODAY: ("none: the scoreboard's own CaLMFlow rows", TODAY),
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
        changed, reference = LEVERS.get(lever, ("", TODAY))
        row = {
            "lever": lever,
            "changed": changed,
            "dataset": dataset,
            "model": model,
            "conditions": len(held),
            "seeds": len(seeds),
        }
        row |= {name: round(block[m].mean(), 2 if m == "edistance" else 3) for m, name in SHOWN.items()}
        row["r2_de sd"] = round(sds.loc[(lever, dataset, model)].mean(), 3)
        row["train s"] = round(block["train s"].mean())
        ref = runs[
            (runs["lever"] == reference)
            & (runs["model"] == REFERENCE_MODEL)
            & (runs["dataset"] == dataset)
            & runs["held out"].isin(held)
            & runs["seed"].isin(seeds)
        ]
        ref_means = ref.groupby("held out")[list(SHOWN)].mean()
        complete = len(ref_means) == len(held)
        row["reference r2_de / Δr_de / interaction r / E"] = (
            " / ".join(f"{ref_means[m].mean():.{2 if m == 'edistance' else 3}f}" for m in SHOWN)
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
            f"Reference: {REFERENCE_MODEL} of the lever '{BEFORE}' for the levers before the compose work, of "
            f"'{TODAY}' for the compose levers (the chosen settings of their time), on the same held-out conditions "
            "and seeds as the row. r2_de / Δr_de / interaction r / E-distance: means over the row's held-out "
            "conditions of the seed means (higher, higher, higher, lower is better; the interaction score needs both "
            "singles measured, n.a. before the compose work); r2_de sd: the mean over conditions of the seed sd. "
            "The OT-CFM rows are the CFM baseline within the same run: `OT-CFM` with control identity flows (its default "
            "then), `CFM-noctl` without (its default now). Per-run rows: `docs/benchmarks/levers_runs.csv`."
        ),
    )


if __name__ == "__main__":
    main()
