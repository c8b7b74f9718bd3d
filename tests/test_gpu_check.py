"""``benchmarks/gpu_check.py --dry-run``: the GPU check's code paths run on the CPU and print every row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_prints_every_row(tmp_path):
    out = tmp_path / "gpu_check.md"
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
    }
    cmd = [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = out.read_text()
    assert text in proc.stdout  # printed as written
    assert "FAILED" not in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for preset in ("cpu", "paper"):
        for precision in ("fp32", "bf16"):
            sdpa = [
                r for r in rows if r.startswith(f"| {preset} ") and f"| {precision} " in r and "| sdpa " in r
            ]
            assert len(sdpa) == 1, (preset, precision, rows)
            assert re.search(r"\| \d+\.\dx +\|", sdpa[0]), sdpa[0]  # the KV cache speed-up is filled
        flash = [r for r in rows if r.startswith(f"| {preset} ") and "flash_attention_2" in r]
        assert len(flash) == 1
        assert "not installed" in flash[0] or "needs CUDA" in flash[0]
    backed = text.split("### A backed AnnData")[1].split("###")[0]
    assert "20,000" in backed  # the dry run's cells, and a steps/s measured
    assert "train steps/s" in backed
    assert "### Held-out conditions at the paper preset" in text
    assert "1 held-out group(s)" in text
    assert "r2_de" in text


def test_gpu_check_refuses_to_run_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "--dry-run" in proc.stderr
