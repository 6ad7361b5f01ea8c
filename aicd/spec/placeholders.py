"""`{{ name }}` placeholders: filled from a fixed set of variables, never by a shell."""

from __future__ import annotations

import re
from collections.abc import Mapping

from aicd.promql import selectors

ALLOWED_VARIABLES = frozenset(
    {"revision", "revision.short", "artifact", "track", "site", "stage", "target", "weight"}
    # A target's URLs, for verification runs (aicd.verification): live traffic, a blue-green preview, the canary.
    | {"url", "preview.url", "canary.url"}
)
PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def placeholders_in(text: str) -> list[str]:
    return PLACEHOLDER.findall(text)


def unknown_placeholders(text: str) -> list[str]:
    return [name for name in placeholders_in(text) if name not in ALLOWED_VARIABLES]


def render(text: str, variables: Mapping[str, str], *, partial: bool = False) -> str:
    """Fill placeholders from `variables`. With `partial`, placeholders whose value is not known yet
    (e.g. `{{ track }}` at plan time) stay as they are for a later render."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in ALLOWED_VARIABLES:
            raise ValueError(f"placeholder {{{{ {name} }}}} is not one of {sorted(ALLOWED_VARIABLES)}")
        if name in variables:
            return str(variables[name])
        if partial:
            return match.group(0)
        raise ValueError(f"placeholder {{{{ {name} }}}} has no value here")

    return PLACEHOLDER.sub(substitute, text)


def untracked_selectors(query: str) -> list[str]:
    """The series selectors of a PromQL query that do not choose their track by {{ track }}: each reads the
    same series (both tracks, or one fixed track) for canary and baseline. Raises PromQLError when the query
    cannot be read."""
    return [selector for selector in selectors(query) if "track" not in placeholders_in(selector)]
