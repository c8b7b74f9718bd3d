from __future__ import annotations

import pytest

from scflowlm.data import PromptBuilder, same_value, template_fields


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


def test_control_template_compares_values_by_type():
    b = PromptBuilder("Treat a {ct} cell with {dose} units:", "An untreated {ct} cell:", "dose", 0)
    assert b.render({"ct": "B", "dose": 0.0}) == "An untreated B cell:"
    assert b.render({"ct": "B", "dose": 1.0}) == "Treat a B cell with 1.0 units:"
    assert same_value(0, 0.0)
    assert same_value("1", 1.0)
    assert not same_value("a", 1)
    assert same_value("x", "x")


def test_unbalanced_brace_is_explained():
    with pytest.raises(ValueError, match=r"Template 'A \{x cell' is not valid .*literal brace twice"):
        template_fields("A {x cell")


def test_control_template_needs_perturbation_key():
    with pytest.raises(ValueError, match="perturbation_key"):
        PromptBuilder("a {x}", "b {x}")
