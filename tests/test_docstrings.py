"""Shared docstring text is filled in everywhere: no ``%(name)s`` placeholder is left in the public API."""

from __future__ import annotations

import inspect
import re

import scflowlm

PLACEHOLDER = re.compile(r"%\(\w+\)s")


def _public_objects():
    for sub in scflowlm.__all__:
        mod = getattr(scflowlm, sub)
        names = mod.__all__ if inspect.ismodule(mod) else [sub]
        owner = mod if inspect.ismodule(mod) else scflowlm
        for name in names:
            obj = getattr(owner, name)
            yield f"{sub}.{name}", obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if callable(member) and not attr.startswith("_"):
                        yield f"{sub}.{name}.{attr}", member


def test_no_unfilled_placeholder():
    left = [name for name, obj in _public_objects() if PLACEHOLDER.search(inspect.getdoc(obj) or "")]
    assert not left, f"unfilled docstring placeholders in {left}"


def test_shared_text_is_filled_with_its_indentation():
    doc = scflowlm.CaLMFlowModel.__doc__
    assert '``"noise"``: flows start from Gaussian noise' in doc
    source = doc[doc.index("    source\n") :].splitlines()[1:4]
    # the fragment kept the parameter indent
    assert all(line.startswith("        ") for line in source), source
