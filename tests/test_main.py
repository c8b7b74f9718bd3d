"""``python -m scflowlm demo``: the embedded example runs end to end and prints its table."""

from __future__ import annotations

from scflowlm.__main__ import main


def test_demo_runs_and_prints_the_table(capsys):
    main(["demo", "--epochs", "2", "--n-cells", "20"])
    out = capsys.readouterr().out
    assert "4/4 scoring" in out
    for row in ["CaLMFlow", "nearest-context shift", "real vs real (floor)"]:
        assert row in out
    assert "N=4 time points" in out  # the model's defaults, not settings of the demo's own


def test_counts_are_checked_before_anything_runs(capsys):
    """--epochs 0 / --n-cells 0 once ended in a traceback naming the API's max_epochs / n_cells after training."""
    import pytest

    for flag in ("--epochs", "--n-cells"):
        with pytest.raises(SystemExit):
            main(["demo", flag, "0"])
        assert f"argument {flag}: must be an integer >= 1, got 0" in capsys.readouterr().err


def test_help_answers_before_torch_is_imported():
    """`python -m scflowlm --help` took ~30 s on a loaded machine: torch and scvi-tools loaded before argparse."""
    import subprocess
    import sys

    code = (
        "import runpy, sys\n"
        "sys.argv = ['scflowlm', '--help']\n"
        "try:\n    runpy.run_module('scflowlm', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO TORCH')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "usage: python -m scflowlm" in out
    assert out.strip().endswith("NO TORCH")
