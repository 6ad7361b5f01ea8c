"""YAML -> schema validation -> semantic checks -> immutable model, with every error located."""

from __future__ import annotations

import functools
import json
from pathlib import Path as FsPath
from typing import Any

import jsonschema

from aicd.redact import redact_credentials
from aicd.resources import schema_resource
from aicd.spec.durations import DURATION_PATTERN, PERCENT_PATTERN
from aicd.spec.errors import SpecError, SpecInvalid, json_path
from aicd.spec.model import DeliverySpec, build_model
from aicd.spec.semantic import SEMANTIC_CHECKS
from aicd.spec.yamlsafe import Path, YamlDocument, YamlReadError, read_yaml
from aicd.steps import STEP_KINDS
from aicd.yamledit import WRITE_PATH_PATTERN, parse_path

SCHEMA_PATH = FsPath(str(schema_resource()))  # where editors find it (the yaml-language-server comment)
SPEC_SUFFIXES = (".yaml", ".yml")


@functools.cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_resource().read_text(encoding="utf-8"))
    return loaded


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema())


def _schema_of(error: jsonschema.ValidationError) -> dict[str, Any]:
    """The (sub)schema that failed, as a dict (jsonschema types it as Mapping | bool | Unset)."""
    return dict(error.schema) if isinstance(error.schema, dict) else {}


def _schema_message(error: jsonschema.ValidationError) -> str:
    """jsonschema's wording, made shorter and more specific where it is vague."""
    if error.validator == "pattern":
        if error.validator_value == DURATION_PATTERN:
            return f"unparsable duration {error.instance!r} (use e.g. 30s, 5m, 1h30m, 24h)"
        if error.validator_value == PERCENT_PATTERN:
            return f"unparsable percentage {error.instance!r} (use e.g. 5%, 12.5%)"
        if error.validator_value == WRITE_PATH_PATTERN:
            return _write_path_problem(error.instance)
        return f"{error.instance!r} does not match {error.validator_value}"
    if error.validator == "additionalProperties":
        instance: Any = error.instance  # an object: additionalProperties applies to nothing else
        extra = sorted(set(instance) - set(_schema_of(error).get("properties", {})))
        allowed = sorted(_schema_of(error).get("properties", {}))
        return f"unknown key(s) {extra}; allowed here: {allowed}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "oneOf":
        return (
            f"{error.instance!r} is not valid here: {_schema_of(error).get('description', 'see the schema')}"
        )
    if error.validator in ("minProperties", "maxProperties") and _schema_of(error).get(
        "properties", {}
    ).keys() == set(STEP_KINDS.names):
        return f"a step has exactly one of {', '.join(STEP_KINDS.names)}"
    if error.validator == "const":
        return f"must be {error.validator_value!r}, not {error.instance!r}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {error.validator_value}"
    return error.message


def _write_path_problem(text: Any) -> str:
    try:
        parse_path(text)
    except ValueError as problem:
        return str(problem)
    return f"write path {text!r} does not match {WRITE_PATH_PATTERN}"  # the pattern and the parser disagree


def _error_path(error: jsonschema.ValidationError) -> Path:
    path: Path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        extra = sorted(set(error.instance) - set(_schema_of(error).get("properties", {})))
        if extra:
            path = (*path, extra[0])
    return path


def _locate(document: YamlDocument, file: str, path: Path, message: str) -> SpecError:
    mark = document.key_marks.get(path) if path and path[-1] not in document.marks else None
    mark = mark or document.mark_for(path)
    # Messages quote values; a URL's credentials are never among what they show.
    return SpecError(file, mark.line, mark.col, json_path(path), redact_credentials(message))


def validate_document(document: YamlDocument, file: str) -> list[SpecError]:
    errors: list[SpecError] = []
    if not isinstance(document.data, dict):
        return [
            _locate(
                document, file, (), f"expected a mapping (a DeliverySpec), got {type(document.data).__name__}"
            )
        ]
    shape_paths: list[Path] = []
    for error in _validator().iter_errors(document.data):
        shape_paths.append(_error_path(error))
        errors.append(_locate(document, file, shape_paths[-1], _schema_message(error)))
    spec = document.data.get("spec")
    if isinstance(spec, dict):
        # All problems at once: the semantic checks run on a document with shape errors too. They assume the
        # shape is right, so a check that trips over a malformed part is skipped (its part already has a
        # schema error), and a finding inside a part with a schema error is left out (one cause, one line).
        for check in SEMANTIC_CHECKS:
            try:
                findings = list(check(spec))
            except Exception:  # whatever a malformed part makes a check trip over, never a crash
                if not shape_paths:
                    raise  # on a well-formed spec a check that fails is a bug: let it show
                continue
            for path, message in findings:
                if not any(len(bad) > 1 and path[: len(bad)] == bad for bad in shape_paths):
                    errors.append(_locate(document, file, path, message))
    return sorted(errors, key=lambda e: (e.line, e.col, e.path))


def parse_spec_bytes(raw: bytes, file: str) -> tuple[DeliverySpec | None, list[SpecError]]:
    try:
        document = read_yaml(raw)
    except YamlReadError as error:
        return None, [SpecError(file, error.mark.line, error.mark.col, json_path(error.path), error.message)]
    errors = validate_document(document, file)
    if errors:
        return None, errors
    try:
        return build_model(document.data), []
    except (ValueError, TypeError, KeyError) as error:
        # A model invariant no check above caught: still an error about the spec, not a crash.
        return None, [_locate(document, file, ("spec",), f"invalid spec: {error}")]


def load_spec(path: str | FsPath) -> DeliverySpec:
    """The validated model of the spec at `path`; SpecInvalid lists every error."""
    file = str(path)
    try:
        raw = FsPath(path).read_bytes()
    except OSError as error:
        raise SpecInvalid([SpecError(file, 0, 0, "$", f"cannot read: {error.strerror or error}")]) from None
    spec, errors = parse_spec_bytes(raw, file)
    if errors or spec is None:
        raise SpecInvalid(errors)
    return spec


def spec_files(paths: list[str]) -> list[FsPath]:
    """Files named, and the spec files inside directories named (sorted)."""
    found: list[FsPath] = []
    for name in paths:
        path = FsPath(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in SPEC_SUFFIXES and p.is_file()))
        else:
            found.append(path)
    return found
