"""Speed side by side at today's defaults: generation and training of CaLMFlow, OT-CFM and CellFlow, and memory.

On the Kang 2018 example (as ``benchmarks/scoreboard.py`` loads it: 1,000 HVGs, PCA 50), one cell type's
stimulated cells are held out (``--held-out``, default the first type) and every model is trained on the rest with
its default ``train()`` (or ``--max-epochs`` epochs: the weights do not change the cost of CaLMFlow or of a
fixed-step solver, but they do change the steps the adaptive dopri5 solver takes, so OT-CFM is timed after real
training). Then, in one process, the held-out condition is predicted from its cell type's control cells at each
size (``--sizes``, default 1,000 / 10,000 / 100,000 cells), with ``predict_perturbation``'s default batch size:

- CaLMFlow at its default sequence (N=4 time points x K=1 space token) and at the paper's (N=16 x K=4), each with
  and without the KV cache (``use_cache``; without it only up to ``--uncached-max-cells``);
- OT-CFM (:class:`scflowlm.model.CFMModel`) with its default adaptive ``dopri5`` solver and with fixed-step Euler
  of 4 and 16 steps (CaLMFlow's time points) and of 100 steps (``method="euler", n_steps=...``);
- CellFlow (``cellflow-tools``, in a venv of its own made by ``benchmarks/_peers.py``; ``--skip-cellflow`` leaves
  it out), its own default solver, trained ``--cellflow-iterations`` iterations, timed up to ``--cellflow-max-cells``
  cells (``--cellflow-repeats`` calls after a warm-up that compiles; on a CPU it makes about 90 cells/s).

Generation cells/s are the best of ``--repeats`` calls (fewer when one call takes over ``--long-call-s``), each
with its ratio to OT-CFM dopri5 at the same size. Training: the wall seconds of each model's ``train()`` and
their ratio to OT-CFM's. Memory: the peak resident memory (max RSS) of a fresh process that loads a saved model
and generates the largest size.

Usage::

    python benchmarks/speed.py                  # everything (CPU: tens of minutes), writes docs/benchmarks/speed.md
    python benchmarks/speed.py --quick          # 1,000 cells, 20 training epochs: a check that it runs (a few minutes)
    python benchmarks/speed.py --sizes 1000 10000 --skip-cellflow
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import scoreboard

import scflowlm
from scflowlm.model import CFMModel

#: the learned models of this package: name -> (class, model arguments)
MODELS = {
    "CaLMFlow N=4 x K=1": (scflowlm.CaLMFlowModel, {}),
    "CaLMFlow N=16 x K=4": (scflowlm.CaLMFlowModel, {"n_time_points": 16, "n_space_tokens": 4}),
    "OT-CFM": (CFMModel, {}),
}
REFERENCE = ("OT-CFM", "dopri5 (adaptive)")
#: short calls are repeated until they took this long together
MIN_TOTAL_S = 1.0


def generation_rows(uncached_max_cells: int) -> list[tuple[str, str, dict, int | None]]:
    """(model, how it generates, predict_perturbation options, most cells to time or None) of every row."""
    rows = []
    for name in ("CaLMFlow N=4 x K=1", "CaLMFlow N=16 x K=4"):
        rows.append((name, "KV cache", {"use_cache": True}, None))
        rows.append((name, "no cache", {"use_cache": False}, uncached_max_cells))
    rows.append(("OT-CFM", "dopri5 (adaptive)", {"method": "dopri5"}, None))
    for steps in (4, 16, 100):
        rows.append(("OT-CFM", f"Euler, {steps} steps", {"method": "euler", "n_steps": steps}, None))
    return rows


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


def field_evaluations(cfm, cond: dict, n_cells: int) -> float:
    """Vector-field evaluations per batch of the adaptive solver (counted on one call of ``n_cells``)."""
    calls = []
    hook = cfm.module.field.register_forward_hook(lambda *_: calls.append(1))
    try:
        cfm.predict_perturbation(cond, n_cells=n_cells, seed=0, method="dopri5")
    finally:
        hook.remove()
    batch = cfm._default_batch_size()  # predict_perturbation's batch_size=None
    return len(calls) / math.ceil(n_cells / batch)


def train_models(adata, setup: dict, group: list[dict], train_kwargs: dict) -> tuple[dict, list[dict]]:
    """Every model of :data:`MODELS` trained side by side (scoreboard's ``train_learned``); (models, rows)."""
    models, rows = {}, []
    for name, (cls, model_kwargs) in MODELS.items():
        model, seconds = scoreboard.train_learned(
            cls, model_kwargs, train_kwargs, adata, setup, group, seed=0
        )
        models[name] = model
        rows.append(
            {
                "model": name,
                "train()": json.dumps(train_kwargs) if train_kwargs else "defaults",
                "steps": int(model.trainer.global_step),
                "train s": seconds,
            }
        )
        print(rows[-1], flush=True)
    return models, rows


def cellflow(adata, group: list[dict], sizes: list[int], args) -> tuple[dict, dict]:
    """CellFlow trained and timed in its venv: ({cells: cells/s}, training row)."""
    extra = ["--time-predict", *map(str, sizes), "--time-predict-repeats", str(args.cellflow_repeats)]
    res, wall = scoreboard.cellflow_output(adata, group, 0, args.cellflow_iterations, args.threads, extra)
    info = res.uns["cellflow_peer"]
    rates = {int(n): float(r) for n, r in info["predict_cells_per_s"].items()}
    row = {
        "model": "CellFlow",
        "train()": f"{args.cellflow_iterations} iterations",
        "steps": args.cellflow_iterations,
        "train s": float(info["seconds"]["train"]),
        "note": f"process wall {wall:.0f} s (venv start, data, JIT); its max RSS {float(info['max_rss_mb']):,.0f} MB",
    }
    return rates, row


def peak_memory(
    model, name: str, cond: dict, n_cells: int, options: dict, tmpdir: Path, threads: int
) -> dict:
    """Max RSS of a fresh process that loads the saved ``model`` and generates ``n_cells`` cells."""
    path = tmpdir / name.replace(" ", "_").replace("=", "")
    model.save(str(path), overwrite=True, save_anndata=True)
    spec = {"class": type(model).__name__, "path": str(path), "cond": cond, "n": n_cells, "options": options}
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
    pred = model.predict_perturbation(spec["cond"], n_cells=spec["n"], seed=0, **spec["options"])
    peak = C.peak_rss_mb()
    result = {"cells": pred.n_obs, "genes": pred.n_vars, "loaded MB": loaded, "peak MB": peak}
    print("RESULT " + json.dumps(result), flush=True)


def ratio_cell(rate: float, reference: float) -> str:
    return f"{rate:,.0f} ({rate / reference:.2f}x)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="1,000 cells, 20 epochs, 200 CellFlow iterations"
    )
    parser.add_argument("--sizes", nargs="+", type=int, default=None, help="cells per generation call")
    parser.add_argument(
        "--max-epochs", type=int, default=None, help="train every model this many epochs (default: its own)"
    )
    parser.add_argument("--held-out", default=None, help="Kang cell type held out (default: the first)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--long-call-s", type=float, default=30.0, help="no more repeats after a call this long"
    )
    parser.add_argument("--uncached-max-cells", type=int, default=10_000)
    parser.add_argument("--skip-cellflow", action="store_true", help="leave out CellFlow (no peer venv)")
    parser.add_argument("--cellflow-iterations", type=int, default=None, help="default: 2,000 (quick: 200)")
    parser.add_argument(
        "--cellflow-max-cells",
        type=int,
        default=10_000,
        help="time CellFlow up to this size (on a CPU it makes about 90 cells/s: 100,000 cells take 20 minutes a call)",
    )
    parser.add_argument("--cellflow-repeats", type=int, default=1, help="timed CellFlow calls per size")
    parser.add_argument("--threads", type=int, default=2, help="torch (and CellFlow) CPU threads")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    sizes = sorted(args.sizes or ([1_000] if args.quick else [1_000, 10_000, 100_000]))
    max_epochs = args.max_epochs or (20 if args.quick else None)
    train_kwargs = {} if max_epochs is None else {"max_epochs": max_epochs}
    args.cellflow_iterations = args.cellflow_iterations or (200 if args.quick else 2_000)

    if not (C.SHARED / "kang2018_muscat_example").exists():
        sys.exit(f"The Kang example is not at {C.SHARED}; it lives in ../shared/data beside the repository.")
    with C.keep_threads():
        adata, setup, groups = scoreboard.load("kang")
    group = (
        next((g for g in groups if g[0]["cell_type"] == args.held_out), None) if args.held_out else groups[0]
    )
    if group is None:
        sys.exit(
            f"--held-out {args.held_out!r} is not a Kang cell type; pass one of {[g[0]['cell_type'] for g in groups]}."
        )
    cond = group[0]
    models, train_rows = train_models(adata, setup, group, train_kwargs)

    rates: dict[tuple[str, str], dict[int, float]] = {}
    for name, how, options, most in generation_rows(args.uncached_max_cells):
        rates[(name, how)] = {
            n: best_rate(models[name], cond, n, options, repeats=args.repeats, long_call_s=args.long_call_s)
            for n in sizes
            if most is None or n <= most
        }
        print(name, how, {n: round(r) for n, r in rates[(name, how)].items()}, flush=True)
    nfe = field_evaluations(models["OT-CFM"], cond, sizes[0])
    if not args.skip_cellflow:
        cellflow_sizes = [n for n in sizes if n <= args.cellflow_max_cells]
        rates[("CellFlow", "its default solver")], row = cellflow(adata, group, cellflow_sizes, args)
        train_rows.append(row)
        print(row, rates[("CellFlow", "its default solver")], flush=True)

    reference = rates[REFERENCE]
    table = pd.DataFrame(
        [
            {"model": name, "generation": how}
            | {
                f"{n:,} cells: cells/s (x dopri5)": ratio_cell(r[n], reference[n]) if n in r else "not run"
                for n in sizes
            }
            for (name, how), r in rates.items()
        ]
    )
    training = pd.DataFrame(train_rows).fillna("")
    cfm_s = training.loc[training["model"] == "OT-CFM", "train s"].iloc[0]
    training["x OT-CFM"] = (training["train s"] / cfm_s).round(2)
    training["train s"] = training["train s"].round(1)
    cache = [
        f"{name}: {rates[(name, 'KV cache')][n] / rates[(name, 'no cache')][n]:.1f}x at {n:,} cells"
        for name in ("CaLMFlow N=4 x K=1", "CaLMFlow N=16 x K=4")
        for n in sizes
        if n in rates[(name, "no cache")]
    ]
    with tempfile.TemporaryDirectory() as tmp:
        memory = pd.DataFrame(
            [
                {"model": name, "generation": how}
                | peak_memory(models[name], name, cond, sizes[-1], options, Path(tmp), args.threads)
                for name, how, options in (
                    ("CaLMFlow N=4 x K=1", "KV cache", {}),
                    ("CaLMFlow N=16 x K=4", "KV cache", {}),
                    ("OT-CFM", "dopri5 (adaptive)", {}),
                )
            ]
        ).round(0)
    cellflow_note = (
        ""
        if args.skip_cellflow
        else f"CellFlow: the best of {args.cellflow_repeats} call(s) after a warm-up call of the same size (JAX "
        f"compiles each new shape), up to {args.cellflow_max_cells:,} cells (`--cellflow-max-cells`). "
    )
    trained = "each model's default train()" if max_epochs is None else f"{max_epochs} epochs (--max-epochs)"
    notes = (
        f"Kang 2018, {cond['cell_type']} stimulated held out and predicted from its control cells; models trained "
        f"on the rest with {trained}. Generation: best of {args.repeats} `predict_perturbation` calls (fewer after a "
        f"call over {args.long_call_s:.0f} s) at its default batch size; in brackets the ratio to OT-CFM dopri5 at "
        f"the same size, measured in the same run. OT-CFM dopri5 took {nfe:.0f} vector-field evaluations per batch "
        f"(its step count follows the learned field). {cellflow_note}CaLMFlow without the cache only up to "
        f"{args.uncached_max_cells:,} cells (`--uncached-max-cells`); calls shorter than a second are repeated until "
        "they took a second together (up to 20). KV cache speed-up: " + "; ".join(cache) + ".\n\n"
        "### Training\n\n" + training.to_markdown(index=False) + "\n\n"
        f"### Peak memory generating {sizes[-1]:,} cells\n\n" + memory.to_markdown(index=False) + "\n\n"
        "Max RSS of a fresh process that loads the saved model (with its AnnData) and generates the cells "
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
