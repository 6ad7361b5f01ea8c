"""Round-trip edits of a GitOps values file: set dotted keys, keep comments, order and formatting."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def set_keys(text: str, values: Mapping[str, Any]) -> str:
    """`text` with each dotted key path in `values` set (intermediate mappings created as needed)."""
    yaml = _yaml()
    document = yaml.load(text) if text.strip() else None
    if document is None:
        document = CommentedMap()
    if not isinstance(document, dict):
        raise ValueError("the values file is not a YAML mapping")
    for dotted, value in values.items():
        node = document
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = CommentedMap()
                node[part] = child
            node = child
        node[parts[-1]] = value
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def get_key(text: str, dotted: str) -> Any:
    document = _yaml().load(text) if text.strip() else None
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
