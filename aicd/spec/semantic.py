"""Checks beyond the schema's reach; each yields (JSON path as tuple, message)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from aicd.people import IDENTITY, SYSTEM_ACTOR, Person, PersonRef, resolve_listed
from aicd.promql import PromQLError, vector_matching
from aicd.redact import has_credentials, known_token, looks_secret
from aicd.spec.durations import parse_duration, parse_percent
from aicd.spec.model import WriteKeys
from aicd.spec.paths import repo_path_problem
from aicd.spec.placeholders import (
    ALLOWED_VARIABLES,
    placeholders_in,
    render,
    unknown_placeholders,
    untracked_selectors,
)
from aicd.spec.yamlsafe import Path
from aicd.steps import STEP_KINDS, SetFlagStep
from aicd.strategies import STRATEGY_KINDS
from aicd.targets import TARGET_KINDS
from aicd.verification import URL_KEYS, Verification
from aicd.yamledit import parse_path

Finding = tuple[Path, str]
Check = Callable[[dict[str, Any]], Iterator[Finding]]


def _stage_waves(stage: dict[str, Any]) -> tuple[str, list[list[str]]]:
    if "waves" in stage:
        return "waves", stage["waves"]
    return "targets", [stage.get("targets", [])]


def check_stage_has_targets(spec: dict[str, Any]) -> Iterator[Finding]:
    for index, stage in enumerate(spec.get("stages", [])):
        if ("targets" in stage) == ("waves" in stage):
            yield ("spec", "stages", index), "a stage has either `targets` or `waves`, exactly one of them"


def check_stage_targets_known(spec: dict[str, Any]) -> Iterator[Finding]:
    known = set(spec.get("targets", {}))
    for index, stage in enumerate(spec.get("stages", [])):
        key, waves = _stage_waves(stage)
        for wave_index, wave in enumerate(waves):
            for target_index, name in enumerate(wave):
                if name not in known:
                    path: Path = ("spec", "stages", index, key)
                    path += (wave_index, target_index) if key == "waves" else (target_index,)
                    yield path, f"unknown target {name!r}; targets are {sorted(known)}"


def check_target_once_per_stage(spec: dict[str, Any]) -> Iterator[Finding]:
    for index, stage in enumerate(spec.get("stages", [])):
        key, waves = _stage_waves(stage)
        seen: dict[str, int] = {}
        for wave_index, wave in enumerate(waves):
            for target_index, name in enumerate(wave):
                path: Path = ("spec", "stages", index, key)
                path += (wave_index, target_index) if key == "waves" else (target_index,)
                if name in seen:
                    where = (
                        "twice in one wave"
                        if seen[name] == wave_index
                        else f"in waves {seen[name]} and {wave_index}"
                    )
                    yield path, f"target {name!r} appears {where} of stage {stage.get('name')!r}"
                else:
                    seen[name] = wave_index


def check_unique_names(spec: dict[str, Any]) -> Iterator[Finding]:
    lists = {
        ("spec", "stages"): spec.get("stages", []),
        ("spec", "test"): spec.get("test", []),
        ("spec", "provision"): spec.get("provision", []),
        ("spec", "analysis", "metrics"): spec.get("analysis", {}).get("metrics", []),
    }
    for base, items in lists.items():
        seen: set[str] = set()
        for index, item in enumerate(items):
            name = item.get("name")
            if name in seen:
                yield (*base, index, "name"), f"duplicate name {name!r}"
            seen.add(name)


def check_steps(spec: dict[str, Any]) -> Iterator[Finding]:
    """Each strategy kind checks a stage's strategy (aicd.strategies), each step kind its steps of the stage
    (aicd.steps); a strategy that cannot run on a fleet has none. A canary need not end at `setWeight: 100`:
    as in Argo Rollouts, the rollout promotes after its last step (an explicit `setWeight: 100` is allowed)."""
    targets = spec.get("targets", {})
    for index, stage in enumerate(spec.get("stages", [])):
        for strategy_name, value in (stage.get("strategy") or {}).items():
            strategy = STRATEGY_KINDS[strategy_name]
            path: Path = ("spec", "stages", index, "strategy", strategy_name)
            by_kind: dict[str, list[tuple[Path, Any]]] = {}
            for key, steps in strategy.step_lists(value or {}):
                for step_index, step in enumerate(steps):
                    for name, step_value in step.items():
                        by_kind.setdefault(name, []).append(((*path, key, step_index, name), step_value))
            for name, occurrences in by_kind.items():
                yield from STEP_KINDS[name].checks(occurrences, spec)
            yield from strategy.checks(path, value or {}, spec)
            if strategy.fleets:
                continue
            for wave in _stage_waves(stage)[1]:
                for name in wave:
                    kind = str((targets.get(name) or {}).get("kind"))
                    if kind in TARGET_KINDS and TARGET_KINDS[kind].fleet:
                        yield (
                            path,
                            f"target {name!r} is a fleet (rolled out in batches); {strategy_name} needs single targets",
                        )


def check_flag_targets(spec: dict[str, Any]) -> Iterator[Finding]:
    """A stage with setFlag steps changes each target's flag file: every target has one (`flags`), and none
    is a fleet (its sites are promoted whole, batch by batch)."""
    targets = spec.get("targets", {})
    for index, stage in enumerate(spec.get("stages", [])):
        steps = stage.get("strategy", {}).get("canary", {}).get("steps") or []
        flag_steps = [
            i for i, step in enumerate(steps) if isinstance(step, dict) and SetFlagStep.name in step
        ]
        if not flag_steps:
            continue
        path: Path = ("spec", "stages", index, "strategy", "canary", "steps", flag_steps[0], SetFlagStep.name)
        for wave in _stage_waves(stage)[1]:
            for name in wave:
                target = targets.get(name)
                if not isinstance(target, dict) or target.get("kind") not in TARGET_KINDS:
                    continue  # reported elsewhere
                if TARGET_KINDS[target["kind"]].fleet:
                    yield (
                        path,
                        f"target {name!r} is a fleet (promoted site by site); setFlag needs a single target",
                    )
                elif not target.get("flags"):
                    yield path, f"target {name!r} has no `flags` file for setFlag to change"


def check_stage_verify(spec: dict[str, Any]) -> Iterator[Finding]:
    """A stage's verification runs have unique names (they name the runs in status and logs); a run that
    names a target's URL ({{ url }}, {{ preview.url }}, {{ canary.url }}) has one on every target of its stage
    (a `local` target's come from the embedded reconciler)."""
    targets = spec.get("targets", {})
    for index, stage in enumerate(spec.get("stages", [])):
        seen: set[str] = set()
        runs: list[tuple[Path, Any]] = []
        for run_index, run in enumerate(stage.get("verify") or []):
            name = str(run.get("name")) if isinstance(run, dict) else ""
            if name in seen:
                yield (
                    ("spec", "stages", index, "verify", run_index, "name"),
                    f"duplicate verify name {name!r}",
                )
            seen.add(name)
            runs.append((("spec", "stages", index, "verify", run_index), run))
        for strategy_name, value in (stage.get("strategy") or {}).items():
            for key, steps in STRATEGY_KINDS[strategy_name].step_lists(value or {}):
                for step_index, step in enumerate(steps):
                    if isinstance(step, dict) and isinstance(step.get("verify"), dict):
                        where: Path = ("spec", "stages", index, "strategy", strategy_name, key, step_index)
                        runs.append(((*where, "verify"), step["verify"]))
        names = [name for wave in _stage_waves(stage)[1] for name in wave]
        for run_path, run in runs:
            used = Verification.parse(run).variables_used() & set(URL_KEYS)
            for variable in sorted(used):
                for name in names:
                    target = targets.get(name)
                    if (
                        isinstance(target, dict)
                        and target.get("kind") != "local"
                        and URL_KEYS[variable] not in target
                    ):
                        yield (
                            run_path,
                            f"{{{{ {variable} }}}} needs `{URL_KEYS[variable]}` on target {name!r}",
                        )


def check_metric_thresholds(spec: dict[str, Any]) -> Iterator[Finding]:
    for index, metric in enumerate(spec.get("analysis", {}).get("metrics", [])):
        path = ("spec", "analysis", "metrics", index)
        # Every query of a metric reads one track at a time: a `total` over the whole service makes a canary's
        # errors look rare, and a query that reads both tracks compares the service with itself.
        for key in ("query", "total"):
            if key in metric:
                yield from _one_track_per_selector((*path, key), str(metric[key]))
        if metric.get("min") is not None and metric.get("max") is not None and metric["min"] > metric["max"]:
            yield (*path, "min"), f"min {metric['min']} is greater than max {metric['max']}"
        if "total" in metric and metric.get("kind") != "count":
            yield (*path, "total"), "total applies to count metrics only"
        if "absoluteTolerance" in metric and (metric.get("kind") != "count" or "total" not in metric):
            yield (
                (*path, "absoluteTolerance"),
                "absoluteTolerance applies to count metrics with a total (it is a difference of event ratios)",
            )
        if "intervalCorrelation" in metric and metric.get("kind") != "continuous":
            yield (
                (*path, "intervalCorrelation"),
                "intervalCorrelation applies to continuous metrics (count metrics are judged per event)",
            )
        if "perPod" in metric:
            if metric.get("kind") != "continuous":
                yield (
                    (*path, "perPod"),
                    "perPod applies to continuous metrics (count metrics are judged per event)",
                )
            pod_query = (metric["perPod"] or {}).get("query")
            # The baseline's pods: a query that reads the canary's pods too holds the canary up to itself.
            if pod_query is not None:
                yield from _one_track_per_selector((*path, "perPod", "query"), str(pod_query))


def _one_track_per_selector(path: Path, query: str) -> Iterator[Finding]:
    """A metric's PromQL reads canary and baseline apart: {{ track }} in every series selector, unless the
    query joins on labels (the track may come from what it joins with, as kube_pod_labels)."""
    if "track" not in placeholders_in(query):
        yield path, f"{path[-1]} must contain {{{{ track }}}} so canary and baseline can be told apart"
        return
    try:
        untracked = untracked_selectors(query)
    except PromQLError as error:
        yield path, f"cannot read the {path[-1]}: {error}"
        return
    if untracked and not vector_matching(query):  # a join (`* on(pod) group_left ...`) may choose the track
        yield (
            path,
            f"{', '.join(untracked)} {'does' if len(untracked) == 1 else 'do'} not match on {{{{ track }}}}, so"
            " canary and baseline read the same series there (a ratio over the whole service makes a canary's"
            ' errors look rare): add track="{{ track }}" (your track label) to every series selector',
        )


def check_analysis_ranges(spec: dict[str, Any]) -> Iterator[Finding]:
    """Percentages the schema lets through but the judge cannot use."""
    analysis = spec.get("analysis", {})
    try:
        if "noDataLimit" in analysis and parse_percent(analysis["noDataLimit"]) > 1.0:
            yield ("spec", "analysis", "noDataLimit"), f"noDataLimit {analysis['noDataLimit']} is above 100%"
    except ValueError:
        pass  # reported by the schema
    for index, metric in enumerate(analysis.get("metrics", [])):
        try:
            if parse_percent(metric.get("absoluteTolerance", "0%")) >= 1.0:
                yield (
                    ("spec", "analysis", "metrics", index, "absoluteTolerance"),
                    f"absoluteTolerance {metric['absoluteTolerance']} must be below 100%",
                )
            tolerance = parse_percent(metric.get("tolerance", "0%"))
        except ValueError:
            continue
        if tolerance >= 1.0 and metric.get("direction", "increase") != "increase":
            yield (
                ("spec", "analysis", "metrics", index, "tolerance"),
                f"tolerance {metric['tolerance']} must be below 100% when decreases are bad"
                f" (direction {metric.get('direction')})",
            )


def check_prometheus_tls(spec: dict[str, Any]) -> Iterator[Finding]:
    """caCert and insecure contradict each other, and mean nothing without TLS."""
    prometheus = spec.get("analysis", {}).get("prometheus", {})
    path = ("spec", "analysis", "prometheus")
    if prometheus.get("insecure") and "caCert" in prometheus:
        yield (
            (*path, "insecure"),
            "insecure: true turns certificate checks off; with caCert they are on: choose one",
        )
    url = str(prometheus.get("url", ""))
    if url.startswith("http://"):
        for key in ("caCert", "insecure"):
            if key in prometheus:
                yield (*path, key), f"{key} applies to https:// URLs; the url is {url}"


def _stage_steps(stage: Any) -> Iterator[tuple[str, str, int, Any]]:
    """(strategy kind, list key, index, step) of every step of the stage's strategy."""
    strategy = stage.get("strategy") if isinstance(stage, dict) else None
    if not isinstance(strategy, dict):
        return
    for name, value in strategy.items():
        if name not in STRATEGY_KINDS or not isinstance(value or {}, dict):
            continue  # reported by the schema
        for key, steps in STRATEGY_KINDS[name].step_lists(value or {}):
            for step_index, step in enumerate(steps):
                yield name, key, step_index, step


def check_analysis_steps(spec: dict[str, Any]) -> Iterator[Finding]:
    """maxDuration goes with onInconclusive extend and is at least the duration; the warm-up leaves time
    to judge."""
    analysis = spec.get("analysis") or {}
    warmup = analysis.get("warmupIntervals", 0)
    try:
        interval = parse_duration(analysis["interval"]) if "interval" in analysis else 30.0
    except ValueError:
        return  # reported by the schema
    for index, stage in enumerate(spec.get("stages", [])):
        for kind, key, step_index, step in _stage_steps(stage):
            if not isinstance(step, dict) or not isinstance(step.get("analysis"), dict):
                continue
            raw = step["analysis"]
            path = ("spec", "stages", index, "strategy", kind, key, step_index, "analysis")
            try:
                duration = parse_duration(raw["duration"]) if "duration" in raw else 300.0
                longest = parse_duration(raw["maxDuration"]) if "maxDuration" in raw else None
            except ValueError:
                continue  # reported by the schema
            if longest is not None and raw.get("onInconclusive") != "extend":
                yield (*path, "maxDuration"), "maxDuration applies with onInconclusive: extend"
            elif longest is not None and longest < duration:
                yield (
                    (*path, "maxDuration"),
                    f"maxDuration {raw['maxDuration']} is shorter than the duration {duration:g}s",
                )
            if isinstance(warmup, int) and warmup > 0 and warmup * interval >= duration:
                yield (
                    (*path, "duration"),
                    f"the warm-up (warmupIntervals {warmup} x interval {interval:g}s) leaves nothing of this"
                    f" {duration:g}s analysis to judge",
                )


def check_placeholders(spec: dict[str, Any]) -> Iterator[Finding]:
    def walk(value: Any, path: Path) -> Iterator[Finding]:
        if isinstance(value, str):
            for name in unknown_placeholders(value):
                yield path, f"placeholder {{{{ {name} }}}} is not one of {sorted(ALLOWED_VARIABLES)}"
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, (*path, key))
        elif isinstance(value, list):
            for item_index, item in enumerate(value):
                yield from walk(item, (*path, item_index))

    yield from walk(spec, ("spec",))


def check_artifact_placeholders(spec: dict[str, Any]) -> Iterator[Finding]:
    """The artifact is named before anything else is known: only the revision can go into it."""
    artifact = spec.get("build", {}).get("artifact", "")
    for name in placeholders_in(artifact):
        if name in ALLOWED_VARIABLES and name not in ("revision", "revision.short"):
            yield (
                ("spec", "build", "artifact"),
                (
                    f"placeholder {{{{ {name} }}}} has no value when the artifact is named;"
                    " use {{ revision }} or {{ revision.short }}"
                ),
            )


def _people(spec: dict[str, Any]) -> list[Person]:
    return [Person(name, **identities) for name, identities in spec.get("people", {}).items()]


def check_approvals(spec: dict[str, Any]) -> Iterator[Finding]:
    """Enough distinct people to approve: entries naming one person (their name and an identity of
    theirs) count once (aicd.people)."""
    people = _people(spec)
    for index, stage in enumerate(spec.get("stages", [])):
        approval = stage.get("approval")
        if approval is None:
            continue
        approvers = approval.get("approvers", [])
        path = ("spec", "stages", index, "approval")
        named: dict[PersonRef, list[str]] = {}  # each person listed, with the entries naming them
        for entry in dict.fromkeys(approvers):
            named.setdefault(resolve_listed(people, entry), []).append(entry)
        if not approvers:
            yield (*path, "approvers"), "approval with no approvers; list who may approve"
        elif len(named) < approval.get("minApprovals", 1):
            same = [
                f"{' and '.join(entries)} are one person, {person}"
                for person, entries in named.items()
                if len(entries) > 1
            ]
            yield (
                (*path, "minApprovals"),
                f"minApprovals {approval.get('minApprovals')} exceeds the {len(named)} distinct people among"
                f" the approvers{' (' + '; '.join(same) + ')' if same else ''}",
            )


def check_people(spec: dict[str, Any]) -> Iterator[Finding]:
    """Who is who stays unambiguous: an identity (or a person's name) belongs to one person, and every
    approver entry is a person or could be an identity (a display name with blanks can never act)."""
    owners: dict[str, tuple[str, str]] = {}  # identity -> (person, channel)
    for name, identities in spec.get("people", {}).items():
        for channel, identity in identities.items():
            owner = owners.get(identity)
            if owner is not None and owner[0] != name:
                yield (
                    ("spec", "people", name, channel),
                    f"identity {identity!r} is already {owner[0]}'s {owner[1]} identity; an identity belongs to"
                    " one person",
                )
            else:
                owners.setdefault(identity, (name, channel))
    for name in spec.get("people", {}):
        owner = owners.get(name)
        if owner is not None and owner[0] != name:
            yield (
                ("spec", "people", name),
                f"person {name!r} is also {owner[0]}'s {owner[1]} identity; an approver entry {name!r} would be"
                " either of them",
            )
    for index, stage in enumerate(spec.get("stages", [])):
        for entry_index, entry in enumerate((stage.get("approval") or {}).get("approvers", [])):
            if entry not in spec.get("people", {}) and not IDENTITY.fullmatch(entry):
                yield (
                    ("spec", "stages", index, "approval", "approvers", entry_index),
                    f"approver {entry!r} is neither a person of spec.people nor an identity (a Slack user ID,"
                    " a dashboard sign-in or a CLI name: no blanks or control characters)",
                )


def _is_system_actor(identity: object) -> bool:
    return isinstance(identity, str) and identity.strip().casefold() == SYSTEM_ACTOR


_SYSTEM_ACTOR_WHY = (
    f"would read as aicd itself ({SYSTEM_ACTOR!r}, any case, is the identity of aicd's own actions and of the"
    " Aicd-Actor trailer of its commits); choose another"
)


def check_system_actor(spec: dict[str, Any]) -> Iterator[Finding]:
    """No person, identity or listed approver, overrider or break-glass entry is aicd itself."""
    for name, identities in spec.get("people", {}).items():
        if _is_system_actor(name):
            yield ("spec", "people", name), f"person {name!r} {_SYSTEM_ACTOR_WHY}"
        for channel, identity in identities.items():
            if _is_system_actor(identity):
                yield (
                    ("spec", "people", name, channel),
                    f"{channel} identity {identity!r} {_SYSTEM_ACTOR_WHY}",
                )
    lists: list[tuple[str, Path, list[Any]]] = [
        (
            "approver",
            ("spec", "stages", index, "approval", "approvers"),
            (stage.get("approval") or {}).get("approvers", []),
        )
        for index, stage in enumerate(spec.get("stages", []))
    ]
    lists.append(
        ("overrider", ("spec", "policy", "overriders"), (spec.get("policy") or {}).get("overriders", []))
    )
    lists.append(
        (
            "break-glass entry",
            ("spec", "schedule", "breakGlass"),
            (spec.get("schedule") or {}).get("breakGlass", []),
        )
    )
    for what, path, entries in lists:
        for index, entry in enumerate(entries):
            if _is_system_actor(entry):
                yield (*path, index), f"{what} {entry!r} {_SYSTEM_ACTOR_WHY}"


def check_targets(spec: dict[str, Any]) -> Iterator[Finding]:
    """Each target kind checks its targets (aicd.targets); every target's path stays inside the GitOps
    repository (the run refuses such paths too, but only after the build)."""
    for name, target in spec.get("targets", {}).items():
        path: Path = ("spec", "targets", name)
        yield from TARGET_KINDS[target["kind"]].checks(target, path)
        for key in ("path", "flags"):
            if isinstance(target.get(key), str) and (problem := repo_path_problem(target[key])):
                yield (*path, key), f"{key} {target[key]!r} {problem}"


def check_target_files(spec: dict[str, Any]) -> Iterator[Finding]:
    """Each target writes files of its own: two targets writing one file (its values or its flags) take turns
    overwriting each other's canary, and a delivery refuses the second write or a rollback of one undoes the
    other. Compared as the plan renders them (`{{ target }}` is each target's own name)."""
    owners: dict[str, tuple[str, str]] = {}
    for name, target in spec.get("targets", {}).items():
        for key in ("path", "flags"):
            text = target.get(key)
            if not isinstance(text, str):
                continue
            file = render(text, {"target": name}, partial=True)
            if file in owners:
                other, other_key = owners[file]
                yield (
                    ("spec", "targets", name, key),
                    f"{file} is also target {other}'s {_target_file(other_key)}: each target needs files of its"
                    " own (one's steps would overwrite the other's, and a rollback of one would undo both)",
                )
            else:
                owners[file] = (name, key)


def _target_file(key: str) -> str:
    return "values file (path)" if key == "path" else "flags file"


def _commands(spec: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any]]]:
    if "build" in spec:
        yield ("spec", "build"), spec["build"]
    for key in ("test", "provision"):
        for index, command in enumerate(spec.get(key, [])):
            yield ("spec", key, index), command


def check_command_env(spec: dict[str, Any]) -> Iterator[Finding]:
    """`env` and `secretEnv` names: AICD_* is aicd's own, and a name comes from one of the two."""
    for base, command in _commands(spec):
        for name in command.get("env", {}):
            if name.upper().startswith("AICD_"):
                yield (*base, "env", name), f"{name} is reserved: aicd sets the AICD_* variables itself"
        literal = set(command.get("env", {}))
        for index, name in enumerate(command.get("secretEnv", [])):
            if name.upper().startswith("AICD_"):
                yield (
                    (*base, "secretEnv", index),
                    f"{name} is reserved: aicd sets the AICD_* variables itself",
                )
            elif name in literal:
                yield (*base, "secretEnv", index), f"{name} is in both env and secretEnv; keep one"


REPO_URL_PATHS = (("spec", "source", "repo"), ("spec", "gitops", "repo"))


def check_url_credentials(spec: dict[str, Any]) -> Iterator[Finding]:
    """A password or token in any URL of the spec (a repository, Prometheus, a webhook, a verification) would
    travel in every workflow's input and history."""
    for path, text in _strings(spec, ("spec",)):
        if not has_credentials(text):
            continue
        if path in REPO_URL_PATHS:
            yield (
                path,
                "the URL holds a password or token, which would be stored in workflow history; give the"
                " worker a Git credential helper, ~/.git-credentials or an SSH key instead",
            )
        else:
            yield (
                path,
                "the URL holds a password or token, which would be stored in workflow history; keep it on"
                " the worker and name it instead (Prometheus' `auth`, a verification's secret headers)",
            )


def check_literal_secrets(spec: dict[str, Any]) -> Iterator[Finding]:
    """A token written into the spec (a command's argument or `env` value, say), or a literal credential
    header (`Authorization`, `X-Api-Key`), would travel in every workflow's input and history; secrets are
    named instead and read on the worker."""
    for path, text in _strings(spec, ("spec",)):
        if len(path) > 2 and path[-2] == "headers" and looks_secret(str(path[-1])):
            yield (
                path,
                f"a literal {path[-1]} header would be stored in workflow history; name the secret instead"
                " (Prometheus' `auth`, a verification's `secretHeaders`)",
            )
        elif not has_credentials(text) and (kind := known_token(text)):  # else check_url_credentials says it
            yield (
                path,
                f"holds {kind}, which would be stored in workflow history; give it to the command by name"
                " (`secretEnv`, read on the worker) instead",
            )
        elif (
            not has_credentials(text)
            and len(path) > 2
            and path[-2] == "env"
            and _names_a_secret(str(path[-1]))
            and text.strip()
        ):
            yield (
                path,
                f"a literal value for {path[-1]} would be stored in workflow history; give it to the command"
                " by name (`secretEnv`, read on the worker) instead",
            )


# Words of a command variable's name that leave no doubt its value is a secret (narrower than what the
# redaction guesses from: `CACHE_KEY_PREFIX` or `AUTHOR` are no reason to refuse a spec).
_SECRET_VARIABLE_WORDS = (
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "SECRET",
    "TOKEN",
    "API_KEY",
    "APIKEY",
    "PRIVATE_KEY",
)


def _names_a_secret(name: str) -> bool:
    return any(word in name.upper() for word in _SECRET_VARIABLE_WORDS)


def _strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


DURATION_KEYS = (
    "timeout",
    "interval",
    "duration",
    "maxDuration",
    "progressDeadline",
    "pollInterval",
    "pause",
    "recheck",
    "maxDelay",
    "waitingTooLong",
)


def check_durations(spec: dict[str, Any]) -> Iterator[Finding]:
    """The schema checks the pattern; this catches what parses but makes no sense (`pause: 0s`, or Argo's
    integer seconds `pause: {duration: 0}`, would not wait at all)."""

    def walk(value: Any, path: Path) -> Iterator[Finding]:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in DURATION_KEYS and isinstance(item, str | int) and not isinstance(item, bool):
                    try:
                        if parse_duration(item) <= 0:
                            yield (*path, key), f"duration {item!r} must be greater than zero"
                    except ValueError:
                        pass  # reported by the schema
                else:
                    yield from walk(item, (*path, key))
        elif isinstance(value, list):
            for item_index, item in enumerate(value):
                yield from walk(item, (*path, item_index))

    yield from walk(spec, ("spec",))


WRITE_DEFAULTS = {
    "image": WriteKeys.image,
    "weight": WriteKeys.weight,
    "canaryImage": WriteKeys.canary_image,
    "preview": WriteKeys.preview,
    "previous": WriteKeys.previous,
}


def check_write_paths(spec: dict[str, Any]) -> Iterator[Finding]:
    """Write paths that each name their own value, and canary steps the target's file can express."""
    write = spec.get("write") or {}

    def where(key: str) -> Path:
        return (
            ("spec", "write", key) if key in write else (("spec", "write") if "write" in spec else ("spec",))
        )

    paths = {}
    for key, default in WRITE_DEFAULTS.items():
        text = write.get(key, default)
        if text is None:
            continue
        try:
            paths[key] = parse_path(text)
        except ValueError:
            continue  # reported by the schema

    def label(key: str) -> str:
        return f"{key} ({paths[key].text}{'' if key in write else ', the default'})"

    keys = list(paths)
    for position, first in enumerate(keys):
        for second in keys[position + 1 :]:
            a, b = paths[first].normalized(), paths[second].normalized()
            at = second if second in write or first not in write else first
            if a == b:
                yield where(at), f"{label(first)} and {label(second)} write the same place"
            elif a[: len(b)] == b or b[: len(a)] == a:
                outer, inner = (first, second) if len(a) < len(b) else (second, first)
                yield (
                    where(at),
                    (
                        f"{label(inner)} lies inside {label(outer)}: writing one would replace the other;"
                        " each write path must name its own value"
                    ),
                )
    nulls = [key for key in ("weight", "canaryImage") if key in write and write[key] is None]
    if len(nulls) == 1:
        other = "canaryImage" if nulls[0] == "weight" else "weight"
        yield (
            where(nulls[0]),
            f"{nulls[0]}: null needs {other}: null too (a file has a canary or it has none)",
        )
    if "weight" in nulls:
        for index, stage in enumerate(spec.get("stages", [])):
            for step_index, step in enumerate(stage.get("strategy", {}).get("canary", {}).get("steps", [])):
                weight = step.get("setWeight")
                if weight is not None and 0 < weight < 100:
                    yield (
                        ("spec", "stages", index, "strategy", "canary", "steps", step_index, "setWeight"),
                        f"setWeight {weight} needs a canary weight in the target's file, but spec.write.weight"
                        " is null; without a canary use setWeight 100 (pauses and analysis still apply)",
                    )


def check_schedule(spec: dict[str, Any]) -> Iterator[Finding]:
    """Time zones that exist, hours that end after they start, freezes that end after they begin."""
    from aicd.governance.calendar import moment, zone
    from aicd.governance.model import parse_hours

    schedule = spec.get("schedule")
    if not isinstance(schedule, dict):
        return
    tz = schedule.get("timezone", "UTC")
    try:
        zone(str(tz))
    except ValueError as error:
        yield ("spec", "schedule", "timezone"), str(error)
        tz = "UTC"
    for index, window in enumerate(schedule.get("windows", [])):
        path: Path = ("spec", "schedule", "windows", index)
        try:
            parse_hours(window.get("hours", "00:00-24:00"))
        except ValueError as error:
            yield (*path, "hours"), str(error)
        if "timezone" in window:
            try:
                zone(str(window["timezone"]))
            except ValueError as error:
                yield (*path, "timezone"), str(error)
    for index, freeze in enumerate(schedule.get("freezes", [])):
        path = ("spec", "schedule", "freezes", index)
        try:
            start = moment(str(freeze["from"]), str(tz))
            if "until" in freeze and moment(str(freeze["until"]), str(tz)) <= start:
                yield (*path, "until"), "until must come after from"
        except (ValueError, KeyError) as error:
            yield path, str(error)
    for index, day in enumerate(schedule.get("holidays", [])):
        try:
            moment(str(day), str(tz))
        except ValueError as error:
            yield ("spec", "schedule", "holidays", index), str(error)


SEMANTIC_CHECKS: tuple[Check, ...] = (
    check_stage_has_targets,
    check_stage_targets_known,
    check_target_once_per_stage,
    check_unique_names,
    check_steps,
    check_metric_thresholds,
    check_analysis_ranges,
    check_prometheus_tls,
    check_analysis_steps,
    check_flag_targets,
    check_stage_verify,
    check_placeholders,
    check_artifact_placeholders,
    check_approvals,
    check_people,
    check_system_actor,
    check_targets,
    check_target_files,
    check_command_env,
    check_url_credentials,
    check_literal_secrets,
    check_durations,
    check_write_paths,
    check_schedule,
)
