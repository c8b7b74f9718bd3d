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
