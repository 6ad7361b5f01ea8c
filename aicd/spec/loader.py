"""YAML -> schema validation -> semantic checks -> immutable model, with every error located."""

from __future__ import annotations

import functools
import json
from pathlib import Path as FsPath
from typing import Any

import jsonschema

from aicd.argo_rollouts.expand import expand as expand_analysis_templates
from aicd.argo_rollouts.expand import is_argo_manifest
from aicd.redact import redact_credentials, redact_tokens
from aicd.resources import schema_resource
from aicd.spec.durations import DURATION_PATTERN, PERCENT_PATTERN
from aicd.spec.errors import SpecError, SpecInvalid, json_path
from aicd.spec.model import DeliverySpec, build_model
from aicd.spec.semantic import SEMANTIC_CHECKS
from aicd.spec.yamlsafe import MAX_FILE_BYTES, Path, YamlDocument, YamlReadError, read_yaml
from aicd.steps import STEP_KINDS
from aicd.steps.unsupported import REFUSAL_PREFIX
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
        properties = _schema_of(error).get("properties", {})
        extra = sorted(set(instance) - set(properties))
        # Keys listed only to be refused by name (aicd.steps.unsupported) are not offered.
        allowed = sorted(key for key, value in properties.items() if not _refusal(value))
        return f"unknown key(s) {extra}; allowed here: {allowed}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "oneOf":
        return (
            f"{error.instance!r} is not valid here: {_schema_of(error).get('description', 'see the schema')}"
        )
    if error.validator in ("minProperties", "maxProperties") and set(STEP_KINDS.names) <= set(
        _schema_of(error).get("properties", {})
    ):
        return f"a step has exactly one of {', '.join(STEP_KINDS.names)}"
    if error.validator == "not" and _refusal(_schema_of(error)):
        return str(_schema_of(error)["description"])  # an Argo Rollouts step aicd lacks, refused by name
    if error.validator == "const":
        return f"must be {error.validator_value!r}, not {error.instance!r}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {error.validator_value}"
    return error.message


def _refusal(schema: Any) -> bool:
    """Whether a schema property exists only to refuse its key by name (an Argo Rollouts step aicd lacks)."""
    return (
        isinstance(schema, dict)
        and "not" in schema
        and str(schema.get("description", "")).startswith(REFUSAL_PREFIX)
    )


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
    # Messages quote values; a URL's credentials and well-known tokens are never among what they show.
    return SpecError(file, mark.line, mark.col, json_path(path), redact_tokens(redact_credentials(message)))


def validate_document(document: YamlDocument, file: str) -> list[SpecError]:
    return check_document(document, file)[1]


def _findings_despite_shape_errors(
    document: YamlDocument, file: str, shape_paths: list[Path]
) -> list[SpecError]:
    """The semantic checks on a document with schema errors. They assume the shape is right, so a check that
    trips over a malformed part is skipped (that part already has a schema error), and a finding inside a
    part with a schema error is left out (one cause, one line)."""
    spec = document.data.get("spec") if isinstance(document.data, dict) else None
    if not isinstance(spec, dict):
        return []
    found: list[SpecError] = []
    for check in SEMANTIC_CHECKS:
        try:
            findings = list(check(spec))
        except Exception:  # whatever a malformed part makes a check trip over: never a crash
            continue
        for path, message in findings:
            if not any(len(bad) > 1 and path[: len(bad)] == bad for bad in shape_paths):
                found.append(_locate(document, file, path, message))
    return found


def check_document(
    document: YamlDocument, file: str, notes: list[str] | None = None
) -> tuple[dict[str, Any] | None, list[SpecError]]:
    """The document as the model reads it (Argo analysis templates expanded, aicd.argo_rollouts.expand) and
    every error; `notes` receives what people should know about the expansion."""
    errors: list[SpecError] = []
    if not isinstance(document.data, dict):
        return None, [
            _locate(
                document, file, (), f"expected a mapping (a DeliverySpec), got {type(document.data).__name__}"
            )
        ]
    shape_paths: list[Path] = []
    for error in _validator().iter_errors(document.data):
        shape_paths.append(_error_path(error))
        errors.append(_locate(document, file, shape_paths[-1], _schema_message(error)))
    if errors:
        # All problems at once: the semantic checks' findings elsewhere in the document come too.
        errors.extend(_findings_despite_shape_errors(document, file, shape_paths))
        return None, sorted(errors, key=lambda e: (e.line, e.col, e.path))
    expansion = expand_analysis_templates(document.data, file)
    errors.extend(_locate(document, file, path, message) for path, message in expansion.findings)
    if errors or expansion.errors:
        # Errors inside template files keep their own order, after the spec's.
        # (A template named by two steps is reported once.)
        file_errors = list(dict.fromkeys(expansion.errors))
        return None, [*sorted(errors, key=lambda e: (e.line, e.col, e.path)), *file_errors]
    for check in SEMANTIC_CHECKS:
        for path, message in check(expansion.data["spec"]):
            errors.append(_locate(document, file, path, message))
    if notes is not None:
        notes.extend(expansion.notes)
    return expansion.data, sorted(errors, key=lambda e: (e.line, e.col, e.path))


def parse_spec_bytes(
    raw: bytes, file: str, notes: list[str] | None = None
) -> tuple[DeliverySpec | None, list[SpecError]]:
    """The model of the spec in `raw` (`file` names it, and Argo analysis template files are found relative to
    it), or every error; `notes` receives what people should know (how Argo conditions were translated)."""
    try:
        document = read_yaml(raw)
    except YamlReadError as error:
        return None, [SpecError(file, error.mark.line, error.mark.col, json_path(error.path), error.message)]
    data, errors = check_document(document, file, notes)
    if errors or data is None:
        return None, errors
    try:
        return build_model(data), []
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
    """Files named, and the spec files inside directories named (sorted; Argo Rollouts manifests, such as the
    analysis templates specs name, are not spec files)."""
    found: list[FsPath] = []
    for name in paths:
        path = FsPath(name)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.suffix in SPEC_SUFFIXES and p.is_file() and not is_argo_manifest_file(p)
                )
            )
        else:
            found.append(path)
    return found


def is_argo_manifest_file(path: FsPath) -> bool:
    """Whether the file holds Argo Rollouts objects and no DeliverySpec (aicd.argo_rollouts.expand)."""
    try:
        with open(path, "rb") as handle:
            return is_argo_manifest(handle.read(MAX_FILE_BYTES))
    except OSError:
        return False  # reported by whoever reads it as a spec
