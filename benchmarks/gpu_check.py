"""A GPU check in one run (about 8 minutes on one H200): throughput, memory, large backed data, held-out Kang.

What it measures, each on the GPU through ``model.train(accelerator="gpu", devices=1, precision=...)`` and
``predict_perturbation``:

- **throughput** at the ``cpu`` and ``paper`` presets (:data:`scflowlm.model.PRESETS`; ``paper`` on a
  random-init GPT-NeoX the size of Pythia-160M, 12 layers x 768, no download), in fp32 (``"32-true"``) and bf16
  (``"bf16-mixed"``; generation under ``torch.autocast``), with PyTorch SDPA and, when the ``flash_attn`` package
  is installed (``pip install -e .[gpu]``), flash attention 2: training cells/s over timed steps after a warm-up,
  generation cells/s with and without the KV cache (their ratio is the cache's speed-up) and the peak GPU memory
  (``torch.cuda.max_memory_allocated``) of training and of generation;
- **a million cells from a backed AnnData**: a synthetic ``.h5ad`` (1M cells, 100 genes, ``obsm["X_pca"]``, written
  by ``benchmarks/scale.py``'s ``make_data``) opened with ``backed="r"``, ``setup_anndata``, then a few hundred
  training steps (steps/s);
- **the Kang scoreboard rows at the ``paper`` preset** with one seed: each cell type's stimulated cells held out
  in turn, trained with the model's defaults in bf16 and scored as ``benchmarks/scoreboard.py`` does (its ``load``,
  ``train_learned``, ``predict_learned`` and ``score``). The Kang data lives beside the repository
  (``../shared/data``); without it a synthetic data set takes its place (the table says so).

Any NaN or infinite value in a training loss or a prediction, or any error, marks its row ``FAILED``; the script
then prints every failure and exits with status 1 after the table. On a GPU the table is written to
``docs/benchmarks/gpu_check.md`` (or ``--out``). ``--dry-run`` runs the same code on the CPU at tiny sizes (a tiny
backbone, a few cells and steps; bf16 as CPU autocast) in under a minute, so the script cannot rot unnoticed
(``tests/test_gpu_check.py``).

Usage::

    python benchmarks/gpu_check.py                 # on a GPU machine: prints and writes docs/benchmarks/gpu_check.md
    python benchmarks/gpu_check.py --out check.md  # elsewhere
    python benchmarks/gpu_check.py --dry-run       # the same code paths on the CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib.util
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd
import scvi
import torch
from transformers import GPTNeoXConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C
import scale
import scoreboard

import scflowlm
from scflowlm.model import PRESETS

HELD = {"cell_type": "NK", "condition": "IFNB+TNF"}
SYNTHETIC_SETUP = {
    "prompt_template": "Generate a {cell_type} cell stimulated with {condition}:",
    "control_template": "Generate an unstimulated {cell_type} cell:",
    "perturbation_key": "condition",
    "control_value": "control",
}
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed"}
FLASH = "flash_attention_2"
#: (preset, precision, attention) of the throughput rows
CONFIGS = [
    (preset, precision, attention)
    for preset in ("cpu", "paper")
    for precision, attention in (("fp32", "sdpa"), ("bf16", "sdpa"), ("bf16", FLASH))
]
COLUMNS = [
    "preset",
    "backbone",
    "precision",
    "attention",
    "train cells/s",
    "generate cells/s (KV cache)",
    "generate cells/s (no cache)",
    "KV cache speed-up",
    "peak GPU MB (train)",
    "peak GPU MB (generate)",
]


class NonFiniteError(RuntimeError):
    """A training loss or a prediction holds NaN or infinite values."""


@dataclasses.dataclass
class Sizes:
    """How big each part of the check is (the GPU run, or the CPU dry run)."""

    accelerator: str
    paper_backbone: GPTNeoXConfig
    cells_per_condition: int  # synthetic throughput data: 12 conditions of this many cells
    warmup_steps: int
    timed_steps: int
    generate_cells: int
    big_cells: int  # the backed AnnData
    big_steps: int
    kang_holdouts: int
    kang_train: dict  # extra train() arguments of the Kang rows (none: the model's defaults)


def sizes(*, dry_run: bool) -> Sizes:
    """The GPU check's sizes, or tiny ones on the CPU for ``--dry-run``."""
    if dry_run:
        tiny = GPTNeoXConfig(
            vocab_size=256,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=512,
        )
        return Sizes("cpu", tiny, 24, 2, 4, 32, 20_000, 6, 1, {"max_epochs": 1})
    pythia_160m = GPTNeoXConfig(  # the architecture of EleutherAI/pythia-160m, random weights
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=2048,
        rotary_pct=0.25,
        use_parallel_residual=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return Sizes("gpu", pythia_160m, 1_000, 20, 200, 10_000, 1_000_000, 300, 5, {})


def model_kwargs(preset: str, size: Sizes) -> dict:
    """CaLMFlowModel arguments of a preset (``paper``: on the Pythia-160M-sized backbone)."""
    kwargs = dict(PRESETS[preset])
    if preset == "paper":
        kwargs["backbone"] = size.paper_backbone
    return kwargs


def check_finite(what: str, values) -> None:
    """Raise :class:`NonFiniteError` naming ``what`` when ``values`` hold NaN or infinite numbers."""
    values = np.asarray(values, dtype=np.float64)
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise NonFiniteError(f"{what}: {bad} of {values.size} values are NaN or infinite.")


def check_prediction(what: str, pred) -> None:
    """Every generated value (genes and states) is finite."""
    check_finite(f"{what} (X)", pred.X)
    for key, value in pred.obsm.items():
        check_finite(f"{what} (obsm[{key!r}])", value)


def check_history(what: str, model) -> None:
    """Every recorded training loss is finite (a NaN step already stops training with NonFiniteLossError)."""
    for key, frame in (model.history or {}).items():
        if "loss" in key:
            check_finite(f"{what}: {key}", frame.to_numpy())


def on_gpu() -> bool:
    return torch.cuda.is_available()


@contextlib.contextmanager
def peak_gpu_mb(out: dict, key: str):
    """Record the peak GPU memory allocated inside the block (MB) as ``out[key]``; "n/a" on the CPU.

    Models of earlier rows are collected first, so the peak is this block's own (with what it keeps allocated).
    """
    if on_gpu():
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    yield
    out[key] = f"{torch.cuda.max_memory_allocated() / 2**20:,.0f}" if on_gpu() else "n/a"


def generation_context(precision: str, accelerator: str):
    """bf16 rows generate under autocast (as Lightning trains them); fp32 rows as they are."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast("cuda" if accelerator == "gpu" else "cpu", dtype=torch.bfloat16)


def generate_rate(model, n_cells: int, *, use_cache: bool) -> tuple[float, object]:
    """Cells/s of one ``predict_perturbation`` call of ``n_cells`` (after a small warm-up call)."""
    model.predict_perturbation(HELD, n_cells=min(n_cells, 256), seed=1, use_cache=use_cache)
    with C.Timer() as t:
        pred = model.predict_perturbation(HELD, n_cells=n_cells, seed=0, use_cache=use_cache)
    return n_cells / t.s, pred


def throughput_data(size: Sizes):
    adata = scflowlm.data.synthetic_perturbation(
        n_cells_per_condition=size.cells_per_condition, n_genes=200, n_pcs=50, seed=0
    )
    scflowlm.CaLMFlowModel.setup_anndata(adata, **SYNTHETIC_SETUP)
    return adata


def throughput_row(adata, preset: str, precision: str, attention: str, size: Sizes) -> dict:
    """Train and generate with one (preset, precision, attention); the row of the throughput table."""
    row = {"preset": preset, "precision": precision, "attention": attention}
    scvi.settings.seed = 0
    model = scflowlm.CaLMFlowModel(adata, **model_kwargs(preset, size), attn_implementation=attention)
    net = model.module.backbone.config
    row["backbone"] = f"{net.num_hidden_layers}x{net.hidden_size}"
    timer = C.StepTimer(warmup=size.warmup_steps)
    batch_size = 128
    with peak_gpu_mb(row, "peak GPU MB (train)"):
        model.train(
            max_epochs=10_000,
            max_steps=size.warmup_steps + size.timed_steps,
            batch_size=batch_size,
            train_size=1.0,
            keep_best=False,  # no copy of the weights to the CPU inside the timed steps
            accelerator=size.accelerator,
            devices=1,
            precision=PRECISIONS[precision],
            enable_progress_bar=False,
            callbacks=[timer],
        )
    check_history(f"{preset}/{precision}/{attention} training", model)
    row["train cells/s"] = f"{batch_size * timer.steps_per_s:,.0f}"
    with generation_context(precision, size.accelerator), peak_gpu_mb(row, "peak GPU MB (generate)"):
        cached, pred = generate_rate(model, size.generate_cells, use_cache=True)
        check_prediction(f"{preset}/{precision}/{attention} generation (KV cache)", pred)
        uncached, pred = generate_rate(model, size.generate_cells, use_cache=False)
        check_prediction(f"{preset}/{precision}/{attention} generation (no cache)", pred)
    row["generate cells/s (KV cache)"] = f"{cached:,.0f}"
    row["generate cells/s (no cache)"] = f"{uncached:,.0f}"
    row["KV cache speed-up"] = f"{cached / uncached:.1f}x"
    return row


def flash_missing(size: Sizes) -> str | None:
    """Why flash attention cannot run here (``None`` when it can)."""
    if importlib.util.find_spec("flash_attn") is None:
        return "not installed (pip install -e .[gpu])"
    if size.accelerator != "gpu":
        return "needs CUDA"
    return None


def backed_rows(size: Sizes, tmpdir: Path) -> list[dict]:
    """Write a synthetic backed AnnData, set it up and train a few hundred steps; steps/s."""
    import anndata as ad

    path = tmpdir / "backed.h5ad"
    with C.Timer() as written:
        scale.make_data(size.big_cells, path, n_genes=100, n_pcs=20)
    adata = ad.read_h5ad(path, backed="r")
    with C.Timer() as setup:
        scflowlm.CaLMFlowModel.setup_anndata(adata, **scale.SETUP)
    scvi.settings.seed = 0
    model = scflowlm.CaLMFlowModel(adata)
    timer = C.StepTimer(warmup=min(20, size.big_steps // 3))
    model.train(
        max_epochs=1,
        max_steps=timer.warmup + size.big_steps,
        batch_size=128,
        check_val_every_n_epoch=10**6,
        accelerator=size.accelerator,
        devices=1,
        precision=PRECISIONS["bf16"],
        enable_progress_bar=False,
        callbacks=[timer],
    )
    check_history("backed training", model)
    pred = model.predict_perturbation({"cell_type": "type1", "perturbation": "gene7"}, n_cells=256, seed=0)
    check_prediction("backed generation", pred)
    return [
        {
            "cells": f"{size.big_cells:,}",
            "file MB": f"{path.stat().st_size / 2**20:,.0f}",
            "written s": f"{written.s:.0f}",
            "setup_anndata s": f"{setup.s:.1f}",
            "train steps/s": f"{timer.steps_per_s:.1f}",
            "train cells/s": f"{128 * timer.steps_per_s:,.0f}",
            "timed steps": len(timer.times),
        }
    ]


def kang_data(size: Sizes) -> tuple[str, object, dict, list[list[dict]]]:
    """(label, adata, setup kwargs, held-out groups): Kang 2018 as the scoreboard loads it, else synthetic."""
    if (C.SHARED / "kang2018_muscat_example").exists():
        with C.keep_threads():
            adata, setup, groups = scoreboard.load("kang")
        return "Kang 2018", adata, setup, groups[: size.kang_holdouts]
    adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=60, n_genes=100, n_pcs=16, seed=0)
    return "synthetic (Kang data not found)", adata, SYNTHETIC_SETUP, [[HELD]]


def kang_rows(size: Sizes, *, deadline: float) -> tuple[list[dict], str]:
    """The scoreboard's rows at the paper preset, one seed, as many held-out groups as the time allows."""
    label, adata, setup, groups = kang_data(size)
    train = {"accelerator": size.accelerator, "devices": 1, "precision": PRECISIONS["bf16"]} | size.kang_train
    rows, last = [], 0.0
    for i, group in enumerate(groups):
        if time.perf_counter() + last > deadline:
            return rows, f"{label}: {i} of {len(groups)} held-out groups (stopped at the time budget)."
        t0 = time.perf_counter()
        model, seconds = scoreboard.train_learned(
            scflowlm.CaLMFlowModel, dict(PRESETS["paper"]), train, adata, setup, group, seed=0
        )
        check_history(f"{label} training", model)
        for cond in group:
            pred = scoreboard.predict_learned(model, adata, cond, seed=0)
            check_prediction(f"{label} prediction of {cond}", pred)
            scores = scoreboard.score(adata, pred, cond)
            check_finite(f"{label} scores of {cond}", [scores[m] for m in ("r2", "r2_de", "edistance")])
            held = (
                cond["cell_type"] if label.startswith("Kang") else f"{cond['cell_type']} {cond['condition']}"
            )
            rows.append(
                {"held out": held} | {m: round(v, 3) for m, v in scores.items()} | {"train s": round(seconds)}
            )
        last = time.perf_counter() - t0
    return rows, f"{label}: {len(groups)} held-out group(s)."


def attempt(failures: list[str], what: str, fn, *args, **kwargs):
    """Run one part; on an error (a NaN included) record it and return ``None``."""
    try:
        return fn(*args, **kwargs)
    except Exception as err:  # every failure is reported, and the exit status says so
        failures.append(f"{what}: {type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}")
        print(f"FAILED {what}: {type(err).__name__}: {err}", flush=True)
        return None


def run(size: Sizes, *, budget_s: float) -> tuple[pd.DataFrame, str, list[str]]:
    """Every part of the check: (throughput table, notes with the other tables, failures)."""
    start, failures = time.perf_counter(), []
    adata = throughput_data(size)
    rows = []
    for preset, precision, attention in CONFIGS:
        what = f"throughput {preset}/{precision}/{attention}"
        missing = flash_missing(size) if attention == FLASH else None
        if missing:
            rows.append(
                {"preset": preset, "precision": precision, "attention": attention, "train cells/s": missing}
            )
        else:
            row = attempt(failures, what, throughput_row, adata, preset, precision, attention, size)
            rows.append(
                row
                or {
                    "preset": preset,
                    "precision": precision,
                    "attention": attention,
                    "train cells/s": "FAILED",
                }
            )
        print(rows[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    table = pd.DataFrame(rows, columns=COLUMNS).fillna("")
    with tempfile.TemporaryDirectory() as tmp:
        backed = attempt(failures, "backed AnnData", backed_rows, size, Path(tmp)) or [{"cells": "FAILED"}]
    print(backed, f"({time.perf_counter() - start:.0f} s)", flush=True)
    kang = attempt(failures, "Kang rows", kang_rows, size, deadline=start + budget_s)
    kang_table, kang_note = kang if kang else ([{"held out": "FAILED"}], "")
    kang_df = pd.DataFrame(kang_table)
    if {"r2_de", "held out"} <= set(kang_df.columns) and len(kang_df) > 1:
        mean = kang_df.drop(columns="held out").mean(numeric_only=True).round(3)
        kang_df = pd.concat(
            [kang_df, pd.DataFrame([{"held out": "mean"} | mean.to_dict()])], ignore_index=True
        )
    notes = (
        f"Training: batch 128, cells/s over {size.timed_steps} steps after {size.warmup_steps} warm-up steps; "
        f"generation: {size.generate_cells:,} cells of one condition in one `predict_perturbation` call (default "
        "batch size), after a warm-up call; bf16 generates under `torch.autocast`. Presets: `cpu` = the defaults "
        f"(N=4, K=1, backbone 2x64), `paper` = N=16, K=1, latent 32 on a random-init "
        f"{size.paper_backbone.num_hidden_layers}x{size.paper_backbone.hidden_size} GPT-NeoX.\n\n"
        "### A backed AnnData\n\n"
        + pd.DataFrame(backed).to_markdown(index=False)
        + '\n\nThe default model, bf16, batch 128, read from an `.h5ad` opened with `backed="r"`.\n\n'
        "### Held-out conditions at the paper preset (one seed, bf16)\n\n"
        + kang_df.to_markdown(index=False)
        + f"\n\n{kang_note} Metrics as on the scoreboard (`benchmarks/scoreboard.py`); training: "
        + (f"`{size.kang_train}`" if size.kang_train else "the model's default steps")
        + ".\n\n"
        + f"Whole check: {time.perf_counter() - start:.0f} s."
        + (f"\n\n**{len(failures)} part(s) FAILED** (see the script's output)." if failures else "")
    )
    return table, notes, failures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="the same code on the CPU at tiny sizes (under a minute)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    parser.add_argument(
        "--budget-s", type=float, default=480, help="no new Kang held-out group starts past this many seconds"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.dry_run and not on_gpu():
        sys.exit(
            "No CUDA GPU: run this on a GPU machine, or pass --dry-run to exercise the script on the CPU."
        )
    size = sizes(dry_run=args.dry_run)
    table, notes, failures = run(size, budget_s=args.budget_s)
    title = "GPU check" + (" (dry run on the CPU, tiny sizes)" if args.dry_run else "")
    if args.out is not None or (on_gpu() and not args.dry_run):
        C.write_table("gpu_check", title, table, command=C.command_line(), notes=notes, path=args.out)
    else:
        print(C.table_text(title, table, command=C.command_line(), notes=notes))
    if failures:
        print(f"\nGPU CHECK FAILED ({len(failures)} part(s)):\n\n" + "\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
