"""Progress of training: a bar on a terminal or in a notebook, plain lines in a log where nobody watches."""

from __future__ import annotations

import math
import sys
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from lightning.pytorch.callbacks import ProgressBar

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ProgressLines", "interactive_output", "progress_trainer_kwargs"]

#: metrics of the progress line, in this order, when the training plan logged them
SHOWN_METRICS = ("train_loss", "validation_loss")


class ProgressLines(ProgressBar):
    """Print one plain line about every tenth of the epochs, instead of refreshing a progress bar.

    Meant for output that no terminal watches (CI, ``nohup``, SLURM, a pipe), where every refresh of a bar
    (a carriage return) becomes text in the log. A line reads
    ``Epoch 50/500 (10%): train_loss 1.234, validation_loss 1.301, 0:00:12 elapsed`` and is flushed at once.
    A line is printed after every ``ceil(max_epochs / n_lines)`` epochs and after the last epoch (also one
    that ends training early). Only rank 0 prints under DDP (Lightning disables progress bars elsewhere).

    Parameters
    ----------
    n_lines
        About how many lines a whole run prints.
    file
        Where the lines go; default: ``sys.stdout`` at the time of printing.
    """

    def __init__(self, n_lines: int = 10, file: TextIO | None = None):
        super().__init__()
        if n_lines < 1:
            raise ValueError(f"n_lines must be >= 1, got {n_lines}.")
        self.n_lines = n_lines
        self.file = file
        self._enabled = True
        self._start: float | None = None
        self._finished: int | None = None  # the last epoch that ended, counted from 1
        self._printed: int | None = None  # the epoch of the last line

    def __getstate__(self):
        state = self.__dict__.copy()
        state["file"] = None  # an open stream neither pickles nor deep-copies
        return state

    @property
    def is_enabled(self) -> bool:
        """Whether lines are printed."""
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        """Whether lines are not printed."""
        return not self._enabled

    def disable(self) -> None:
        """Print nothing (Lightning calls it on every rank but 0)."""
        self._enabled = False

    def enable(self) -> None:
        """Print the lines again."""
        self._enabled = True

    def every(self, max_epochs: int) -> int:
        """Epochs between two lines for a run of ``max_epochs`` epochs."""
        return max(1, math.ceil(max_epochs / self.n_lines))

    def line(self, trainer, epoch: int, *, stopped: bool = False) -> str:
        """The progress line after ``epoch`` (counted from 1) of ``trainer``'s run."""
        total = trainer.max_epochs
        metrics = trainer.callback_metrics
        parts = [f"{name} {float(metrics[name]):.4g}" for name in SHOWN_METRICS if name in metrics]
        seconds = time.perf_counter() - self._start if self._start is not None else 0.0
        parts.append(f"{timedelta(seconds=round(seconds))} elapsed")
        share = f" ({100 * epoch / total:.0f}%)" if total and total > 0 else ""
        return f"Epoch {epoch}/{total}{share}{' stopped' if stopped else ''}: " + ", ".join(parts)

    def _print(self, trainer, epoch: int, *, stopped: bool = False) -> None:
        print(self.line(trainer, epoch, stopped=stopped), file=self.file or sys.stdout, flush=True)
        self._printed = epoch

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._start, self._finished, self._printed = time.perf_counter(), None, None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        epoch, total = trainer.current_epoch + 1, trainer.max_epochs
        self._finished = epoch
        if self.is_enabled and (epoch % self.every(total) == 0 or epoch == total):
            self._print(trainer, epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        # training stopped early (early stopping, max_steps): a last line where it stopped
        if self.is_enabled and self._finished is not None and self._printed != self._finished:
            self._print(trainer, self._finished, stopped=True)


def interactive_output(stream: TextIO | None = None) -> bool:
    """Whether someone watches ``stream`` (default ``sys.stdout``): a terminal, or a Jupyter/IPython kernel.

    A pipe, a file (``nohup``, SLURM's output file) or CI's captured output are not interactive.
    """
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        if isatty is not None and isatty():
            return True
    except ValueError:  # a closed stream
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")  # a notebook (its stdout is no TTY)


def progress_trainer_kwargs(
    *, enable_progress_bar: bool | None = None, callbacks: Sequence[Any] | None = None
) -> dict[str, Any]:
    """Trainer arguments that choose how training shows its progress.

    Parameters
    ----------
    enable_progress_bar
        ``True``: scvi-tools' progress bar (one bar refreshed every epoch), wherever the output goes.
        ``False``: no progress output. ``None``: the bar when :func:`interactive_output` (a terminal or a
        notebook), else :class:`ProgressLines` (a plain line about every tenth of the epochs).
    callbacks
        The trainer's callbacks; one of them that is a Lightning
        :class:`~lightning.pytorch.callbacks.ProgressBar` is used as it is (unless ``enable_progress_bar`` is
        ``False``).

    Returns
    -------
    ``enable_progress_bar``, ``simple_progress_bar`` and ``callbacks`` for :class:`~scvi.train.Trainer`.
    """
    if enable_progress_bar not in (None, True, False):
        raise TypeError(
            f"enable_progress_bar must be True, False or None (a bar on a terminal, lines in a log), "
            f"got {enable_progress_bar!r}."
        )
    callbacks = list(callbacks or [])
    own_bar = any(isinstance(c, ProgressBar) for c in callbacks)
    if enable_progress_bar is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        return {"enable_progress_bar": False, "simple_progress_bar": False, "callbacks": callbacks}
    if own_bar:
        return {"enable_progress_bar": True, "simple_progress_bar": False, "callbacks": callbacks}
    if enable_progress_bar or interactive_output():
        return {"enable_progress_bar": True, "simple_progress_bar": True, "callbacks": callbacks}
    return {
        "enable_progress_bar": True,
        "simple_progress_bar": False,
        "callbacks": [*callbacks, ProgressLines()],
    }
