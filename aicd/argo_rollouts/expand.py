"""Argo Rollouts analysis steps in a spec, `analysis: {templates: [{templateName: success-rate}], args: [...]}`,
expanded into aicd analysis steps when the spec is loaded.

The templates are read from files in the repository (spec.analysis.analysisTemplates.files, relative to the
spec's directory, never outside its Git work tree), each Prometheus metric translated into an aicd metric
(aicd.argo_rollouts.templates) and added to spec.analysis.metrics, and the step rewritten to
`analysis: {duration, metrics: [names]}`. The rest of the loader - semantic checks, model, plan, workflows -
sees plain aicd steps, so a running delivery never reads a template file. The notes say, metric by metric,
what the judge does instead of each Argo condition; `aicd validate` and `aicd plan` print them."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from aicd.argo_rollouts.templates import DEFAULT_TRACK_LABEL, Catalog, resolve_files, translate_step
from aicd.spec.durations import format_duration
from aicd.spec.errors import SpecError, json_path
from aicd.spec.yamlsafe import Path, YamlReadError, read_yaml
from aicd.strategies import STRATEGY_KINDS

_ARGO_API_VERSION = re.compile(rb"^apiVersion:\s*[\"']?argoproj\.io/", re.MULTILINE)
_AICD_API_VERSION = re.compile(rb"^apiVersion:\s*[\"']?aicd\.dev/", re.MULTILINE)

TEMPLATE_STEP_KEYS = ("templates", "args", "analysisRunMetadata")  # what an expanded step no longer has


@dataclass
class Expansion:
    """The spec document with every template step expanded, or what stopped it."""

    data: dict[str, Any]
    findings: list[tuple[Path, str]] = field(default_factory=list)  # located in the spec
    errors: list[SpecError] = field(default_factory=list)  # located in the template files
    notes: list[str] = field(default_factory=list)  # `file: $.path: text`, for people


def template_steps(spec: dict[str, Any]) -> list[tuple[Path, dict[str, Any]]]:
    """(path, value) of each `analysis` step that names Argo templates, in any step list of a stage."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for stage_index, stage in enumerate(spec.get("stages", [])):
        strategy = stage.get("strategy") or {}
        for kind, raw in strategy.items():
            if kind not in STRATEGY_KINDS or not isinstance(raw or {}, dict):
                continue  # reported by the schema
            for key, steps in STRATEGY_KINDS[kind].step_lists(raw or {}):
                for step_index, step in enumerate(steps):
                    value = step.get("analysis") if isinstance(step, dict) else None
                    if isinstance(value, dict) and "templates" in value:
                        where = ("spec", "stages", stage_index, "strategy", kind, key, step_index, "analysis")
                        found.append((where, value))
    return found


def expand(data: dict[str, Any], file: str) -> Expansion:
    """`data` (a document that passed the schema) with its template steps expanded; `file` is the spec's path,
    which template files are named relative to."""
    steps = template_steps(data["spec"])
    analysis = data["spec"].get("analysis")
    config = (analysis or {}).get("analysisTemplates")
    if not steps:
        return Expansion(data)
    result = Expansion(copy.deepcopy(data))
    if analysis is None or config is None:
        where = (
            "spec.analysis.analysisTemplates.files"
            if analysis
            else "spec.analysis (prometheus, analysisTemplates)"
        )
        for path, _value in steps:
            result.findings.append(
                (
                    (*path, "templates"),
                    "Argo AnalysisTemplates are read from files in the repository, not from a cluster: list the"
                    f" files that define them under {where}",
                )
            )
        return result
    files, problems = resolve_files(config["files"], file)
    for index, problem in problems:
        result.findings.append((("spec", "analysis", "analysisTemplates", "files", index), problem))
    catalog = Catalog.read(files)
    result.errors.extend(catalog.errors)
    if problems or catalog.errors:
        return result
    track_label = config.get("trackLabel", DEFAULT_TRACK_LABEL)
    metrics: list[dict[str, Any]] = result.data["spec"]["analysis"].setdefault("metrics", [])
    origin_of: dict[str, str] = {metric["name"]: "spec.analysis.metrics" for metric in metrics}
    by_name: dict[str, dict[str, Any]] = {metric["name"]: metric for metric in metrics}
    for path, value in steps:
        translation = translate_step(value, path, catalog, track_label)
        result.findings.extend(translation.findings)
        result.errors.extend(translation.errors)
        names = list(value.get("metrics", ()))
        for translated in translation.metrics:
            name = translated.metric["name"]
            known = by_name.get(name)
            if known is None:
                metrics.append(translated.metric)
                by_name[name] = translated.metric
                origin_of[name] = f"{translated.template} ({translated.origin})"
                result.notes.append(f"{file}: {json_path(path)}: metric {name!r} {translated.describe()}")
            elif known != translated.metric:
                result.findings.append(
                    (
                        (*path, "templates"),
                        f"metric {name!r} of {translated.template} comes out differently from the metric of that"
                        f" name in {origin_of[name]} (other args, or another definition); rename one",
                    )
                )
            if name not in names:
                names.append(name)
        step = {key: item for key, item in value.items() if key not in TEMPLATE_STEP_KEYS}
        step["metrics"] = names
        if "duration" not in value:
            step["duration"] = format_duration(translation.duration_s)
        for note in translation.notes:
            result.notes.append(f"{file}: {json_path(path)}: {note}")
        holder: Any = result.data
        for key in path[:-2]:  # down to the step list
            holder = holder[key]
        holder[path[-2]] = {"analysis": step}
    return result


def template_files(raw: bytes, spec_file: str) -> list[FsPath]:
    """The template files the spec in `raw` names (resolved, existing or not), so whoever serves the spec can
    reload it when one of them changes; nothing for a file that does not parse."""
    try:
        data = read_yaml(raw).data
    except YamlReadError:
        return []
    config = (((data or {}).get("spec") or {}).get("analysis") or {}) if isinstance(data, dict) else {}
    files = (config.get("analysisTemplates") or {}).get("files") if isinstance(config, dict) else None
    base = FsPath(spec_file).resolve().parent
    return [(base / name).resolve() for name in files or [] if isinstance(name, str)]


def is_argo_manifest(raw: bytes) -> bool:
    """Whether a YAML file holds Argo Rollouts objects (templates, Rollouts) and no DeliverySpec: a spec
    directory may keep the templates its specs name, and such a file is not a spec that failed to load."""
    return bool(_ARGO_API_VERSION.search(raw)) and not _AICD_API_VERSION.search(raw)
