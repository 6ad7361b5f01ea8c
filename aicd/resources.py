"""Files aicd ships inside its package (schemas/ and delivery_specs/ of the repository, package data in a
wheel), found through importlib.resources: never by a path relative to the source tree."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

SCHEMA_FILE = "delivery-spec.v1alpha1.json"


def schema_resource() -> Traversable:
    """The delivery spec's JSON Schema."""
    return files("aicd").joinpath("schemas", SCHEMA_FILE)


def example_spec(name: str) -> Path:
    """An example spec of delivery_specs/ (`demo.yaml` is what `aicd demo` runs), as a file on disk."""
    return Path(str(files("aicd").joinpath("delivery_specs", name)))
