"""The installed version of scflowlm (for messages and saved records)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["scflowlm_version"]


def scflowlm_version() -> str:
    """The installed scflowlm version (``"0.0.0"`` when run from a source tree without installing)."""
    try:
        return version("scflowlm")
    except PackageNotFoundError:  # pragma: no cover
        return "0.0.0"
