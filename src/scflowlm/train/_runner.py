"""Running a fit: scvi-tools' runner without its error print, and without library chatter."""

from __future__ import annotations

import contextlib
import gc
import warnings

import torch
from scvi.train import TrainRunner

from scflowlm._utils import quiet_loggers

from ._progress import progress_trainer_kwargs

__all__ = ["FlowTrainRunner", "quiet_training"]

#: the logger of Lightning's start-up lines ("GPU available", "TPU available", tips, "Trainer.fit stopped")
LIGHTNING_INFO_LOGGER = "lightning.pytorch.utilities.rank_zero"
#: warnings that libraries raise inside each other during training, which a user cannot act on:
#: Lightning 2.6 builds torch's deprecated ``LeafSpec`` (torch >= 2.10 warns on every ``fit``).
LIBRARY_INTERNAL_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)` is deprecated",)


@contextlib.contextmanager
def quiet_training(*, verbose: bool = False):
    """What a user sees of ``fit``: the progress bar and real warnings, not Lightning's start-up lines.

    Hides the INFO lines of :data:`LIGHTNING_INFO_LOGGER` unless ``verbose``, and always the library-internal
    deprecations of :data:`LIBRARY_INTERNAL_WARNINGS`.
    """
    with quiet_loggers(LIGHTNING_INFO_LOGGER, enabled=not verbose), warnings.catch_warnings():
        for pattern in LIBRARY_INTERNAL_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern, category=FutureWarning)
        yield


class FlowTrainRunner(TrainRunner):
    """scvi-tools' :class:`~scvi.train.TrainRunner`, except that an error in ``fit`` surfaces as it is.

    (scvi-tools prints ``Exception raised during training. <class 'NameError'> ...`` before re-raising any
    error; here the history is still recorded and the original exception propagates without that line.)

    It also chooses how progress is shown (:func:`~scflowlm.train.progress_trainer_kwargs`):
    ``enable_progress_bar=None`` (the default) shows scvi-tools' bar on a terminal or in a notebook and
    :class:`~scflowlm.train.ProgressLines` elsewhere; ``True`` always the bar, ``False`` nothing.
    """

    def __init__(self, model, training_plan, data_splitter, max_epochs: int, **trainer_kwargs):
        enable = trainer_kwargs.pop("enable_progress_bar", None)
        chosen = progress_trainer_kwargs(
            enable_progress_bar=enable, callbacks=trainer_kwargs.pop("callbacks", None)
        )
        trainer_kwargs = chosen | trainer_kwargs  # an explicit simple_progress_bar wins
        super().__init__(model, training_plan, data_splitter, max_epochs, **trainer_kwargs)

    def _update_history(self):
        """scvi-tools' history, also for a model trained elsewhere whose history is not at hand.

        A model adapted from a reference (``load_query_data``) is trained already; without the reference's history
        scvi-tools would warn that it "cannot be updated" and keep none: here it keeps this training's.
        """
        if self.model.is_trained_ is True and not self.model.history_:
            self.model.is_trained_ = False
            try:
                super()._update_history()
            finally:
                self.model.is_trained_ = True
            return
        super()._update_history()

    def _run_training_core(self):
        try:
            self.trainer.fit(self.training_plan, self.data_splitter, ckpt_path=self.ckpt_path)
        except BaseException:
            self._update_history()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise
        self._update_history()
        self.model.train_indices = getattr(self.data_splitter, "train_idx", None)
        self.model.test_indices = getattr(self.data_splitter, "test_idx", None)
        self.model.validation_indices = getattr(self.data_splitter, "val_idx", None)
        self.model.module.eval()
        self.model.is_trained_ = True
        self.model.to_device(self.device)
        self.model.trainer = self.trainer
