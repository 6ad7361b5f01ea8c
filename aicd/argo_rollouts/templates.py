"""Argo Rollouts AnalysisTemplates translated into aicd metrics.

An Argo `analysis: {templates: [{templateName: success-rate}], args: [...]}` step names templates that live
in the cluster; aicd reads them from files in the repository instead (spec.analysis.analysisTemplates.files,
or the files given to `aicd import argo-rollout`). Each Prometheus metric of a named template becomes an aicd
metric, decided once, when the spec is loaded, so a delivery's plan carries plain metrics:

- the query, with the step's and the template's `args` filled in, gets the label that tells canary from
  stable (`trackLabel`, default `track`) added to every selector, unless it already has `{{ track }}`: Argo
  measures one population and judges it against a fixed condition, aicd's judge measures the canary and the
  stable version apart and compares them;
- `successCondition`/`failureCondition` become the canary's absolute `min`/`max` (aicd.argo_rollouts.
  conditions), `failureLimit: 0` (Argo's default) a critical metric; the direction of the comparison with
  stable is the bad side of the limit;
- `count` x `interval` (+ `initialDelay`) becomes the step's duration; a single measurement becomes aicd's
  default 5m, since the judge needs evidence over time;
- connection settings (`address`, `timeout`, `headers`, `authentication`, TLS) are not taken over: aicd
  queries spec.analysis.prometheus.

What cannot be carried over is an error that names it: a provider other than Prometheus, a condition that is
not a floor or ceiling, an argument from a Secret, a field reference or the pod-template hash."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from aicd.argo_rollouts.conditions import ConditionError, limits
from aicd.promql import PromQLError, inject_label, selector_count
from aicd.spec.durations import DURATION_PATTERN, format_duration, parse_duration
from aicd.spec.errors import SpecError, json_path
from aicd.spec.placeholders import ALLOWED_VARIABLES, untracked_selectors
from aicd.spec.yamlsafe import MAX_FILE_BYTES, Path, YamlDocument, YamlReadError, read_yaml_documents

ARGO_API_PREFIX = "argoproj.io/"
TEMPLATE_KINDS = ("AnalysisTemplate", "ClusterAnalysisTemplate")
DEFAULT_TRACK_LABEL = "track"
TRACK_VALUE = "{{ track }}"
DEFAULT_STEP_DURATION_S = 5 * 60.0
METRIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_ARG = re.compile(r"\{\{\s*args\.(?P<name>[A-Za-z0-9_.-]+)\s*\}\}")
_ARGO_PLACEHOLDER = re.compile(r"\{\{\s*(?P<name>[^{}]*?)\s*\}\}")
_GO_DURATION = re.compile(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")

# What to do instead, per provider Argo has and aicd does not read.
_PROVIDER_ADVICE = {
    "job": "run the Job's check as a `test` command of the spec (before the stages) or as its own stage",
    "web": "expose the measurement to Prometheus, or run the check as a `test` command",
    "kayenta": "aicd's judge is its own canary-versus-baseline comparison: write the Kayenta canary config's"
    " metrics as Prometheus queries under spec.analysis.metrics",
}


@dataclass(frozen=True)
class Template:
    """One AnalysisTemplate or ClusterAnalysisTemplate document, where it came from and its marks."""

    kind: str
    name: str
    file: str  # as the user names it (relative to the spec's directory)
    document: YamlDocument

    @property
    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = self.document.data
        return data

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    def error(self, path: Path, message: str) -> SpecError:
        mark = self.document.key_marks.get(path) or self.document.mark_for(path)
        return SpecError(self.file, mark.line, mark.col, json_path(path), message)

    def where(self, path: Path) -> str:
        mark = self.document.key_marks.get(path) or self.document.mark_for(path)
        return f"{self.file}:{mark.line}"


@dataclass
class Catalog:
    """The templates of some files, by kind and name; `errors` are the files' own problems."""

    templates: dict[tuple[str, str], Template] = field(default_factory=dict)
    errors: list[SpecError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, files: Iterable[tuple[str, FsPath]]) -> Catalog:
        """Read (display name, path) files; documents of other kinds are skipped (a file may hold the Rollout
        too), a template defined twice is an error."""
        catalog = cls()
        for name, path in files:
            catalog.files.append(name)
            try:
                raw = path.read_bytes()
            except OSError as error:
                catalog.errors.append(SpecError(name, 0, 0, "$", f"cannot read: {error.strerror or error}"))
                continue
            catalog.add(name, raw)
        return catalog

    def add(self, name: str, raw: bytes) -> None:
        try:
            documents = read_yaml_documents(raw)
        except YamlReadError as error:
            self.errors.append(
                SpecError(name, error.mark.line, error.mark.col, json_path(error.path), error.message)
            )
            return
        for document in documents:
            data = document.data
            if not isinstance(data, dict) or data.get("kind") not in TEMPLATE_KINDS:
                continue
            template_name = (data.get("metadata") or {}).get("name")
            if not isinstance(template_name, str) or not template_name:
                mark = document.mark_for(("metadata",))
                self.errors.append(
                    SpecError(name, mark.line, mark.col, "$.metadata.name", "a template needs a name")
                )
                continue
            template = Template(str(data["kind"]), template_name, name, document)
            if not str(data.get("apiVersion", "")).startswith(ARGO_API_PREFIX):
                self.errors.append(
                    template.error(
                        ("apiVersion",), f"{template.label}: apiVersion must be argoproj.io/v1alpha1"
                    )
                )
                continue
            key = (template.kind, template_name)
            if key in self.templates:
                first = self.templates[key]
                self.errors.append(
                    template.error(
                        ("metadata", "name"), f"{template.label} is also defined at {first.where(())}"
                    )
                )
                continue
            self.templates[key] = template

    def find(self, name: str, cluster_scope: bool) -> Template | None:
        return self.templates.get(("ClusterAnalysisTemplate" if cluster_scope else "AnalysisTemplate", name))


@dataclass
class TranslatedMetric:
    """An aicd metric (as a spec writes it) made from one metric of a template."""

    metric: dict[str, Any]
    template: str  # "AnalysisTemplate success-rate"
    origin: str  # file:line of the Argo metric
    notes: list[str]
    duration_s: float | None  # how long Argo measures: None for one measurement, or until stopped

    def describe(self) -> str:
        """One line: where it came from and what the judge does instead of Argo's condition."""
        return f"from {self.template} ({self.origin}): " + "; ".join(self.notes)


@dataclass
class StepTranslation:
    """An `analysis: {templates: ...}` step in aicd's terms. `findings` are problems of the step itself
    (spec path, message); `errors` are problems inside the template files, located there."""

    metrics: list[TranslatedMetric] = field(default_factory=list)
    duration_s: float = DEFAULT_STEP_DURATION_S
    notes: list[str] = field(default_factory=list)
    findings: list[tuple[Path, str]] = field(default_factory=list)
    errors: list[SpecError] = field(default_factory=list)


def translate_step(
    step: Mapping[str, Any], path: Path, catalog: Catalog, track_label: str = DEFAULT_TRACK_LABEL
) -> StepTranslation:
    """The metrics and duration of an Argo analysis step (`step` is the value under `analysis:`, `path` its
    JSON path, for findings)."""
    result = StepTranslation()
    given = _step_args(step)
    durations: list[float] = []
    unbounded = single = False
    names: set[str] = set()
    for index, reference in enumerate(step.get("templates") or []):
        where = (*path, "templates", index)
        name = reference.get("templateName")
        cluster = bool(reference.get("clusterScope", False))
        template = catalog.find(name, cluster)
        if template is None:
            kind = "ClusterAnalysisTemplate" if cluster else "AnalysisTemplate"
            other = catalog.find(name, not cluster)
            hint = (
                f"; a {other.kind} of that name is in {other.where(())}"
                f" ({'drop' if cluster else 'add'} `clusterScope: true`)"
                if other
                else ""
            )
            read = ", ".join(catalog.files) or "no files"
            result.findings.append(((*where, "templateName"), f"no {kind} {name!r} in {read}{hint}"))
            continue
        for metric_index, metric in enumerate(template.data.get("spec", {}).get("metrics") or []):
            translated = translate_metric(template, metric_index, metric, given, path, track_label, result)
            if translated is None:
                continue
            if translated.metric["name"] in names:
                result.errors.append(
                    template.error(
                        ("spec", "metrics", metric_index, "name"),
                        f"metric {translated.metric['name']!r} is also in another template of this step"
                        " (Argo refuses to merge them too); rename one",
                    )
                )
                continue
            names.add(translated.metric["name"])
            result.metrics.append(translated)
            if translated.duration_s is None:
                interval = metric.get("interval")
                unbounded = unbounded or (interval is not None and metric.get("count") is None)
                single = single or interval is None
            else:
                durations.append(translated.duration_s)
        if not (template.data.get("spec", {}).get("metrics") or []):
            result.errors.append(template.error(("spec",), f"{template.label} has no metrics"))
    explicit = step.get("duration")
    if explicit is not None:
        result.duration_s = parse_duration(explicit)
    elif durations:
        result.duration_s = max(durations)
        result.notes.append(
            f"looks for {format_duration(result.duration_s)}, as long as Argo's measurements take"
        )
    if explicit is None and (single or unbounded) and not durations:
        why = "measures until stopped" if unbounded else "takes one measurement"
        result.notes.append(
            f"Argo {why}; the judge gathers evidence over time: it looks for"
            f" {format_duration(result.duration_s)} (set the step's `duration` to change it)"
        )
    return result


def _step_args(step: Mapping[str, Any]) -> dict[str, str | None]:
    """The step's args: a literal value, or None where the value comes from the cluster (refused where a
    template uses it, see _Filler)."""
    return {arg["name"]: str(arg["value"]) if "value" in arg else None for arg in step.get("args") or []}


def translate_metric(
    template: Template,
    index: int,
    metric: Any,
    given: Mapping[str, str | None],
    step_path: Path,
    track_label: str,
    result: StepTranslation,
) -> TranslatedMetric | None:
    """One Argo metric as an aicd metric, or None with the problem recorded in `result`."""
    base: Path = ("spec", "metrics", index)
    if not isinstance(metric, dict):
        result.errors.append(template.error(base, "a metric is a mapping"))
        return None
    name = metric.get("name")
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        result.errors.append(
            template.error((*base, "name"), f"metric name {name!r} must match {METRIC_NAME.pattern}")
        )
        return None
    provider = metric.get("provider") or {}
    kinds = sorted(provider) if isinstance(provider, dict) else []
    if kinds != ["prometheus"]:
        used = ", ".join(kinds) or "no"
        advice = next((_PROVIDER_ADVICE[kind] for kind in kinds if kind in _PROVIDER_ADVICE), None)
        advice = advice or "write it as a Prometheus query under spec.analysis.metrics, or drop it"
        result.errors.append(
            template.error(
                (*base, "provider"),
                f"metric {name!r} of {template.label} uses the {used} provider; aicd's judge reads Prometheus"
                f" only: {advice}",
            )
        )
        return None
    prometheus = provider["prometheus"] or {}
    fill = _Filler(template, base, given, step_path, result)
    raw_query = prometheus.get("query")
    if not isinstance(raw_query, str) or not raw_query.strip():
        result.errors.append(
            template.error((*base, "provider", "prometheus"), f"metric {name!r} has no query")
        )
        return None
    query = fill(raw_query, (*base, "provider", "prometheus", "query"))
    success = _text(metric.get("successCondition"), fill, (*base, "successCondition"))
    failure = _text(metric.get("failureCondition"), fill, (*base, "failureCondition"))
    failure_limit = _number(metric.get("failureLimit", 0), fill, (*base, "failureLimit"), template, result)
    timing = {
        key: _text(metric.get(key), fill, (*base, key)) for key in ("interval", "initialDelay", "count")
    }
    if fill.failed or query is None or failure_limit is None:
        return None
    notes: list[str] = []
    try:
        bounds = limits(success, failure, failure_limit=int(failure_limit))
    except ConditionError as error:
        which = "failureCondition" if str(error).startswith("failureCondition") else "successCondition"
        result.errors.append(template.error((*base, which), f"metric {name!r}: {error}"))
        return None
    try:
        injected = inject_label(query, track_label, TRACK_VALUE)
    except PromQLError as error:
        result.errors.append(
            template.error(
                (*base, "provider", "prometheus", "query"), f"metric {name!r}: unreadable query: {error}"
            )
        )
        return None
    if selector_count(query) == 0:
        result.errors.append(
            template.error(
                (*base, "provider", "prometheus", "query"),
                f"metric {name!r}: the query reads no series, so canary and stable cannot be told apart",
            )
        )
        return None
    untracked = untracked_selectors(injected)
    if untracked:
        result.errors.append(
            template.error(
                (*base, "provider", "prometheus", "query"),
                f"metric {name!r}: {', '.join(untracked)} {'matches' if len(untracked) == 1 else 'match'} on"
                f" {track_label} already, so canary and stable would read the same series there: match on"
                f' {track_label}="{TRACK_VALUE}", or leave {track_label} out and aicd adds it',
            )
        )
        return None
    if injected != query:
        notes.append(f'canary and stable told apart by {track_label}="canary"|"stable" on every selector')
    for key in (
        key
        for key in ("address", "timeout", "headers", "authentication", "insecure", "caCert")
        if key in prometheus
    ):
        notes.append(f"{key} not used: aicd queries spec.analysis.prometheus")
    if "rangeQuery" in prometheus:
        notes.append("rangeQuery not used: the judge range-queries everything since the step began")
    duration_s = _duration(timing, template, base, result)
    if duration_s is False:
        return None
    for key in ("consecutiveErrorLimit", "inconclusiveLimit", "consecutiveSuccessLimit"):
        if key in metric:
            notes.append(
                f"{key} not used: query errors and no data are the judge's `error`/`nodata` outcomes"
            )
    aicd_metric: dict[str, Any] = {"name": name, "query": injected, "kind": "continuous"}
    # The bad side of the limit is the bad direction of the comparison with stable; both sides or none: either.
    if (bounds.min is None) == (bounds.max is None):
        aicd_metric["direction"] = "either"
    else:
        aicd_metric["direction"] = "decrease" if bounds.min is not None else "increase"
    if bounds.min is not None:
        aicd_metric["min"] = bounds.min
    if bounds.max is not None:
        aicd_metric["max"] = bounds.max
    if (bounds.min is not None or bounds.max is not None) and int(failure_limit) == 0:
        aicd_metric["critical"] = True
    direction = aicd_metric["direction"]
    notes.append(
        f"compared with stable as a level (kind continuous, direction {direction}, tolerance 5%): the judge passes"
        " the canary only when shown within the tolerance"
    )
    return TranslatedMetric(
        aicd_metric, template.label, template.where(base), [*bounds.notes, *notes], duration_s
    )


class _Filler:
    """Fills `{{args.NAME}}` from the step's args, then the template's defaults; records what it cannot."""

    def __init__(
        self,
        template: Template,
        base: Path,
        given: Mapping[str, str | None],
        step_path: Path,
        result: StepTranslation,
    ) -> None:
        self.template = template
        self.given = given
        self.step_path = step_path
        self.result = result
        self.failed = False
        self.declared: dict[str, Any] = {}
        for arg in template.data.get("spec", {}).get("args") or []:
            if isinstance(arg, dict) and isinstance(arg.get("name"), str):
                self.declared[arg["name"]] = arg

    def __call__(self, text: str, path: Path) -> str | None:
        missing: list[str] = []

        def value(match: re.Match[str]) -> str:
            name = match["name"]
            if name in self.given and self.given[name] is not None:
                return str(self.given[name])
            declared = self.declared.get(name)
            if name in self.given or (
                declared is not None and "valueFrom" in declared and "value" not in declared
            ):
                source = "the step's args" if name in self.given else self.template.label
                self._fail(
                    path,
                    f"arg {name!r} takes its value from the cluster ({source}: valueFrom), which aicd cannot"
                    f" read. {self._advice(name)}",
                )
                return match.group()
            if declared is not None and "value" in declared:
                return str(declared["value"])
            missing.append(name)
            return match.group()

        filled = _ARG.sub(value, text)
        for name in dict.fromkeys(missing):  # an arg used twice is missing once
            self.result.findings.append(
                (
                    (*self.step_path, "args"),
                    f"{self.template.label} needs arg {name!r} ({self.template.where(path)}); give it here as"
                    f" `- {{name: {name}, value: ...}}`",
                )
            )
            self.failed = True
        for match in _ARGO_PLACEHOLDER.finditer(filled):
            inner = match["name"]
            if inner.startswith("args."):
                continue  # reported above
            if inner not in ALLOWED_VARIABLES:
                self._fail(
                    path,
                    f"placeholder {match.group()!r} has no value in aicd (its placeholders are"
                    f" {', '.join(sorted(ALLOWED_VARIABLES))})",
                )
        return None if self.failed else filled

    def _advice(self, name: str) -> str:
        return (
            f"aicd tells canary from stable itself, by the track label it adds to every selector: drop the matcher"
            f" on {{{{args.{name}}}}} from the query if it selects a pod-template hash, or give the arg a literal"
            " `value` (aicd placeholders such as {{ target }} work)"
        )

    def _fail(self, path: Path, message: str) -> None:
        self.result.errors.append(self.template.error(path, message))
        self.failed = True


def _text(value: Any, fill: _Filler, path: Path) -> str | None:
    if value is None:
        return None
    return fill(str(value), path)


def _number(value: Any, fill: _Filler, path: Path, template: Template, result: StepTranslation) -> int | None:
    text = _text(value, fill, path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        result.errors.append(template.error(path, f"{path[-1]} {text!r} is not a whole number"))
        return None


def _duration(
    timing: Mapping[str, str | None], template: Template, base: Path, result: StepTranslation
) -> float | bool | None:
    """initialDelay + count x interval in seconds; None for one measurement or an open end; False on error."""
    seconds: dict[str, float] = {}
    for key in ("interval", "initialDelay"):
        text = timing.get(key)
        if text is None:
            continue
        if not (_GO_DURATION.match(text) or text.isdigit()):
            result.errors.append(
                template.error((*base, key), f"{key} {text!r} is not a duration (use e.g. 30s, 5m, 1h)")
            )
            return False
        seconds[key] = parse_duration(text if re.match(DURATION_PATTERN, text) else f"{text}s")
    count_text = timing.get("count")
    if count_text is None or "interval" not in seconds:
        return None
    try:
        count = int(count_text)
    except ValueError:
        result.errors.append(template.error((*base, "count"), f"count {count_text!r} is not a whole number"))
        return False
    return seconds.get("initialDelay", 0.0) + max(count, 1) * seconds["interval"]


def resolve_files(
    names: Iterable[str], spec_file: str
) -> tuple[list[tuple[str, FsPath]], list[tuple[int, str]]]:
    """Template files named relative to the spec's directory, each kept inside the repository that holds the
    spec (its Git work tree, else the spec's directory). Returns (name, path) pairs and (index, problem)s."""
    base = FsPath(spec_file).resolve().parent
    root = _work_tree(base)
    found: list[tuple[str, FsPath]] = []
    problems: list[tuple[int, str]] = []
    for index, name in enumerate(names):
        if os.path.isabs(name):
            problems.append((index, f"{name!r} is absolute; name it relative to the spec's directory"))
            continue
        path = (base / name).resolve()
        if path != root and root not in path.parents:
            problems.append((index, f"{name!r} leaves the repository ({root})"))
            continue
        if not path.is_file():
            problems.append((index, f"{name!r}: no such file (relative to {base})"))
            continue
        if path.stat().st_size > MAX_FILE_BYTES:
            problems.append((index, f"{name!r} is over the limit of {MAX_FILE_BYTES} bytes"))
            continue
        # Shown as the spec is named (relative to where aicd runs), so a message's file:line opens as is.
        found.append((os.path.normpath(os.path.join(os.path.dirname(spec_file), name)), path))
    return found, problems


def _work_tree(directory: FsPath) -> FsPath:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return directory


__all__ = [
    "DEFAULT_TRACK_LABEL",
    "Catalog",
    "StepTranslation",
    "Template",
    "TranslatedMetric",
    "resolve_files",
    "translate_step",
]
