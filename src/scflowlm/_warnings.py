"""The warning class of scflowlm."""

from __future__ import annotations

__all__ = ["ScflowlmWarning"]


class ScflowlmWarning(UserWarning):
    """Every warning scflowlm itself emits (unseen values, missing controls, ...).

    A subclass of :class:`UserWarning`, so it shows by default; filter it on its own with
    ``warnings.filterwarnings("ignore", category=scflowlm.ScflowlmWarning)``, or make it an error in tests
    without turning third-party deprecation warnings into errors.
    """
