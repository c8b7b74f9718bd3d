"""Speed side by side, and quality at each speed: CaLMFlow, OT-CFM (and CellFlow) on the Kang 2018 example.

On the Kang 2018 example (as ``benchmarks/scoreboard.py`` loads it: 1,000 HVGs, PCA 50) a held-out group is one
cell type's stimulated cells; every model is trained on the rest at its defaults (``--max-epochs`` to shorten).

**Quality at each speed (the frontier).** On the first ``--frontier-groups`` cell types (default 3) and each of
``--seeds`` (default 0 1 2), CaLMFlow with N = 2, 4 (its default) and 8 time points (K = 1) and OT-CFM are trained;
the held-out condition is predicted from its cell type's control cells, CaLMFlow with its key/value cache, OT-CFM
with its adaptive dopri5 solver and with Euler at 2, 4, 8 and 16 steps, and scored by ``scflowlm.tl.evaluate``
(the scoreboard's ``score``). Every setting is compared with CaLMFlow's default by ``scflowlm.tl.compare`` (paired
over conditions and seeds). Runs: ``docs/benchmarks/speed_frontier_runs.csv`` (``--resume`` keeps them and the
trained models, cached under ``benchmarks/.cache/speed``).

**Speed.** The models of the first group and seed 0 (plus CaLMFlow at the paper's N = 16 x K = 4) generate the
held-out condition at each size (``--sizes``, default 1,000 / 10,000 / 100,000 cells) with
``predict_perturbation``'s default batch size, in ``--rounds`` interleaved rounds (default 3): each round times every
setting once at each size, one after the other, so a slow spell of the machine touches all of them. A round's
cells/s is the best of ``--repeats`` calls (calls under a second are repeated until they took a second together);
each ratio to OT-CFM dopri5 is taken within a round; the table gives the medians over rounds and the ratios' range.

Also: the training time of each model (first group, seed 0), CellFlow in a venv of its own (``--skip-cellflow``
leaves it out), and the peak memory of a fresh process generating the largest size.

Usage::

    python benchmarks/speed.py --skip-cellflow --resume   # CPU: about two hours; writes docs/benchmarks/speed.md
    python benchmarks/speed.py --quick                    # one group and seed, 20 epochs, 1,000 cells: prints only
    python benchmarks/speed.py --parts timing --sizes 1000 10000 --skip-cellflow
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import scoreboard

import scflowlm
from scflowlm import tl
from scflowlm.model import CFMModel

#: the models of the frontier: name -> (class, model arguments)
FRONTIER = {
    "CaLMFlow N=2": (scflowlm.CaLMFlowModel, {"n_time_points": 2}),
    "CaLMFlow N=4 (default)": (scflowlm.CaLMFlowModel, {}),
    "CaLMFlow N=8": (scflowlm.CaLMFlowModel, {"n_time_points": 8}),
    "OT-CFM": (CFMModel, {}),
}
#: timed, not on the frontier: the paper's sequence
PAPER = {"CaLMFlow N=16 x K=4": (scflowlm.CaLMFlowModel, {"n_time_points": 16, "n_space_tokens": 4})}
CACHED = ("KV cache", {"use_cache": True})
DOPRI5 = ("dopri5 (adaptive)", {"method": "dopri5"})
EULER_STEPS = (2, 4, 8, 16)
DEFAULT = "CaLMFlow N=4 (default), KV cache"
REFERENCE = "OT-CFM, dopri5 (adaptive)"
QUALITY = ["r2_de", "pearson_delta_de", "edistance"]
CACHE = Path(__file__).resolve().parent / ".cache" / "speed"
RUNS = C.DOCS / "speed_frontier_runs.csv"
PLOT = C.DOCS / "speed_frontier.png"
#: short calls are repeated until they took this long together
MIN_TOTAL_S = 1.0


def euler(steps: int) -> tuple[str, dict]:
    return f"Euler, {steps} steps", {"method": "euler", "n_steps": steps}


def frontier_settings(name: str) -> list[tuple[str, dict]]:
    """How a frontier model generates: (label, predict_perturbation options)."""
    if name.startswith("CaLMFlow"):
        return [CACHED]
    return [DOPRI5, *(euler(s) for s in EULER_STEPS)]


def timing_rows(uncached_max_cells: int) -> list[tuple[str, str, dict, int | None]]:
    """(model, how it generates, options, most cells to time or None) of every timed row."""
    rows = [(name, how, options, None) for name in FRONTIER for how, options in frontier_settings(name)]
    rows.insert(2, ("CaLMFlow N=4 (default)", "no cache", {"use_cache": False}, uncached_max_cells))
    rows.insert(4, ("CaLMFlow N=16 x K=4", *CACHED, None))
    rows.insert(5, ("CaLMFlow N=16 x K=4", "no cache", {"use_cache": False}, uncached_max_cells))
    rows.append(("OT-CFM", *euler(100), None))
    return rows


# ---------------------------------------------------------------------- models
def trained(name: str, adata, setup: dict, group: list[dict], seed: int, train_kwargs: dict, *, resume: bool):
    """A model of :data:`FRONTIER` or :data:`PAPER` trained on everything but ``group`` (cached).

    Returns the model and ``{"seconds": train() wall seconds, "threads": torch threads it had}``.
    """
    cls, model_kwargs = (FRONTIER | PAPER)[name]
    tag = "-".join(str(v) for v in group[0].values()) + f"_{name}_{seed}_{json.dumps(train_kwargs)}"
    path = CACHE / "".join(c if c.isalnum() or c in "-_" else "_" for c in tag)
    if resume and (path / "train_s.json").exists():
        data = adata.copy()
        cls.setup_anndata(data, **setup)
        return cls.load(str(path), adata=data), json.loads((path / "train_s.json").read_text())
    model, seconds = scoreboard.train_learned(cls, model_kwargs, train_kwargs, adata, setup, group, seed)
    model.save(str(path), overwrite=True)
    timing = {"seconds": seconds, "threads": torch.get_num_threads()}
    (path / "train_s.json").write_text(json.dumps(timing))
    return model, timing


def frontier_runs(adata, setup: dict, groups: list, args, train_kwargs: dict) -> pd.DataFrame:
    """Score every frontier setting on every group and seed; the runs (appended to :data:`RUNS` as they finish)."""
    runs = pd.read_csv(RUNS) if args.resume and RUNS.exists() else pd.DataFrame()
    for group in groups:
        cond = group[0]
        for seed in args.seeds:
            for name in FRONTIER:
                done = (
                    not runs.empty
                    and (
                        (runs["cell_type"] == cond["cell_type"])
                        & (runs["seed"] == seed)
                        & (runs["model"] == name)
                    ).any()
                )
                if done:
                    continue
                model, timing = trained(name, adata, setup, group, seed, train_kwargs, resume=args.resume)
                new = []
                for how, options in frontier_settings(name):
                    pred = scoreboard.predict_learned(model, adata, cond, seed, **options)
                    scores = scoreboard.score(adata, pred, cond)
                    new.append(
                        {**cond, "model": name, "generation": how, "seed": seed, "train s": timing["seconds"]}
                        | {m: scores[m] for m in QUALITY}
                    )
                    print(new[-1], flush=True)
                runs = pd.concat([runs, pd.DataFrame(new)], ignore_index=True)
                if not args.quick:
                    runs.to_csv(RUNS, index=False)
    return runs


# ---------------------------------------------------------------------- timing
def best_rate(model, cond: dict, n_cells: int, options: dict, *, repeats: int, long_call_s: float) -> float:
    """Cells/s of the fastest of at least ``repeats`` calls, and of more while all of them took under a second
    (up to 20; short calls are noisy), or of fewer after a call longer than ``long_call_s``."""
    best, total, calls = math.inf, 0.0, 0
    while calls < repeats or (total < MIN_TOTAL_S and calls < 20):
        with C.Timer() as t:
            model.predict_perturbation(cond, n_cells=n_cells, seed=0, **options)
        best, total, calls = min(best, t.s), total + t.s, calls + 1
        if t.s > long_call_s:
            break
    return n_cells / best


def timed_rounds(models: dict, cond: dict, sizes: list[int], args) -> dict[tuple[str, str], dict[int, list]]:
    """{(model, how): {cells: [cells/s of each round]}}: every row once per round and size, in turn."""
    rows = [r for r in timing_rows(args.uncached_max_cells) if r[0] in models]
    rates: dict = {(name, how): {} for name, how, _, _ in rows}
    for r in range(args.rounds):
        for n in sizes:
            for name, how, options, most in rows:
                if most is None or n <= most:
                    rate = best_rate(
                        models[name], cond, n, options, repeats=args.repeats, long_call_s=args.long_call_s
                    )
                    rates[(name, how)].setdefault(n, []).append(rate)
        print(
            f"round {r + 1}:",
            {f"{k[0]}, {k[1]}": {n: round(v[-1]) for n, v in d.items()} for k, d in rates.items()},
        )
    return rates


def speed_cell(rates: list[float], reference: list[float]) -> str:
    """``cells/s (ratio x; min-max)``: medians over rounds, the ratio to the reference within each round."""
    ratios = [a / b for a, b in zip(rates, reference, strict=True)]
    spread = f"; {min(ratios):.2f}-{max(ratios):.2f}" if len(ratios) > 1 else ""
    return f"{statistics.median(rates):,.0f} ({statistics.median(ratios):.2f}x{spread})"


def field_evaluations(cfm, cond: dict, n_cells: int) -> float:
    """Vector-field evaluations per batch of the adaptive solver (counted on one call of ``n_cells``)."""
    calls = []
    hook = cfm.module.field.register_forward_hook(lambda *_: calls.append(1))
    try:
        cfm.predict_perturbation(cond, n_cells=n_cells, seed=0, method="dopri5")
    finally:
        hook.remove()
    return len(calls) / math.ceil(n_cells / cfm._default_batch_size())


def cellflow(adata, group: list[dict], sizes: list[int], args) -> tuple[dict, dict]:
    """CellFlow trained and timed in its venv: ({cells: cells/s}, training row)."""
    extra = ["--time-predict", *map(str, sizes), "--time-predict-repeats", str(args.cellflow_repeats)]
    res, wall = scoreboard.cellflow_output(adata, group, 0, args.cellflow_iterations, args.threads, extra)
    info = res.uns["cellflow_peer"]
    rates = {int(n): float(r) for n, r in info["predict_cells_per_s"].items()}
    row = {
        "model": "CellFlow",
        "train()": f"{args.cellflow_iterations} iterations",
        "threads": args.threads,
        "train s": float(info["seconds"]["train"]),
        "note": f"process wall {wall:.0f} s (venv start, data, JIT); its max RSS {float(info['max_rss_mb']):,.0f} MB",
    }
    return rates, row


def peak_memory(model, name: str, cond: dict, n_cells: int, tmpdir: Path, threads: int) -> dict:
    """Max RSS of a fresh process that loads the saved ``model`` and generates ``n_cells`` cells."""
    path = tmpdir / "".join(c if c.isalnum() else "_" for c in name)
    model.save(str(path), overwrite=True, save_anndata=True)
    spec = {"class": type(model).__name__, "path": str(path), "cond": cond, "n": n_cells}
    cmd = [sys.executable, __file__, "--memory-child", json.dumps(spec), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"memory child of {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def memory_child(spec: dict) -> None:
    """In a fresh process: load a saved model, generate, print the resident memory (MB) as JSON."""
    cls = {"CaLMFlowModel": scflowlm.CaLMFlowModel, "CFMModel": CFMModel}[spec["class"]]
    model = cls.load(spec["path"])
    loaded = C.peak_rss_mb()
    pred = model.predict_perturbation(spec["cond"], n_cells=spec["n"], seed=0)
    result = {"cells": pred.n_obs, "genes": pred.n_vars, "loaded MB": loaded, "peak MB": C.peak_rss_mb()}
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------- the frontier's summary
def seed_mean_ci(runs: pd.DataFrame, metric: str, level: float = 0.95) -> tuple[float, float]:
    """Mean over seeds of each seed's mean over conditions, and the half-width of its t interval over seeds."""
    per_seed = runs.groupby("seed")[metric].mean()
    if len(per_seed) < 2:
        return float(per_seed.mean()), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(per_seed) - 1) * per_seed.std(ddof=1) / math.sqrt(len(per_seed))
    return float(per_seed.mean()), float(half)


def frontier_table(
    runs: pd.DataFrame, speed: dict[str, float]
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(table, points for the plot, plain sentences) of every setting against CaLMFlow's default."""
    runs = runs.assign(setting=runs["model"] + ", " + runs["generation"])
    compared = tl.compare(
        runs[["cell_type", "setting", "seed", *QUALITY]],
        reference=DEFAULT,
        metrics=QUALITY,
        predictor_key="setting",
        condition_keys=["cell_type"],
    ).set_index(["predictor", "metric"])
    default_speed, rows, points, sentences = speed[DEFAULT], [], [], []
    for setting, sub in runs.groupby("setting", sort=False):
        row = {
            "setting": setting,
            "cells/s": f"{speed[setting]:,.0f}",
            "x default": speed[setting] / default_speed,
        }
        point = {"setting": setting, "cells/s": speed[setting]}
        for metric in QUALITY:
            mean, half = seed_mean_ci(sub, metric)
            row[metric] = f"{mean:.3f} ± {half:.3f}"
            point[metric], point[metric + " ci"] = mean, half
        verdicts = {}
        if setting != DEFAULT:
            for metric in ("r2_de", "edistance"):
                c = compared.loc[(setting, metric)]
                verdicts[metric] = c["verdict"]
                row[f"{metric} vs default"] = (
                    f"{c['difference']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] {c['verdict']}"
                )
            faster = speed[setting] >= default_speed
            as_good = all(v != "worse" for v in verdicts.values())
            row["dominates the default"] = "yes" if faster and as_good else "no"
            if setting.startswith("OT-CFM"):
                sentences.append(_sentence(setting, speed[setting] / default_speed, verdicts))
        rows.append(row)
        points.append(point)
    table = pd.DataFrame(rows).round({"x default": 2}).fillna("")
    return table, pd.DataFrame(points), sentences


def _sentence(setting: str, speed_ratio: float, verdicts: dict[str, str]) -> str:
    """Which model is ahead: OT-CFM at ``setting`` against CaLMFlow's default (verdicts are OT-CFM's)."""
    said = {"better": "OT-CFM better", "worse": "CaLMFlow better", "tie": "level"}
    if "better" in verdicts.values() and "worse" not in verdicts.values():
        ahead = "OT-CFM ahead"
    elif "worse" in verdicts.values() and "better" not in verdicts.values():
        ahead = "CaLMFlow ahead"
    elif set(verdicts.values()) == {"tie"}:
        ahead = "level"
    else:
        ahead = "each ahead on one metric"
    pace = "faster" if speed_ratio >= 1 else "slower"
    detail = ", ".join(f"{m}: {said[v]}" for m, v in verdicts.items())
    return f"- {setting}: {speed_ratio:.2f}x CaLMFlow's speed ({pace}); {detail}: **{ahead}**."


def plot_frontier(points: pd.DataFrame, size: int, path: Path) -> None:
    """Quality against speed: r2_de and E-distance of every setting (seed intervals) against its cells/s."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, label in zip(
        axes,
        ("r2_de", "edistance"),
        ("r2_de (higher is better)", "E-distance (lower is better)"),
        strict=True,
    ):
        for model, colour in (("CaLMFlow", "#1d4e89"), ("OT-CFM", "#e76f51")):
            sub = points[points["setting"].str.startswith(model)].sort_values("cells/s")
            ax.errorbar(
                sub["cells/s"],
                sub[metric],
                yerr=sub[metric + " ci"],
                fmt="o-",
                color=colour,
                label=model,
                capsize=3,
            )
            for _, p in sub.iterrows():
                # "OT-CFM, Euler, 4 steps" -> "4 steps"; "CaLMFlow N=4 (default), KV cache" -> "N=4"
                short = (
                    p["setting"].split(", ")[-1]
                    if model == "OT-CFM"
                    else p["setting"].split(" ")[1].rstrip(",")
                )
                ax.annotate(
                    short, (p["cells/s"], p[metric]), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
        ax.set_xscale("log")
        ax.set_xlabel(f"cells/s at {size:,} cells (median of the rounds)")
        ax.set_title(label)
    axes[0].legend()
    fig.suptitle("Kang 2018, held-out stimulated cell types: quality against speed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="one group and seed, 20 epochs, 1,000 cells, one round"
    )
    parser.add_argument("--parts", nargs="+", choices=("frontier", "timing"), default=["frontier", "timing"])
    parser.add_argument(
        "--resume", action="store_true", help="keep finished frontier runs and trained models"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="cells per generation call")
    parser.add_argument(
        "--frontier-size", type=int, default=10_000, help="the size whose speed the frontier plots"
    )
    parser.add_argument(
        "--frontier-groups", type=int, default=3, help="Kang cell types held out (the first ones)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=None, help="train every model this many epochs")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--repeats", type=int, default=1, help="calls per setting, size and round (the best)")
    parser.add_argument(
        "--long-call-s", type=float, default=30.0, help="no more repeats after a call this long"
    )
    parser.add_argument("--uncached-max-cells", type=int, default=10_000)
    parser.add_argument("--skip-cellflow", action="store_true", help="leave out CellFlow (no peer venv)")
    parser.add_argument("--cellflow-iterations", type=int, default=None, help="default: 2,000 (quick: 200)")
    parser.add_argument(
        "--cellflow-max-cells", type=int, default=10_000, help="CellFlow makes ~90 cells/s on a CPU"
    )
    parser.add_argument("--cellflow-repeats", type=int, default=1, help="timed CellFlow calls per size")
    parser.add_argument("--threads", type=int, default=2, help="torch (and CellFlow) CPU threads")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.frontier_groups, args.rounds = args.seeds[:1], 1, 1
    args.sizes = sorted(args.sizes or ([1_000] if args.quick else [1_000, 10_000, 100_000]))
    if args.frontier_size not in args.sizes:
        args.frontier_size = args.sizes[-1]
    args.max_epochs = args.max_epochs or (20 if args.quick else None)
    args.cellflow_iterations = args.cellflow_iterations or (200 if args.quick else 2_000)
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    if not (C.SHARED / "kang2018_muscat_example").exists():
        sys.exit(f"The Kang example is not at {C.SHARED}; it lives in ../shared/data beside the repository.")
    with C.keep_threads():
        adata, setup, groups = scoreboard.load("kang")
    train_kwargs = {} if args.max_epochs is None else {"max_epochs": args.max_epochs}
    runs = None
    if "frontier" in args.parts:
        runs = frontier_runs(adata, setup, groups[: args.frontier_groups], args, train_kwargs)
    elif RUNS.exists() and not args.quick:  # timing alone: the frontier of the runs already made
        runs = pd.read_csv(RUNS)
    if "timing" not in args.parts:
        return
    group, cond = groups[0], groups[0][0]
    models, timings = {}, {}
    for name in (*FRONTIER, *PAPER):
        fresh = args.resume or "frontier" in args.parts  # the cache is this code's
        models[name], timings[name] = trained(name, adata, setup, group, 0, train_kwargs, resume=fresh)
    rates = timed_rounds(models, cond, args.sizes, args)
    nfe = field_evaluations(models["OT-CFM"], cond, args.sizes[0])
    reference = rates[tuple(REFERENCE.split(", ", 1))]
    if not args.skip_cellflow:
        sizes = [n for n in args.sizes if n <= args.cellflow_max_cells]
        cellflow_rates, cellflow_row = cellflow(adata, group, sizes, args)
    table = pd.DataFrame(
        [
            {"model": name, "generation": how}
            | {
                f"{n:,} cells: cells/s (x dopri5; range)": speed_cell(r[n], reference[n])
                if n in r
                else "not run"
                for n in args.sizes
            }
            for (name, how), r in rates.items()
        ]
    )
    if not args.skip_cellflow:  # one call per size after the rounds: its ratio is to their median dopri5
        table.loc[len(table)] = {"model": "CellFlow", "generation": "its default solver"} | {
            f"{n:,} cells: cells/s (x dopri5; range)": (
                f"{cellflow_rates[n]:,.0f} ({cellflow_rates[n] / statistics.median(reference[n]):.2f}x)"
                if n in cellflow_rates
                else "not run"
            )
            for n in args.sizes
        }
    training = pd.DataFrame(
        [
            {
                "model": name,
                "train()": json.dumps(train_kwargs) if train_kwargs else "defaults",
                "threads": t["threads"],
                "train s": t["seconds"],
            }
            for name, t in timings.items()
        ]
        + ([cellflow_row] if not args.skip_cellflow else [])
    ).fillna("")
    training["x OT-CFM"] = (training["train s"] / timings["OT-CFM"]["seconds"]).round(2)
    training["train s"] = training["train s"].round(1)

    sections = [
        f"OT-CFM dopri5 took {nfe:.0f} vector-field evaluations per batch (its steps follow the learned field)."
    ]
    if runs is not None and not runs.empty:
        speed = {
            f"{name}, {how}": statistics.median(r[args.frontier_size]) for (name, how), r in rates.items()
        }
        frontier, points, sentences = frontier_table(runs, speed)
        plot_frontier(
            points, args.frontier_size, Path(tempfile.gettempdir()) / PLOT.name if args.quick else PLOT
        )
        n_groups, n_seeds = runs["cell_type"].nunique(), runs["seed"].nunique()
        sections.append(
            f"### Quality at each speed (the frontier)\n\n{frontier.to_markdown(index=False)}\n\n"
            f"Kang 2018, {n_groups} held-out stimulated cell types x {n_seeds} seeds (runs: "
            f"`docs/benchmarks/{RUNS.name}`). Each metric: the mean over seeds of the mean over cell types, ± the "
            "half-width of its 95% t interval over seeds. `cells/s`: at "
            f"{args.frontier_size:,} cells, the median of the rounds above; `x default`: over CaLMFlow's default. "
            "`vs default`: the setting minus CaLMFlow's default, mean over cell types and seeds with the paired "
            "bootstrap 95% CI of `scflowlm.tl.compare`, and its verdict for the setting (`better` and `worse` "
            "exclude 0). A setting *dominates the default* when it is at least as fast and not worse on r2_de or "
            "E-distance.\n\n![quality against speed](speed_frontier.png)\n\n" + "\n".join(sentences)
        )
    with tempfile.TemporaryDirectory() as tmp:
        memory = pd.DataFrame(
            [
                {"model": name, "generation": how}
                | peak_memory(models[name], name, cond, args.sizes[-1], Path(tmp), args.threads)
                for name, how in (
                    ("CaLMFlow N=4 (default)", "KV cache"),
                    ("CaLMFlow N=16 x K=4", "KV cache"),
                    ("OT-CFM", "dopri5 (adaptive)"),
                )
            ]
        ).round(0)
    trained_with = "each model's default train()" if args.max_epochs is None else f"{args.max_epochs} epochs"
    notes = (
        f"Kang 2018, {cond['cell_type']} stimulated held out and predicted from its control cells; models trained "
        f"on the rest (seed 0) with {trained_with}. {args.rounds} interleaved rounds; in each, every row is timed "
        f"once per size (the best of {args.repeats} call(s), calls under a second repeated until they took a "
        f"second together, up to 20) at `predict_perturbation`'s default batch size. Cells/s: the median over "
        "rounds; in brackets the ratio to OT-CFM dopri5 of the same round, median and range (min-max) over "
        f"rounds. CaLMFlow without the cache only up to {args.uncached_max_cells:,} cells. "
        + " ".join(sections[:1])
        + "\n\n"
        + "\n\n".join(sections[1:])
        + "\n\n### Training\n\n"
        + training.to_markdown(index=False)
        + f"\n\n### Peak memory generating {args.sizes[-1]:,} cells\n\n"
        + memory.to_markdown(index=False)
        + "\n\nMax RSS of a fresh process that loads the saved model (with its AnnData) and generates the cells "
        "(`loaded MB`: after loading; the prediction's genes x cells are part of the peak)."
    )
    title = "Speed side by side" + (
        " (quick: small sizes, short training; not the full run)" if args.quick else ""
    )
    if args.quick:  # a check that the script runs: printed, not written over the docs' table
        print(C.table_text(title, table, command=C.command_line(), notes=notes))
    else:
        C.write_table("speed", title, table, command=C.command_line(), notes=notes)


if __name__ == "__main__":
    main()
