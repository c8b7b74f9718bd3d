"""Natural-language prompts built from AnnData obs columns.

A *template* such as ``"Generate a {cell_type} cell stimulated with {condition}:"`` names obs columns
between braces. Each cell's prompt is the template filled with that cell's values; cells whose
perturbation column equals the control value use the control template instead.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._values import same_value

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PromptBuilder", "template_fields"]


def template_fields(template: str) -> list[str]:
    """Field names of a ``str.format`` template, in order of first appearance.

    Parameters
    ----------
    template
        A template such as ``"Generate a {cell_type} cell:"``.

    Returns
    -------
    The distinct field names, e.g. ``["cell_type"]``.
    """
    names: list[str] = []
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(
            f"Template {template!r} is not valid ({err}): name obs columns in braces, e.g. '{{cell_type}}', and "
            "write a literal brace twice ('{{{{' or '}}}}')."
        ) from None
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ValueError(
                f"Template {template!r} has a positional field '{{{name}}}'; name an obs column."
            )
        if spec or conv:
            raise ValueError(f"Template field '{{{name}}}' may not carry a format spec or conversion.")
        if name not in names:
            names.append(name)
    return names


@dataclass
class PromptBuilder:
    """Render prompts for conditions given as ``{field: value}`` dicts.

    Parameters
    ----------
    prompt_template
        Template for perturbed (or all) cells.
    control_template
        Template for control cells; defaults to ``prompt_template``.
    perturbation_key
        The field whose value decides whether a cell is a control.
    control_value
        The control label of ``perturbation_key``.
    """

    prompt_template: str
    control_template: str | None = None
    perturbation_key: str | None = None
    control_value: str | None = None
    fields: list[str] = field(init=False)

    def __post_init__(self) -> None:
        fields = template_fields(self.prompt_template)
        if self.control_template is not None:
            fields += [f for f in template_fields(self.control_template) if f not in fields]
        if self.perturbation_key is not None and self.perturbation_key not in fields:
            fields.append(self.perturbation_key)
        if (self.control_template is not None or self.control_value is not None) and (
            self.perturbation_key is None or self.control_value is None
        ):
            raise ValueError("control_template and control_value need perturbation_key and control_value.")
        self.fields = fields

    @property
    def context_fields(self) -> list[str]:
        """The fields that describe a cell's context: every field but the perturbation."""
        return [f for f in self.fields if f != self.perturbation_key]

    def is_control(self, condition: Mapping[str, Any]) -> bool:
        """Whether a condition is a control condition (values compared by :func:`same_value`)."""
        return (
            self.perturbation_key is not None
            and self.control_value is not None
            and same_value(condition[self.perturbation_key], self.control_value)
        )

    def render(self, condition: Mapping[str, Any]) -> str:
        """The prompt of one condition."""
        missing = [f for f in self.fields if f not in condition]
        if missing:
            raise KeyError(f"Condition {dict(condition)} lacks the field(s) {missing}.")
        template = self.prompt_template
        if self.control_template is not None and self.is_control(condition):
            template = self.control_template
        return template.format(**{k: str(v) for k, v in condition.items()})
