from __future__ import annotations

import pytest

from scflowlm.data import PromptBuilder, template_fields


def test_template_fields_order_and_dedup():
    assert template_fields("A {x} and {y} then {x}:") == ["x", "y"]


def test_template_rejects_positional_and_spec():
    with pytest.raises(ValueError, match="positional"):
        template_fields("A {} cell")
    with pytest.raises(ValueError, match="format spec"):
        template_fields("A {x:>3} cell")


def test_render_uses_control_template():
    b = PromptBuilder("Generate a {ct} cell with {p}:", "Generate an untreated {ct} cell:", "p", "ctrl")
    assert b.fields == ["ct", "p"]
    assert b.context_fields == ["ct"]
    assert b.render({"ct": "B", "p": "IFN"}) == "Generate a B cell with IFN:"
    assert b.render({"ct": "B", "p": "ctrl"}) == "Generate an untreated B cell:"


def test_normalize_names_unknown_and_missing_fields():
    b = PromptBuilder("Generate a {ct} cell with {p}:")
    with pytest.raises(KeyError, match="unknown field"):
        b.normalize({"ct": "B", "p": "x", "dose": 1})
    with pytest.raises(KeyError, match=r"lacks the template field\(s\) \['p'\]"):
        b.normalize({"ct": "B"})
    assert b.normalize([{"ct": "B", "p": 1}]) == [{"ct": "B", "p": "1"}]


def test_control_template_needs_perturbation_key():
    with pytest.raises(ValueError, match="perturbation_key"):
        PromptBuilder("a {x}", "b {x}")
