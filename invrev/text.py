"""Captions: placeholders, sampling from templates, and the inverse relation text expansion."""

from __future__ import annotations

from typing import Sequence

import torch


class TemplateError(ValueError):
    """A caption template is not of the form "E_A {} E_B"."""


def split_template(template: str) -> tuple[str, str]:
    """Split "a cat {} a rock" into ("a cat", "a rock"), checking there is exactly one "{}"."""
    count = template.count("{}")
    if count != 1:
        raise TemplateError(f"template {template!r} has {count} '{{}}' placeholders; it needs exactly one")
    left, right = template.split("{}")
    return left.strip(), right.strip()


def fill(template: str, relation: str) -> str:
    """Put the relation (a placeholder or words) in the template's "{}"."""
    left, right = split_template(template)
    return " ".join(part for part in (left, relation, right) if part)


def inverse_caption(template: str, placeholder: str = "<r>", inverse_placeholder: str = "<inv>") -> str:
    """Paper Eq. 2: "E_A {} E_B" becomes "E_B <inv> <r> E_A" (sides swapped, meaning kept)."""
    left, right = split_template(template)
    return " ".join(part for part in (right, inverse_placeholder, placeholder, left) if part)


def sample_captions(
    templates: Sequence[Sequence[str]],
    indices: Sequence[int],
    generator: torch.Generator,
    placeholder: str = "<r>",
    inverse_placeholder: str = "<inv>",
    p_inverse: float = 0.0,
) -> list[str]:
    """One caption per exemplar index: a random template, inverted with probability ``p_inverse``.

    Randomness comes only from ``generator`` (two draws per caption, always, so the stream does not
    depend on p_inverse and a resumed run draws the same captions).
    """
    captions = []
    for i in indices:
        choices = templates[i]
        pick = int(torch.randint(len(choices), (1,), generator=generator))
        flip = float(torch.rand((1,), generator=generator)) < p_inverse
        template = choices[pick]
        captions.append(
            inverse_caption(template, placeholder, inverse_placeholder) if flip else fill(template, placeholder)
        )
    return captions
