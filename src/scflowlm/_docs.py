"""Docstring text shared by several functions and classes, written once and filled in by :func:`doc_params`."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["doc_params"]

PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)(?P<before>.*?)%\((?P<name>\w+)\)s", re.MULTILINE)

DOC_SOURCE = """\
``"auto"`` (default): ``"control"`` when ``setup_anndata`` registered control cells, else ``"noise"``.
``"noise"``: flows start from Gaussian noise (the paper); ``predict_perturbation`` draws a population.
``"control"``: flows start from control cells of the same context, paired with their targets by minibatch
optimal transport in training; ``predict_perturbation`` returns one cell per control cell and keeps each
cell's own state. The noise source is needed for contexts without control cells."""

DOC_START_SHIFT = """\
Head start of control-source flows (ignored for noise), estimated from the training cells by
:func:`scflowlm.data.estimate_shifts` and added to the control cells a condition's flows start from; the condition
encoder is told which single perturbations it holds. ``"auto"`` (default): ``"additive"`` when the registered
conditions include combinations of perturbations, or when ``setup_anndata(perturbation_embeddings=...)`` gave gene
vectors to at least one registered single (a single never measured then starts at the ridge estimate of its vector,
:func:`scflowlm.data.vector_shifts`), else ``"none"``. ``"none"``: a flow starts at its control cell.
``"additive"``: at its control cell plus the sum of its singles' measured shifts in its context (a combination
``"A+B"`` from ``"A"`` and ``"B"``; a measured single from itself): a zero correction of the flow is exactly
:func:`scflowlm.tl.baseline_additive`, and the flow learns what is not additive. ``"nearest_context"``: plus the
shift of the same perturbation in the most similar other context (:func:`scflowlm.tl.baseline_nearest_context`),
never from the condition's own cells. They are made from the mean states of the training conditions,
``module.condition_means`` (saved with the model)."""

DOC_SHIFT_TRAINING = """\
``start_shift="nearest_context"`` only: where training flows start: ``"held_out"``, at the estimate each training
condition would get if it were held out (the flow learns to correct estimates); ``"own"``, at the condition's own
mean shift (the flow learns the shape of the response around it, predictions keep the estimate's mean)."""

DOC_COMBINATION_SCALE = """\
``start_shift="additive"`` only: the factor of a combination's head start, the sum of its singles' shifts.
``"fit"`` (default): one scale learned on the training combinations whose singles are measured (least squares,
:func:`scflowlm.data.fit_combination_scale`; 1 without such a combination): Norman et al.'s doubles are typically
about 20% smaller than the sum of their singles. A number: that factor (1: the plain sum)."""

DOC_HEAD_START_PENALTY = """\
Weight ``lambda`` of a penalty ``lambda * |v|^2`` on the velocity of flows that start at a head start (in
standardised units, beside the flow-matching error): the flow must lower the error by more than a move costs, so
where the training conditions teach nothing that carries over it keeps the head start rather than adding its own
noise. The velocity of such flows also starts at zero, so an untrained flow predicts its head start exactly.
0: no penalty. Chosen on the scoreboard's K562 pairs (``docs/benchmarks/levers.md``)."""

DOC_HEAD_START_DROPOUT = """\
Probability that a training condition starts without its head start (drawn per condition and minibatch, with
the encoder told so), so the model also learns every flow from the control cells alone: what a condition whose
parts were never measured, or a new context, needs at prediction."""

DOC_CONTROL_TARGETS = """\
Control-source models only: whether control cells are also trained on, as flows from themselves to
themselves. ``False`` (default, chosen on the scoreboard): they are only the sources of the perturbed cells'
flows, so the model never learns that control-like states stay put (a shortcut for a context whose perturbed
cells are held out). ``True``: the first release's behaviour."""

DOC_BASELINE_KEYS = """\
adata
    Cells x genes (log-normalised ``X``) with the condition columns in ``obs``: the training cells, including
    the control cells of every context to predict. Cells of the conditions to predict may be present: the
    baselines never read them.
conditions
    Conditions to predict, as dicts ``{key: value}`` over ``condition_keys`` (one dict, or a list).
condition_keys
    obs columns that define a condition; the context of a condition is the values of the keys other than
    ``perturbation_key``. Default: those recorded by ``setup_anndata`` in ``adata.uns["scflowlm"]``.
perturbation_key
    The condition key that holds the perturbation (default: from ``adata.uns["scflowlm"]``).
control_value
    Control label of ``perturbation_key`` (default: from ``adata.uns["scflowlm"]``)."""

DOC_BASELINE_COMMON = (
    DOC_BASELINE_KEYS
    + """
obsm_keys
    obsm entries shifted along with ``X`` (kept for the control baseline); those absent are skipped.
    Shifts in a linear space (``X_pca``) stay consistent with the shifts of ``X``."""
)

DOC_BASELINE_RETURNS = """\
An AnnData shaped like a prediction: the control cells of each condition's context (copies), relabelled
with the condition, with ``X`` and ``obsm_keys`` shifted; the same ``var_names``; obs columns
``condition_keys``, ``baseline`` (name), ``source_cell`` (obs name of the control cell) and
``source_context`` (where the shift was measured); ``obsm["X_source"]`` holds the source cells' first
``obsm_keys`` coordinates; ``uns["scflowlm"]`` the keys, as a model's prediction records them. ``X`` is
dense; shifted log-expression may be negative."""

DOC_SPACE = """\
Where the distances are computed: ``"umap"`` (the paper: a 10-D UMAP fitted on both sets, from their PCA
coordinates), ``"pca"`` (the coordinates as given) or ``"raw"`` (the values as given)."""

DOC_SHOW = """\
show
    Show the figure (default: scanpy's ``settings.autoshow`` outside the Agg backend).
return_fig
    Return the Figure."""

DOC_AX_SHOW = (
    """\
ax
    Axes to draw in; a new figure if None.
"""
    + DOC_SHOW
)

DOC_TRAIN_NOTES = """\
Sets ``is_trained_``, ``history_`` (see :attr:`history`), ``train_conditions_`` and
``train_indices_``/``validation_indices_``/``test_indices_`` (the held-out cells). The module's statistics, control
pool and head starts are rebuilt from the training cells when training starts (:meth:`_module_data`).

A non-finite training loss stops training with :class:`~scflowlm.train.NonFiniteLossError` (naming the epoch, step
and batch). ``KeyboardInterrupt`` (Ctrl+C, a notebook's stop button) ends training with the best weights so far
loaded (``keep_best``) and is raised again after the model is usable.

*Reproducibility.* With ``scvi.settings.seed = s`` set before the model is built, the same data and settings give
identical weights and predictions on CPU (the split, initialisation, minibatch order and sampling all follow the
seed). On GPU, some CUDA kernels (attention backward passes, atomics in scatter/index ops, flash attention, bf16
reductions) are non-deterministic: runs agree closely, not bit for bit; for bitwise GPU reproducibility also call
``torch.use_deterministic_algorithms(True)``, set ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` and use
``attn_implementation="eager"``, at a speed cost.

*Several devices.* Distribution is Lightning's: ``model.train(strategy="ddp", devices=4, accelerator="gpu")`` trains
on 4 GPUs with one process each (``batch_size`` is per device). Run it from a script, not a notebook (there,
``strategy="ddp_notebook"``). Only rank 0 should save the model (``if model.trainer.is_global_zero:
model.save(...)``). See the docs' "Large data" page.

*Classes.* The split is the model's ``_data_splitter_cls`` (:class:`~scflowlm.model.HoldoutSplitter`), the
Lightning module its ``_training_plan_cls`` (:class:`~scflowlm.train.FlowTrainingPlan`) and the runner its
``_train_runner_cls`` (:class:`~scflowlm.train.FlowTrainRunner`): a subclass swaps one by setting the attribute."""

DOC_TRAINER_KWARGS = """\
``enable_progress_bar``: how training shows its progress. ``None`` (default): a progress bar on a terminal or in a
notebook; where no terminal watches the output (a pipe, ``nohup``, SLURM, CI) a plain line about every tenth of the
epochs instead (:class:`~scflowlm.train.ProgressLines`: epoch, training loss, elapsed time), so that logs stay
short. ``True``: the bar wherever the output goes. ``False``: no progress output.
Passed to the Lightning trainer through the runner: ``accelerator`` and ``devices`` (default ``"auto"``),
``precision="bf16-mixed"``, ``strategy="ddp"`` (see Notes), ``gradient_clip_val`` (default 1.0),
``early_stopping=True`` (stop when the validation loss stops improving), ``callbacks``,
``enable_progress_bar``, ...; ``datasplitter_kwargs`` (a dict for the splitter) and ``plan_kwargs`` (a dict of
:class:`~scflowlm.train.FlowTrainingPlan` arguments, e.g. ``warmup_fraction``)."""

#: every shared fragment, by the name used in ``%(name)s`` placeholders
DOC_COMBO_SEP = """\
Separator of the perturbations in a combination label (default: as ``setup_anndata`` recorded it, else
``"+"``)."""

FRAGMENTS = {
    "source": DOC_SOURCE,
    "start_shift": DOC_START_SHIFT,
    "shift_training": DOC_SHIFT_TRAINING,
    "head_start_dropout": DOC_HEAD_START_DROPOUT,
    "combination_scale": DOC_COMBINATION_SCALE,
    "head_start_penalty": DOC_HEAD_START_PENALTY,
    "control_targets": DOC_CONTROL_TARGETS,
    "train_notes": DOC_TRAIN_NOTES,
    "trainer_kwargs": DOC_TRAINER_KWARGS,
    "baseline_keys": DOC_BASELINE_KEYS,
    "baseline_common": DOC_BASELINE_COMMON,
    "combo_sep": DOC_COMBO_SEP,
    "baseline_returns": DOC_BASELINE_RETURNS,
    "space": DOC_SPACE,
    "show": DOC_SHOW,
    "ax_show": DOC_AX_SHOW,
}


def _fill(doc: str, fragments: dict[str, str]) -> str:
    def replace(match: re.Match) -> str:
        name = match.group("name")
        if name not in fragments:
            return match.group(0)
        indent, before = match.group("indent"), match.group("before")
        lines = fragments[name].splitlines()
        return indent + before + ("\n" + indent).join(lines)

    return PLACEHOLDER.sub(replace, doc)


def doc_params(**extra: str) -> Callable:
    """Fill the ``%(name)s`` placeholders of a docstring with :data:`FRAGMENTS` (and ``extra``).

    A fragment's lines are indented like the line of its placeholder. Unknown placeholders stay (a test fails
    on any left in the package).
    """
    fragments = FRAGMENTS | extra

    def decorate(obj):
        if obj.__doc__:
            obj.__doc__ = _fill(obj.__doc__, fragments)
        return obj

    return decorate
