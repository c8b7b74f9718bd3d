"""Training progress: a bar on a terminal, a plain line about every tenth of the epochs in a log."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import setup, small_model

import scflowlm
from scflowlm.train import ProgressLines, interactive_output, progress_trainer_kwargs

ROOT = Path(__file__).resolve().parents[2]


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _fake_trainer(max_epochs: int) -> SimpleNamespace:
    return SimpleNamespace(max_epochs=max_epochs, current_epoch=0, callback_metrics={}, is_global_zero=True)


def _run_epochs(bar: ProgressLines, trainer, epochs: int) -> None:
    bar.on_train_start(trainer, None)
    for epoch in range(epochs):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"train_loss": 1.0 / (epoch + 1)}
        bar.on_train_epoch_end(trainer, None)
    trainer.current_epoch = epochs
    bar.on_train_end(trainer, None)


def test_lines_every_tenth_of_the_epochs():
    out = io.StringIO()
    bar = ProgressLines(file=out)
    trainer = _fake_trainer(95)
    _run_epochs(bar, trainer, 95)
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["Epoch 10/95 (11%)", "Epoch 20/95 (21%)"]
    assert len(lines) == 10  # 10, 20, ..., 90 and the last
    assert lines[-1].startswith("Epoch 95/95 (100%): train_loss 0.01053, ")
    assert lines[-1].endswith(" elapsed")
    assert "\r" not in out.getvalue()


def test_a_run_that_stops_early_says_where():
    out = io.StringIO()
    _run_epochs(ProgressLines(file=out), _fake_trainer(100), 37)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("Epoch 37/100 (37%) stopped: train_loss 0.02703")


def test_short_runs_print_every_epoch_and_disabled_prints_nothing():
    out = io.StringIO()
    _run_epochs(ProgressLines(file=out), _fake_trainer(3), 3)
    assert len(out.getvalue().splitlines()) == 3
    quiet, bar = io.StringIO(), ProgressLines(file=io.StringIO())
    bar.file = quiet
    bar.disable()  # what Lightning does on ranks other than 0
    _run_epochs(bar, _fake_trainer(3), 3)
    assert quiet.getvalue() == ""
    with pytest.raises(ValueError, match="n_lines must be >= 1"):
        ProgressLines(n_lines=0)


def test_interactive_output():
    assert interactive_output(_Stream(tty=True))
    assert not interactive_output(_Stream(tty=False))


def test_progress_trainer_kwargs(monkeypatch):
    """The explicit argument decides; None picks by whether a terminal watches stdout."""
    monkeypatch.setattr(sys, "stdout", _Stream(tty=False))
    auto = progress_trainer_kwargs(enable_progress_bar=None)
    assert auto["enable_progress_bar"]
    assert not auto["simple_progress_bar"]
    assert [type(c) for c in auto["callbacks"]] == [ProgressLines]
    assert progress_trainer_kwargs(enable_progress_bar=True) == {
        "enable_progress_bar": True,
        "simple_progress_bar": True,
        "callbacks": [],
    }
    assert not progress_trainer_kwargs(enable_progress_bar=False, callbacks=[ProgressLines()])["callbacks"]
    assert not progress_trainer_kwargs(enable_progress_bar=False)["enable_progress_bar"]
    mine = ProgressLines()
    assert progress_trainer_kwargs(callbacks=[mine])["callbacks"] == [mine]  # a user's own bar is kept
    monkeypatch.setattr(sys, "stdout", _Stream(tty=True))
    assert progress_trainer_kwargs(enable_progress_bar=None)["simple_progress_bar"]
    with pytest.raises(TypeError, match="enable_progress_bar must be True, False or None"):
        progress_trainer_kwargs(enable_progress_bar="yes")


def test_train_prints_lines_through_the_runner():
    out = io.StringIO()
    adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=8, n_genes=20, n_pcs=4, seed=0)
    model = small_model(setup(adata))
    model.train(max_epochs=4, batch_size=16, callbacks=[ProgressLines(n_lines=2, file=out)])
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["Epoch 2/4", "Epoch 4/4"]


def test_train_without_progress_bar_prints_nothing(capsys):
    """``train(enable_progress_bar=False)`` reaches the runner (a merge once dropped it and lines still printed)."""
    adata = scflowlm.data.synthetic_perturbation(n_cells_per_condition=8, n_genes=20, n_pcs=4, seed=0)
    model = small_model(setup(adata))
    model.train(max_epochs=2, batch_size=16, enable_progress_bar=False)
    out = capsys.readouterr()
    assert "Epoch" not in out.out + out.err


@pytest.mark.slow
def test_piped_demo_log_stays_short():
    """``python -m scflowlm demo`` into a pipe: lines, not 3 bar refreshes per epoch (140 updates before)."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "scflowlm", "demo", "--epochs", "40", "--n-cells", "20"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600, check=False
    )
    log = proc.stdout.decode()
    assert proc.returncode == 0, log[-3000:]
    updates = log.count("\n") + log.count("\r")
    assert updates < 100, f"{updates} updates in the piped log:\n{log[-3000:]}"
    assert "\r" not in log
    assert sum(line.startswith("Epoch ") for line in log.splitlines()) == 10
    assert "Epoch 40/40 (100%): train_loss" in log
