"""`aicd import argo-rollout`: an Argo Rollouts Rollout's canary strategy as an aicd spec stage.

What carries over: `setWeight` and `pause` steps (a pause's integer seconds written as aicd's `10s`), and
`analysis` steps whose templates are Prometheus AnalysisTemplates/ClusterAnalysisTemplates found in the files
given (or in the Rollout's own file): their metrics translated as the spec loader does
(aicd.argo_rollouts.templates), the step becoming `analysis: {duration, metrics}`. The final promotion needs no
step, in Argo as in aicd.

Everything else is reported, located in its file, with what to do instead: Argo steps aicd has no kind for
(aicd.steps.unsupported), analysis it cannot translate, background analysis, traffic routing and the canary's
other fields. Input that holds no usable canary (not YAML, no Rollout, a blue-green strategy) is an ImportError."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from aicd.argo_rollouts.templates import (
    ARGO_API_PREFIX,
    DEFAULT_TRACK_LABEL,
    Catalog,
    TranslatedMetric,
    translate_step,
)
from aicd.spec.durations import format_duration, parse_duration
from aicd.spec.errors import SpecError, json_path
from aicd.spec.yamlsafe import MAX_FILE_BYTES, Path, YamlDocument, YamlReadError, read_yaml_documents
from aicd.steps.unsupported import UNSUPPORTED_ANALYSIS_FIELDS, UNSUPPORTED_STEPS

# The canary strategy's fields other than `steps` that belong to the chart the target's file configures (aicd
# writes the canary's weight and image there; the chart routes and scales by them): shown, not a loss.
_CHART = "belongs to the chart the target's file configures (aicd writes the weight there: spec.write.weight)"
CHART_FIELDS: dict[str, str] = {
    "trafficRouting": "traffic routing " + _CHART,
    "canaryService": "the canary's service " + _CHART,
    "stableService": "the stable service " + _CHART,
    "pingPong": "ping-pong services " + _CHART,
    "maxSurge": "replica management " + _CHART,
    "maxUnavailable": "replica management " + _CHART,
    "dynamicStableScale": "replica management " + _CHART,
    "minPodsPerReplicaSet": "replica management " + _CHART,
    "scaleDownDelaySeconds": "replica management " + _CHART,
    "scaleDownDelayRevisionLimit": "replica management " + _CHART,
    "abortScaleDownDelaySeconds": "replica management " + _CHART + "; an abort in aicd reverts the file",
    "antiAffinity": "scheduling " + _CHART,
    "canaryMetadata": "pod labels " + _CHART + "; aicd's metrics tell canary from stable by the track label",
    "stableMetadata": "pod labels " + _CHART + "; aicd's metrics tell canary from stable by the track label",
}
BACKGROUND_ANALYSIS = (
    "background analysis runs beside the steps; aicd judges in `analysis` steps: add `analysis: {duration: 10m,"
    " metrics: [...]}` after each weight it should judge (the templates' metrics are in the output's `metrics`)"
)
_STEP_ANALYSIS_KEYS = ("templates", "args", "analysisRunMetadata")


class RolloutUnusable(ValueError):
    """The input holds no canary to convert; `error` locates why."""

    def __init__(self, error: SpecError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Left:
    """Something of the Rollout not carried over: where, what, and what to do instead. `lost` is behaviour the
    stage does not have (a step, a check); otherwise it is the chart's business, not aicd's."""

    file: str
    line: int
    path: str
    message: str
    lost: bool = True

    def __str__(self) -> str:
        what = "not carried over" if self.lost else "left to the chart"
        return f"{self.file}:{self.line}: {what}: {self.path}: {self.message}"


@dataclass
class Imported:
    rollout: str  # the Rollout's metadata.name
    stage: dict[str, Any]  # an aicd stage, as a spec writes it
    metrics: list[TranslatedMetric] = field(default_factory=list)  # for spec.analysis.metrics
    left: list[Left] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how analysis steps were timed


def read_documents(name: str, path: FsPath) -> list[YamlDocument]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise RolloutUnusable(
                SpecError(name, 0, 0, "$", f"file is {size} bytes; the limit is {MAX_FILE_BYTES}")
            )
        raw = path.read_bytes()
    except OSError as error:
        raise RolloutUnusable(SpecError(name, 0, 0, "$", f"cannot read: {error.strerror or error}")) from None
    try:
        return read_yaml_documents(raw)
    except YamlReadError as error:
        raise RolloutUnusable(
            SpecError(name, error.mark.line, error.mark.col, json_path(error.path), error.message)
        ) from None


def find_rollout(name: str, documents: list[YamlDocument], wanted: str | None) -> YamlDocument:
    rollouts = [
        document
        for document in documents
        if isinstance(document.data, dict)
        and document.data.get("kind") == "Rollout"
        and str(document.data.get("apiVersion", "")).startswith(ARGO_API_PREFIX)
    ]
    names = [str((document.data.get("metadata") or {}).get("name", "")) for document in rollouts]
    if wanted is not None:
        if wanted not in names:
            listed = ", ".join(names) or "none"
            raise RolloutUnusable(
                SpecError(name, 0, 0, "$", f"no Rollout named {wanted!r} (Rollouts here: {listed})")
            )
        return rollouts[names.index(wanted)]
    if not rollouts:
        kinds = sorted({str(d.data.get("kind")) for d in documents if isinstance(d.data, dict)}) or [
            "nothing"
        ]
        raise RolloutUnusable(
            SpecError(
                name,
                0,
                0,
                "$",
                f"no Argo Rollouts Rollout (apiVersion argoproj.io/v1alpha1) here, only {', '.join(kinds)}",
            )
        )
    if len(rollouts) > 1:
        raise RolloutUnusable(
            SpecError(
                name, 0, 0, "$", f"{len(rollouts)} Rollouts here ({', '.join(names)}); choose one with --name"
            )
        )
    return rollouts[0]


def convert(
    name: str,
    documents: list[YamlDocument],
    catalog: Catalog,
    *,
    rollout_name: str | None = None,
    stage_name: str = "production",
    targets: Iterable[str] = (),
    track_label: str = DEFAULT_TRACK_LABEL,
) -> Imported:
    """The Rollout in `documents` (of file `name`) as an aicd stage; RolloutUnusable when there is no canary."""
    document = find_rollout(name, documents, rollout_name)
    data: dict[str, Any] = document.data
    rollout = str((data.get("metadata") or {}).get("name") or "rollout")

    def error(path: Path, message: str) -> RolloutUnusable:
        mark = document.key_marks.get(path) or document.mark_for(path)
        return RolloutUnusable(SpecError(name, mark.line, mark.col, json_path(path), message))

    strategy = (data.get("spec") or {}).get("strategy")
    if not isinstance(strategy, dict) or not strategy:
        raise error(("spec",), f"Rollout {rollout} has no strategy (spec.strategy.canary)")
    if "canary" not in strategy:
        kinds = ", ".join(sorted(strategy))
        raise error(
            ("spec", "strategy"),
            f"Rollout {rollout} uses the {kinds} strategy; aicd delivers canaries: a blue-green switch is"
            " `steps: [{pause: {}}]` (wait for a person, then promote) - write that stage by hand",
        )
    canary = strategy["canary"] or {}
    if not isinstance(canary, dict):
        raise error(("spec", "strategy", "canary"), "the canary strategy is not a mapping")
    result = Imported(rollout, {"name": stage_name, "targets": list(targets) or [rollout]})

    def leave(path: Path, message: str, lost: bool = True) -> None:
        mark = document.key_marks.get(path) or document.mark_for(path)
        result.left.append(Left(name, mark.line, json_path(path), message, lost))

    base: Path = ("spec", "strategy", "canary")
    steps: list[dict[str, Any]] = []
    translated: dict[str, TranslatedMetric] = {}
    raw_steps = canary.get("steps") or []
    if not isinstance(raw_steps, list):
        raise error((*base, "steps"), "steps is not a list")
    for index, step in enumerate(raw_steps):
        path: Path = (*base, "steps", index)
        if not isinstance(step, dict) or len(step) != 1:
            leave(path, "a step has exactly one key (setWeight, pause, analysis, ...)")
            continue
        ((kind, value),) = step.items()
        if (
            kind == "setWeight"
            and isinstance(value, int)
            and not isinstance(value, bool)
            and 0 <= value <= 100
        ):
            steps.append({"setWeight": value})
        elif kind == "pause":
            converted = _pause(value)
            if converted is None:
                leave(
                    (*path, "pause"),
                    f'pause {value!r} has no duration aicd reads (use 30, "30", 30s, 5m, 1h)',
                )
            else:
                steps.append({"pause": converted})
        elif kind == "analysis" and isinstance(value, dict):
            converted_step = _analysis(
                value, (*path, "analysis"), catalog, track_label, result, translated, leave
            )
            if converted_step is not None:
                steps.append({"analysis": converted_step})
        elif kind in UNSUPPORTED_STEPS:
            leave(
                (*path, kind),
                f"Argo Rollouts step {kind} is not supported by aicd: {UNSUPPORTED_STEPS[kind]}",
            )
        else:
            leave(
                (*path, kind),
                f"{kind}: {value!r} is not a step aicd reads (setWeight 0..100, pause, analysis)",
            )
    for key in canary:
        if key == "steps":
            continue
        if key in CHART_FIELDS:
            leave((*base, key), CHART_FIELDS[key], lost=False)
            continue
        leave((*base, key), BACKGROUND_ANALYSIS if key == "analysis" else "aicd has no equivalent")
        if key == "analysis" and isinstance(canary[key], dict) and canary[key].get("templates"):
            # Background analysis: its metrics are still worth having, for the steps the user adds.
            _analysis(
                canary[key], (*base, key), catalog, track_label, result, translated, leave, metrics_only=True
            )
    result.stage["strategy"] = {"canary": {"steps": steps}}
    result.metrics = list(translated.values())
    return result


def _pause(value: Any) -> str | dict[str, Any] | None:
    """aicd's form of an Argo pause: `{}` stays, a duration becomes `30s`/`5m`."""
    if value is None or value == {}:
        return {}
    duration = value.get("duration") if isinstance(value, dict) else value
    if isinstance(value, dict) and set(value) - {"duration"}:
        return None
    if duration is None or isinstance(duration, bool):
        return None
    try:
        seconds = parse_duration(duration)
    except ValueError:
        return None
    return format_duration(seconds) if seconds > 0 else None


def _analysis(
    value: dict[str, Any],
    path: Path,
    catalog: Catalog,
    track_label: str,
    result: Imported,
    translated: dict[str, TranslatedMetric],
    leave: Any,
    *,
    metrics_only: bool = False,
) -> dict[str, Any] | None:
    """The aicd analysis step for an Argo one (None when nothing of it carries over)."""
    for key in value:
        if key in UNSUPPORTED_ANALYSIS_FIELDS:
            leave(
                (*path, key),
                f"Argo Rollouts analysis field {key} is not supported by aicd: {UNSUPPORTED_ANALYSIS_FIELDS[key]}",
            )
        elif key not in (*_STEP_ANALYSIS_KEYS, "startingStep"):
            leave((*path, key), "aicd has no equivalent")
    if not value.get("templates"):
        leave(
            path,
            "an analysis without templates judges nothing in Argo; aicd's `analysis: {duration: 5m}` judges spec.analysis.metrics",
        )
        return None
    translation = translate_step(value, path, catalog, track_label)
    for finding_path, message in translation.findings:
        leave(finding_path, message)
    for problem in translation.errors:
        result.left.append(Left(problem.file, problem.line, problem.path, problem.message))
    names: list[str] = []
    for metric in translation.metrics:
        name = metric.metric["name"]
        known = translated.get(name)
        if known is not None and known.metric != metric.metric:
            leave(
                (*path, "templates"),
                f"metric {name!r} comes out differently from its use at an earlier step (other args); rename one in the template",
            )
            continue
        translated.setdefault(name, metric)
        names.append(name)
    if metrics_only:
        return None
    if not names:
        leave(path, "no metric of its templates carries over (see above); the step is left out")
        return None
    result.notes.extend(f"{json_path(path)}: {note}" for note in translation.notes)
    return {"duration": format_duration(translation.duration_s), "metrics": names}
