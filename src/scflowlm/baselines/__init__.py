"""Deprecated home of :class:`~scflowlm.model.CFMModel`: import it from :mod:`scflowlm.model`.

The data-only predictors are the ``scflowlm.tl.baseline_*`` functions.
"""

from __future__ import annotations

import warnings

__all__ = ["CFMModel"]


def __getattr__(name: str):
    if name == "CFMModel":
        warnings.warn(
            "scflowlm.baselines.CFMModel moved to scflowlm.model.CFMModel; the old name will be removed.",
            DeprecationWarning,
            stacklevel=2,
        )
        from scflowlm.model import CFMModel

        return CFMModel
    raise AttributeError(f"module 'scflowlm.baselines' has no attribute {name!r}")
