"""The structural schema of Argo CD's `Application` CRD (argoproj.io/v1alpha1), the part that matters to aicd, and
kube-apiserver's treatment of a custom resource against it: wrong types and missing required fields answer 422
Invalid with kube's field paths and wording, unknown fields are pruned (or refused with `fieldValidation=Strict`).

Written from Argo CD's API types (pkg/apis/application/v1alpha1/types.go): the Go json tags decide what is
required (no `omitempty`) and each field's type. Free-form parts of the real schema
(`x-kubernetes-preserve-unknown-fields`, e.g. `helm.valuesObject`) are `ANY` here; parts aicd never reads are
declared as objects that keep whatever they hold (`OPEN`), so the stand-in checks their type but not their insides.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Schema:
    type: str  # object | array | string | integer | boolean | any
    properties: Mapping[str, Schema] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    items: Schema | None = None
    additional: Schema | None = None  # map values (additionalProperties)
    open: bool = False  # an object whose unknown fields are kept (x-kubernetes-preserve-unknown-fields)
    date_time: bool = False


def obj(props: Mapping[str, Schema] | None = None, *, required: tuple[str, ...] = ()) -> Schema:
    return Schema("object", properties=dict(props or {}), required=required)


def arr(items: Schema) -> Schema:
    return Schema("array", items=items)


STR = Schema("string")
INT = Schema("integer")
BOOL = Schema("boolean")
TIME = Schema("string", date_time=True)
ANY = Schema("any")
OPEN = Schema("object", open=True)
STR_MAP = Schema("object", additional=STR)
STRS = arr(STR)

_HELM = obj(
    {
        "valueFiles": STRS,
        "values": STR,
        "valuesObject": ANY,
        "parameters": arr(obj({"name": STR, "value": STR, "forceString": BOOL})),
        "fileParameters": arr(obj({"name": STR, "path": STR})),
        "releaseName": STR,
        "passCredentials": BOOL,
        "ignoreMissingValueFiles": BOOL,
        "skipCrds": BOOL,
        "skipSchemaValidation": BOOL,
        "skipTests": BOOL,
        "version": STR,
        "namespace": STR,
        "kubeVersion": STR,
        "apiVersions": STRS,
    }
)
_KUSTOMIZE = obj(
    {
        "namePrefix": STR,
        "nameSuffix": STR,
        "images": STRS,  # "name=newName:newTag", as `kustomize edit set image` takes them
        "commonLabels": STR_MAP,
        "commonAnnotations": STR_MAP,
        "commonAnnotationsEnvsubst": BOOL,
        "labelWithoutSelector": BOOL,
        "forceCommonLabels": BOOL,
        "forceCommonAnnotations": BOOL,
        "version": STR,
        "namespace": STR,
        "replicas": arr(obj({"name": STR, "count": ANY}, required=("count", "name"))),
        "patches": arr(OPEN),
        "components": STRS,
        "kubeVersion": STR,
        "apiVersions": STRS,
    }
)
SOURCE = obj(
    {
        "repoURL": STR,
        "path": STR,
        "targetRevision": STR,
        "chart": STR,
        "ref": STR,
        "name": STR,
        "helm": _HELM,
        "kustomize": _KUSTOMIZE,
        "directory": obj({"recurse": BOOL, "exclude": STR, "include": STR, "jsonnet": OPEN}),
        "plugin": OPEN,
    },
    required=("repoURL",),
)
_DESTINATION = obj({"server": STR, "namespace": STR, "name": STR})
_INFO = arr(obj({"name": STR, "value": STR}, required=("name", "value")))
_BACKOFF = obj({"duration": STR, "factor": INT, "maxDuration": STR})
_RETRY = obj({"limit": INT, "backoff": _BACKOFF, "refresh": BOOL})
_INITIATOR = obj({"username": STR, "automated": BOOL})

SYNC_OPERATION = obj(
    {
        "revision": STR,
        "prune": BOOL,
        "dryRun": BOOL,
        "syncStrategy": obj({"apply": obj({"force": BOOL}), "hook": obj({"force": BOOL})}),
        "resources": arr(
            obj({"group": STR, "kind": STR, "name": STR, "namespace": STR}, required=("kind", "name"))
        ),
        "source": SOURCE,
        "manifests": STRS,
        "syncOptions": STRS,
        "sources": arr(SOURCE),
        # one per entry of spec.sources; `sourcePositions` exists only in Argo CD's own API (its sync request),
        # not in the CRD: the API server turns it into this full list
        "revisions": STRS,
        "autoHealAttemptsCount": INT,
    }
)
OPERATION = obj({"sync": SYNC_OPERATION, "initiatedBy": _INITIATOR, "info": _INFO, "retry": _RETRY})

_HEALTH = obj({"status": STR, "message": STR, "lastTransitionTime": TIME})
_RESOURCE_STATUS = obj(
    {
        "group": STR,
        "version": STR,
        "kind": STR,
        "namespace": STR,
        "name": STR,
        "status": STR,
        "health": _HEALTH,
        "hook": BOOL,
        "requiresPruning": BOOL,
        "syncWave": INT,
        "requiresDeletionConfirmation": BOOL,
    }
)
_SYNC_RESULT = obj(
    {
        "resources": arr(OPEN),
        "revision": STR,
        "revisions": STRS,
        "source": SOURCE,
        "sources": arr(SOURCE),
        "managedNamespaceMetadata": OPEN,
    },
    required=("revision",),
)
STATUS = obj(
    {
        "resources": arr(_RESOURCE_STATUS),
        "sync": obj(
            {
                "status": STR,
                "comparedTo": obj(
                    {
                        "source": SOURCE,
                        "sources": arr(SOURCE),
                        "destination": _DESTINATION,
                        "ignoreDifferences": arr(OPEN),
                    },
                    required=("destination",),
                ),
                "revision": STR,
                "revisions": STRS,
            },
            required=("status",),
        ),
        "health": _HEALTH,
        "history": arr(
            obj(
                {
                    "id": INT,
                    "revision": STR,
                    "revisions": STRS,
                    "source": SOURCE,
                    "sources": arr(SOURCE),
                    "deployedAt": TIME,
                    "deployStartedAt": TIME,
                    "initiatedBy": _INITIATOR,
                },
                required=("deployedAt", "id"),
            )
        ),
        "conditions": arr(
            obj({"type": STR, "message": STR, "lastTransitionTime": TIME}, required=("message", "type"))
        ),
        "reconciledAt": TIME,
        "observedAt": TIME,
        "operationState": obj(
            {
                "operation": OPERATION,
                "phase": STR,
                "message": STR,
                "syncResult": _SYNC_RESULT,
                "startedAt": TIME,
                "finishedAt": TIME,
                "retryCount": INT,
            },
            required=("operation", "phase", "startedAt"),
        ),
        "sourceType": STR,
        "sourceTypes": STRS,
        "summary": obj({"externalURLs": STRS, "images": STRS}),
        "resourceHealthSource": STR,
        "controllerNamespace": STR,
        "sourceHydrator": OPEN,
    }
)
SPEC = obj(
    {
        "source": SOURCE,
        "sources": arr(SOURCE),
        "destination": _DESTINATION,
        "project": STR,
        "syncPolicy": obj(
            {
                "automated": obj({"prune": BOOL, "selfHeal": BOOL, "allowEmpty": BOOL, "enabled": BOOL}),
                "syncOptions": STRS,
                "retry": _RETRY,
                "managedNamespaceMetadata": OPEN,
            }
        ),
        "ignoreDifferences": arr(OPEN),
        "info": _INFO,
        "revisionHistoryLimit": INT,
        "sourceHydrator": OPEN,
    },
    required=("destination", "project"),
)
# metadata is the API server's own business (ObjectMeta), kept as sent
APPLICATION = Schema(
    "object",
    properties={
        "apiVersion": STR,
        "kind": STR,
        "metadata": OPEN,
        "spec": SPEC,
        "status": STATUS,
        "operation": OPERATION,
    },
    required=("metadata", "spec"),
)


@dataclass
class Findings:
    invalid: list[str] = field(default_factory=list)  # kube's "field: Invalid value / Required value" causes
    unknown: list[str] = field(default_factory=list)  # paths of pruned fields


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _is_date_time(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in text


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def check(value: Any, schema: Schema, path: str, findings: Findings) -> Any:
    """`value` with unknown fields pruned; type errors and missing required fields go to `findings`."""
    if schema.type == "any":
        return value
    got = _json_type(value)
    if got != schema.type:
        findings.invalid.append(
            f'{path}: Invalid value: "{got}": {path} in body must be of type {schema.type}: "{got}"'
        )
        return value
    if schema.type == "string" and schema.date_time and not _is_date_time(value):
        findings.invalid.append(
            f'{path}: Invalid value: "{value}": {path} in body must be of type date-time: "{value}"'
        )
    if schema.type == "array":
        assert schema.items is not None
        return [check(item, schema.items, f"{path}[{i}]", findings) for i, item in enumerate(value)]
    if schema.type != "object":
        return value
    for key in schema.required:
        if key not in value:
            findings.invalid.append(f"{_child(path, key)}: Required value")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key in schema.properties:
            out[key] = check(item, schema.properties[key], _child(path, key), findings)
        elif schema.additional is not None:
            out[key] = check(item, schema.additional, _child(path, key), findings)
        elif schema.open:
            out[key] = item
        else:
            findings.unknown.append(_child(path, key))
    return out


def validate_application(app: Any) -> tuple[dict[str, Any], Findings]:
    """An Application as kube-apiserver would store it, and what it found wrong."""
    findings = Findings()
    pruned = check(app, APPLICATION, "", findings)
    return pruned if isinstance(pruned, dict) else {}, findings
